"""Per-batch model functions of the bulk jobs: texts -> token rows; embed, score, classify a batch.

Pure torch (no Ray, no I/O). Randomness never comes from a shared generator: every row draws its noise
from its own seed (`row_seed(seed, key)` with key = document id or sample index), so a row's result
does not depend on which batch, unit or actor it landed in. Inputs must already be on the model's
device; outputs stay there.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer
from torch import Tensor

from vaelm.model.classifier import LatentClassifier
from vaelm.model.decode import eval_mode
from vaelm.model.metrics import gaussian_log_density
from vaelm.model.vae import PAD, TextVAE, kl_divergence, reconstruction_nll
from vaelm.text.tokenizer import encode_batch


def row_seed(seed: int, key: str) -> int:
    """A 63-bit seed from the job's seed and a row's key (its id or sample index)."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def row_normal(seeds: Sequence[int], shape: tuple[int, ...], *, device: torch.device | str = "cpu") -> Tensor:
    """Standard normal noise (B, *shape), row b drawn from its own generator seeded with seeds[b]."""
    rows = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack(rows).to(device) if rows else torch.zeros((0, *shape), device=device)


def row_uniform(seeds: Sequence[int], n: int, *, device: torch.device | str = "cpu") -> Tensor:
    """Uniform [0, 1) draws (B, n), row b from its own generator seeded with seeds[b]."""
    rows = [torch.rand((n,), generator=torch.Generator().manual_seed(s)) for s in seeds]
    return torch.stack(rows).to(device) if rows else torch.zeros((0, n), device=device)


# -- texts -> tokens ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Docs:
    """Tokenized documents: each row [<bos>, ids..., <eos>] of at most max_tokens."""

    rows: list[list[int]]
    n_tokens: list[int]
    """Tokens of the whole document before truncation, <bos>/<eos> not counted."""
    truncated: list[bool]


def encode_docs(tok: Tokenizer, texts: Sequence[str], *, max_tokens: int) -> Docs:
    """Tokenize texts; a document longer than max_tokens keeps its beginning and is flagged truncated."""
    encoded = encode_batch(tok, texts, max_tokens=max_tokens, long_documents="truncate", min_tokens=2)
    return Docs(
        rows=[e.chunks[0] for e in encoded],
        n_tokens=[e.n_tokens for e in encoded],
        truncated=[e.n_tokens + 2 > max_tokens for e in encoded],
    )


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices grouped into batches of similar length (less padding), in a deterministic order."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_rows(rows: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """Rows -> tokens (B, T) right-padded with <pad>, lengths (B,)."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)  # (B,)
    tokens = torch.full((len(rows), int(lengths.max()) if rows else 0), PAD, dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return tokens, lengths


# -- embed, classify ---------------------------------------------------------------------------------


@torch.no_grad()
def embed(model: TextVAE, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """Posterior mean mu(x) and standard deviation sigma(x), each (B, Z)."""
    with eval_mode(model):
        mu, logvar = model.encode(tokens, lengths)  # (B, Z), (B, Z)
    return mu.float(), (0.5 * logvar.float()).exp()


@torch.no_grad()
def classify(classifier: LatentClassifier, tokens: Tensor, lengths: Tensor) -> Tensor:
    """Class probabilities (B, num_labels)."""
    return classifier.predict_proba(tokens, lengths)


# -- score -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    rec_nll: Tensor  # (B,) reconstruction NLL at one z ~ q(z|x), nats
    kl: Tensor  # (B,) KL(q(z|x) || N(0, I)), nats
    elbo_nll: Tensor  # (B,) rec_nll + kl: the per-document NLL bound
    target_tokens: Tensor  # (B,) predicted tokens (<eos> counted, <bos> not)
    nll_per_token: Tensor  # (B,) elbo_nll / target_tokens
    iw_nll: Tensor | None  # (B,) importance-weighted NLL with K samples, when asked


@torch.no_grad()
def score(model: TextVAE, tokens: Tensor, lengths: Tensor, *, seeds: Sequence[int], iw_samples: int = 0) -> Scores:
    """Per-document ELBO NLL (one z per document, drawn from its own seed) and optionally IW-NLL."""
    with eval_mode(model):
        mu, logvar = model.encode(tokens, lengths)  # (B, Z)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, T-1)
        eps = row_normal(seeds, (mu.size(1),), device=mu.device)  # (B, Z)
        z = mu + eps * (0.5 * logvar).exp()  # (B, Z)
        rec = reconstruction_nll(model.decode(inputs, z)[0], targets)  # (B,)
        kl = kl_divergence(mu, logvar).sum(dim=1)  # (B,)
        iw = _iw_nll(model, inputs, targets, mu, logvar, seeds, iw_samples) if iw_samples > 0 else None
    n = (targets != PAD).sum(dim=1).clamp_min(1)  # (B,)
    return Scores(rec, kl, rec + kl, n, (rec + kl) / n, iw)


def _iw_nll(
    model: TextVAE, inputs: Tensor, targets: Tensor, mu: Tensor, logvar: Tensor, seeds: Sequence[int], k: int
) -> Tensor:
    """-(logsumexp_k [log p(z_k) + log p(x|z_k) - log q(z_k|x)] - log K), K samples per row from its seed."""
    B, Z = mu.shape
    if Z == 0:
        return reconstruction_nll(model.decode(inputs, mu)[0], targets)  # lm mode: exact NLL
    eps = row_normal([row_seed(s, "iw") for s in seeds], (k, Z), device=mu.device).transpose(0, 1)  # (K, B, Z)
    log_w = []
    for start in range(0, k, 50):  # chunks of 50 samples bound memory to 50 * B rows
        e = eps[start : start + 50]  # (c, B, Z)
        c = e.size(0)
        z = mu + e * (0.5 * logvar).exp()  # (c, B, Z)
        log_q = gaussian_log_density(z, mu, logvar)  # (c, B)
        log_prior = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))  # (c, B)
        logits, _ = model.decode(inputs.repeat(c, 1), z.reshape(c * B, Z))  # (c*B, T-1, V)
        log_px = -reconstruction_nll(logits, targets.repeat(c, 1)).view(c, B)  # (c, B)
        log_w.append(log_prior + log_px - log_q)
    return -(torch.cat(log_w).logsumexp(dim=0) - math.log(k))  # (B,)
