"""Plots (matplotlib, no display needed): returned as PNG bytes so callers can store them anywhere."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import matplotlib

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
