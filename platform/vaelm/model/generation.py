"""Latent codes and batched decoding for `vaelm generate`, seeded per row.

Pure torch. Prior samples, posterior samples and sampled tokens all draw from each row's own seed
(`vaelm.model.infer.row_seed`), never from a shared stream: sampling picks token t of row b by inverse
CDF at a uniform draw u[b, t] from row b's generator (with top_p < 1, a draw outside the nucleus is
redrawn from further uniforms of the row's own: `vaelm.model.decode.draw_`). So the same rows in the
same batches always give the same text; in a batch of another size, float sums can differ in the last
bits and a near tie between two tokens may flip, so batch-size independence is close but not exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from vaelm.model.decode import NUCLEUS_DRAWS, _filter_top_k, _generate, beam_search, draw_, eval_mode, greedy
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
    if not (params.temperature > 0 and 0 < params.top_p <= 1):
        raise ValueError(f"temperature={params.temperature}, top_p={params.top_p}: temperature > 0, top_p in (0, 1]")
    max_len = model.cfg.max_tokens - 1 if params.max_len is None else params.max_len
    draws = 1 if params.top_p >= 1 else NUCLEUS_DRAWS
    u = _token_uniforms(seeds, max(max_len, 1), draws, device=z.device)  # (B, T, R)

    def choose(logits: Tensor, rows: Tensor, t: int) -> Tensor:
        if params.temperature != 1.0:
            logits.div_(params.temperature)  # in place: this step's logits are ours
        probs = _softmax_(_filter_top_k(logits, params.top_k))  # (b, V)
        return draw_(probs, u[rows, t], params.top_p)  # (b,)

    with eval_mode(model):
        return _generate(model, z, max_len, choose)


def _token_uniforms(seeds: Sequence[int], steps: int, draws: int, *, device: torch.device) -> Tensor:
    """Uniforms (B, T, R) for the tokens of each row, from its own seed: [:, :, 0] from the key "tokens"
    (all that plain sampling uses), the further draws of top-p sampling from the key "nucleus"."""
    first = row_uniform([row_seed(s, "tokens") for s in seeds], steps, device=device).unsqueeze(2)  # (B, T, 1)
    if draws == 1:
        return first
    more = row_uniform([row_seed(s, "nucleus") for s in seeds], steps * (draws - 1), device=device)  # (B, T*(R-1))
    return torch.cat([first, more.view(len(seeds), steps, draws - 1)], dim=2)  # (B, T, R)


def _softmax_(logits: Tensor) -> Tensor:
    """Softmax over the vocabulary, on CPU written over logits (b, V) itself. As `_generate` also frees each
    step's logits before the next, a step then reuses one (b, V) block instead of two or three, which keeps
    its memory (8 MB at b=256, V=8000) in cache: about 4% of a sampling step at b=256. Elsewhere an ordinary
    softmax: a GPU's caching allocator reuses blocks anyway."""
    if logits.device.type != "cpu":
        return logits.softmax(dim=-1)  # (b, V)
    return torch.softmax(logits, dim=-1, out=logits)  # (b, V)
