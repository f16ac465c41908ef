"""Plots (matplotlib, no display needed): returned as PNG bytes so callers can store them anywhere."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

CURVES = (
    ("rec_nll", "reconstruction NLL / doc"),
    ("kl", "KL / doc (nats)"),
    ("beta", "beta"),
    ("ppl", "val perplexity"),
)


def training_curves_png(history: Sequence[dict[str, Any]]) -> bytes:
    """Four panels over training steps: reconstruction, KL, beta and validation perplexity."""
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    steps = [h["step"] for h in history]
    for ax, (key, title) in zip(axes, CURVES, strict=True):
        values = [h.get(key) for h in history]
        ax.plot(steps, values, marker="o", markersize=3)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


# -- run report figures (vaelm.report) -----------------------------------------------------------------


def funnel_png(stages: Sequence[tuple[str, int]], dropped: dict[str, int]) -> bytes:
    """Two panels: documents left after each stage, and documents dropped per reason."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.4))
    names = [name for name, _ in stages]
    left.barh(names[::-1], [n for _, n in stages][::-1], color="#4c72b0")
    left.set_title("documents left after each stage")
    for y, (_, n) in enumerate(reversed(stages)):
        left.text(n, y, f" {n:,}", va="center", fontsize=8)
    reasons = list(dropped.items())[:12]
    right.barh([r for r, _ in reasons][::-1] or ["(none)"], [n for _, n in reasons][::-1] or [0], color="#dd8452")
    right.set_title("documents dropped, per reason")
    for ax in (left, right):
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.18)
    fig.tight_layout()
    return _png(fig)


def scatter_png(xy: Any, groups: Sequence[str], *, title: str, xlabel: str, ylabel: str) -> bytes:
    """A 2-D scatter (xy: (N, 2) array), one colour per group name, with a legend."""
    fig, ax = plt.subplots(figsize=(7, 5.5))
    for name in sorted(set(groups)):
        mask = np.array([g == name for g in groups], dtype=bool)
        ax.scatter(xy[mask, 0], xy[mask, 1], s=6, alpha=0.55, label=f"{name} ({int(mask.sum())})")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(markerscale=3, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def histogram_png(values: Any, *, title: str, xlabel: str, marker: float | None = None) -> bytes:
    """A histogram of `values`, with an optional dashed vertical line at `marker` (e.g. a cut-off)."""
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.hist(values, bins=50, color="#55a868")
    if marker is not None:
        ax.axvline(marker, color="#c44e52", linestyle="--", label=f"{marker:.2f}")
        ax.legend(fontsize=9)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("documents")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _png(fig)


def confusion_png(matrix: Sequence[Sequence[int]], labels: Sequence[str]) -> bytes:
    """A confusion matrix heat map: rows are true labels, columns predicted, counts in the cells."""
    fig, ax = plt.subplots(figsize=(0.9 * len(labels) + 2.2, 0.8 * len(labels) + 1.6))
    ax.imshow(matrix, cmap="Blues", vmin=0)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, n in enumerate(row):
            ax.text(j, i, str(n), ha="center", va="center", color="white" if n > top / 2 else "black")
    fig.tight_layout()
    return _png(fig)
