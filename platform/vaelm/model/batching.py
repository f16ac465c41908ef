"""Turn token sequences into padded batches, bucketed by length so a batch wastes little on padding.

Pure numpy/torch (no Ray): the training loop feeds it whatever iterator of sequences it has.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

PAD = 0


def pad_batch(seqs: Sequence[Sequence[int] | np.ndarray], *, pin: bool = False) -> tuple[Tensor, Tensor]:
    """Sequences -> tokens (B, T) right-padded with <pad>=0, and lengths (B,)."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)  # (B,)
    tokens = torch.full((len(seqs), int(lengths.max()) if len(seqs) else 0), PAD, dtype=torch.long)  # (B, T)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.as_tensor(np.asarray(s, dtype=np.int64))
    if pin:
        tokens, lengths = tokens.pin_memory(), lengths.pin_memory()
    return tokens, lengths


def length_buckets(
    chunks: Iterable[Sequence[np.ndarray | Sequence[int]]], *, batch_size: int, seed: int
) -> Iterator[list[np.ndarray | Sequence[int]]]:
    """Sort each incoming chunk (with the leftover of the last) by length, cut full batches, yield them in
    a seeded random order. The final partial batch is dropped, so every worker yields only full batches."""
    rng = random.Random(seed)
    leftover: list[np.ndarray | Sequence[int]] = []
    for chunk in chunks:
        pool = sorted([*leftover, *chunk], key=len)
        full = len(pool) // batch_size
        batches = [pool[i * batch_size : (i + 1) * batch_size] for i in range(full)]
        leftover = pool[full * batch_size :]
        rng.shuffle(batches)
        yield from batches
