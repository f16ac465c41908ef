"""Latent codes and batched decoding for `vaelm generate`, seeded per row.

Pure torch. Prior samples, posterior samples and sampled tokens all draw from each row's own seed
(`vaelm.model.infer.row_seed`), so a row's text does not depend on its batch: sampling picks token
t of row b by inverse CDF at a uniform draw u[b, t] from row b's generator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from vaelm.model.decode import _filter_top_k, _filter_top_p, _generate, beam_search, eval_mode, greedy
from vaelm.model.infer import row_normal, row_seed, row_uniform
from vaelm.model.vae import TextVAE

Strategy = Literal["greedy", "sample", "beam"]


@dataclass(frozen=True, kw_only=True)
class DecodeParams:
    strategy: Strategy = "sample"
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    beam_width: int = 4
    length_penalty: float = 0.0
    max_len: int | None = None


def prior_latents(model: TextVAE, seeds: Sequence[int]) -> Tensor:
    """z ~ N(0, I), one row per seed: (B, Z) on the model's device."""
    device = next(model.parameters()).device
    return row_normal(seeds, (model.z_dim,), device=device)


@torch.no_grad()
def posterior_latents(model: TextVAE, tokens: Tensor, lengths: Tensor, *, seeds: Sequence[int], sample: bool) -> Tensor:
    """mu(x), or z ~ q(z|x) with each row's noise from its seed: (B, Z)."""
    with eval_mode(model):
        mu, logvar = model.encode(tokens, lengths)  # (B, Z)
    if not sample:
        return mu
    eps = row_normal([row_seed(s, "z") for s in seeds], (mu.size(1),), device=mu.device)  # (B, Z)
    return mu + eps * (0.5 * logvar).exp()


def decode_latents(model: TextVAE, z: Tensor, *, params: DecodeParams, seeds: Sequence[int]) -> list[list[int]]:
    """Token ids (no specials) decoded from each row of z (B, Z) by the chosen strategy."""
    n = z.size(0)
    if n == 0:
        return []
    if params.strategy == "greedy":
        return greedy(model, z=z if model.z_dim else None, n=n, max_len=params.max_len)
    if params.strategy == "beam":
        return beam_search(
            model,
            z=z if model.z_dim else None,
            n=n,
            beam_width=params.beam_width,
            max_len=params.max_len,
            length_penalty=params.length_penalty,
        )
    return _sample_rows(model, z, params, seeds)


def _sample_rows(model: TextVAE, z: Tensor, params: DecodeParams, seeds: Sequence[int]) -> list[list[int]]:
    max_len = model.cfg.max_tokens - 1 if params.max_len is None else params.max_len
    u = row_uniform([row_seed(s, "tokens") for s in seeds], max(max_len, 1), device=z.device)  # (B, T)
    step = [0]

    def choose(logp: Tensor) -> Tensor:
        logits = _filter_top_p(_filter_top_k(logp / params.temperature, params.top_k), params.top_p)
        cdf = logits.softmax(dim=-1).cumsum(dim=-1)  # (B, V)
        draw = u[:, step[0] : step[0] + 1] * cdf[:, -1:]  # (B, 1)
        step[0] += 1
        return torch.searchsorted(cdf, draw, right=True).squeeze(1).clamp(max=cdf.size(1) - 1)  # (B,)

    if not (params.temperature > 0 and 0 < params.top_p <= 1):
        raise ValueError(f"temperature={params.temperature}, top_p={params.top_p}: temperature > 0, top_p in (0, 1]")
    with eval_mode(model):
        return _generate(model, z, max_len, choose)
