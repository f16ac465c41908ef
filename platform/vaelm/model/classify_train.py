"""Training and evaluating a LatentClassifier: plain PyTorch, one process, no I/O.

With a frozen encoder the features mu(x) are computed once and only the head is trained on them (fast,
many epochs); with fine-tuning every epoch runs the encoder, which gets a tenth of the head's rate.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vaelm.model.classifier import LatentClassifier
from vaelm.model.infer import length_batches, pad_rows


@dataclass(frozen=True, kw_only=True)
class FitParams:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0


def subsample(n: int, *, fraction: float, max_labels: int | None, seed: int) -> list[int]:
    """A seeded random `fraction` of range(n) (at least 2 rows), capped at max_labels, in sorted order."""
    keep = max(2, round(n * fraction))
    if max_labels is not None:
        keep = min(keep, max_labels)
    return sorted(random.Random(seed).sample(range(n), min(keep, n)))


@torch.no_grad()
def features(clf: LatentClassifier, rows: Sequence[Sequence[int]], *, batch_size: int) -> Tensor:
    """mu(x) of every row (N, Z), in row order, encoder in eval mode."""
    was = clf.training
    clf.eval()
    out = torch.zeros((len(rows), clf.encoder.cfg.latent_dim))
    for idx in length_batches([len(r) for r in rows], batch_size):
        tokens, lengths = pad_rows([rows[i] for i in idx])
        out[idx] = clf.encoder(tokens, lengths)[0].float()
    clf.train(was)
    return out


def fit(
    clf: LatentClassifier, rows: Sequence[Sequence[int]], labels: Sequence[int], *, params: FitParams
) -> list[float]:
    """Train `clf` on (rows, labels); returns the mean training loss of each epoch."""
    y = torch.tensor(list(labels), dtype=torch.long)  # (N,)
    gen = torch.Generator().manual_seed(params.seed)
    groups = [{"params": clf.head.parameters(), "lr": params.lr}]
    if not clf.freeze_encoder:
        groups.append({"params": clf.encoder.parameters(), "lr": params.lr / 10})
    opt = torch.optim.AdamW(groups, weight_decay=params.weight_decay)
    feats = features(clf, rows, batch_size=256) if clf.freeze_encoder else None
    clf.train()
    history = []
    for _ in range(params.epochs):
        order = torch.randperm(len(rows), generator=gen).tolist()
        losses = []
        for start in range(0, len(order), params.batch_size):
            idx = order[start : start + params.batch_size]
            logits = clf.head(feats[idx]) if feats is not None else _forward(clf, rows, idx)  # (b, C)
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        history.append(sum(losses) / max(len(losses), 1))
    clf.eval()
    return history


def _forward(clf: LatentClassifier, rows: Sequence[Sequence[int]], idx: list[int]) -> Tensor:
    tokens, lengths = pad_rows([rows[i] for i in idx])  # (b, T), (b,)
    return clf(tokens, lengths)


@torch.no_grad()
def predict_proba(clf: LatentClassifier, rows: Sequence[Sequence[int]], *, batch_size: int = 256) -> Tensor:
    """Class probabilities (N, C) in row order."""
    out = torch.zeros((len(rows), clf.num_labels))
    for idx in length_batches([len(r) for r in rows], batch_size):
        tokens, lengths = pad_rows([rows[i] for i in idx])
        out[idx] = clf.predict_proba(tokens, lengths)
    return out


def accuracy_macro_f1(pred: Sequence[int], gold: Sequence[int], num_labels: int) -> tuple[float, float]:
    """Accuracy and macro-F1 (mean over classes of F1; a class never predicted nor present scores 0)."""
    if not gold:
        return 0.0, 0.0
    acc = sum(p == g for p, g in zip(pred, gold, strict=True)) / len(gold)
    f1s = []
    for c in range(num_labels):
        tp = sum(p == c and g == c for p, g in zip(pred, gold, strict=True))
        fp = sum(p == c and g != c for p, g in zip(pred, gold, strict=True))
        fn = sum(p != c and g == c for p, g in zip(pred, gold, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return acc, sum(f1s) / num_labels
