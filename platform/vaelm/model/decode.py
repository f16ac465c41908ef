"""Batched decoding from latent vectors: greedy, sampling (temperature / top-k / top-p) and beam search.

Every function starts from z (B, Z) (in lm mode: no z, `n` rows instead), feeds <bos>, stops a row at
<eos> or after `max_len` generated tokens (default: the model's max_tokens - 1), and returns token id
lists without <bos>/<eos>/<pad>. <pad> and <bos> are never generated. The model is put in eval mode
for the call and restored afterwards; nothing here moves tensors between devices. Sampling draws each
token by inverse CDF from uniforms (`draw_`); top-p sampling is exact, by rejection, without a sort.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor

from vaelm.model.vae import BOS, EOS, PAD, LSTMState, TextVAE

Chooser = Callable[[Tensor, Tensor, int], Tensor]
"""(logits (b, V) of the rows still decoding, their row indices (b,) in the batch, step t) -> next tokens (b,)."""


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Run a block with the model in eval mode (no dropout, BN running stats), then restore it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _latents(model: TextVAE, z: Tensor | None, n: int | None) -> Tensor:
    """The z to decode from: (B, Z); in lm mode an empty (n, 0)."""
    if model.z_dim == 0:
        if n is None and z is None:
            raise ValueError("lm mode has no z: pass n=<number of rows> to decode from")
        rows = n if n is not None else z.size(0)  # type: ignore[union-attr]
        device = next(model.parameters()).device
        return torch.zeros((rows, 0), device=device)
    if z is None or z.dim() != 2 or z.size(1) != model.z_dim:
        shape = None if z is None else tuple(z.shape)
        raise ValueError(f"z has shape {shape}; decoding needs (B, {model.z_dim}), e.g. torch.randn(B, Z)")
    return z


def _max_len(model: TextVAE, max_len: int | None) -> int:
    return model.cfg.max_tokens - 1 if max_len is None else max_len


def _next_logits(model: TextVAE, tok: Tensor, z: Tensor, state: LSTMState | None) -> tuple[Tensor, LSTMState]:
    """One decoder step: tokens (B,) -> logits (B, V) with <pad>/<bos> banned (-inf)."""
    logits, state = model.decode(tok.unsqueeze(1), z, state)  # (B, 1, V)
    logits = logits[:, -1].float()  # (B, V)
    logits[:, PAD] = -math.inf
    logits[:, BOS] = -math.inf
    return logits, state


def _next_logp(model: TextVAE, tok: Tensor, z: Tensor, state: LSTMState | None) -> tuple[Tensor, LSTMState]:
    """One decoder step: tokens (B,) -> log-probabilities (B, V) with <pad>/<bos> banned."""
    logits, state = _next_logits(model, tok, z, state)
    return torch.log_softmax(logits, dim=-1), state


def _to_lists(ids: Tensor) -> list[list[int]]:
    """(B, T) generated ids -> lists cut at the first <eos> or <pad>."""
    if ids.size(1) == 0:
        return [[] for _ in range(ids.size(0))]
    stop = (ids == EOS) | (ids == PAD)  # (B, T)
    ends = torch.where(stop.any(dim=1), stop.int().argmax(dim=1), ids.size(1))  # (B,)
    return [row[:n] for row, n in zip(ids.tolist(), ends.tolist(), strict=True)]


@torch.no_grad()
def _generate(model: TextVAE, z: Tensor, max_len: int, choose: Chooser) -> list[list[int]]:
    """Decode every row of z (B, Z) until <eos> or max_len tokens.

    A row that has ended leaves the batch (its z, LSTM state and index are dropped), so the cost of a step
    is that of the rows still decoding; one host sync per step decides whether any row ended.
    """
    B, device = z.size(0), z.device
    out = torch.full((B, max(max_len, 0)), PAD, dtype=torch.long, device=device)  # (B, T)
    rows = torch.arange(B, device=device)  # (b,): batch index of each row still decoding
    tok = torch.full((B,), BOS, dtype=torch.long, device=device)  # (b,)
    state: LSTMState | None = None
    for t in range(max_len):
        logits, state = _next_logits(model, tok, z, state)  # (b, V)
        tok = choose(logits, rows, t)  # (b,)
        del logits  # freed before the next step's (b, V) logits are allocated, so that they reuse its memory
        out[rows, t] = tok
        ended = tok == EOS  # (b,)
        if bool(ended.any()):
            live = ~ended
            if not bool(live.any()):
                break
            rows, tok, z = rows[live], tok[live], z[live]  # (b',), (b',), (b', Z)
            state = (state[0][:, live], state[1][:, live])  # each (L, b', H)
    return _to_lists(out)  # (B, T) -> lists


def _argmax(logits: Tensor, rows: Tensor, t: int) -> Tensor:
    return logits.topk(1, dim=-1).indices.squeeze(-1)  # (b,)


def greedy(
    model: TextVAE, *, z: Tensor | None = None, n: int | None = None, max_len: int | None = None
) -> list[list[int]]:
    """The most likely token at every step. Judge whether z is used with this, not with sampling."""
    with eval_mode(model):
        return _generate(model, _latents(model, z, n), _max_len(model, max_len), _argmax)


def _filter_top_k(logits: Tensor, top_k: int) -> Tensor:
    if top_k <= 0 or top_k >= logits.size(-1):
        return logits
    kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, -math.inf)


# -- drawing a token per row: inverse CDF, and the nucleus (top-p) by rejection ---------------------

NUCLEUS_DRAWS = 16
"""Uniforms a top-p draw may use per token: one per try; the last one (rarely reached) draws by sort."""

_TIE = 1 + 2**-20  # "more likely than x" means a weight over w[x] * _TIE, safe from rounding in w / w[x]
_MAX_SCALE = 2.0**100  # bound on 1 / w[x], so that no weight overflows when divided by w[x]


def draw_(weights: Tensor, u: Tensor, top_p: float = 1.0) -> Tensor:
    """A token per row of weights (b, V) >= 0, e.g. probabilities (their sum need not be 1), from uniforms
    u (b, R) in [0, 1).

    top_p = 1: the inverse CDF at u[:, 0]. top_p < 1: a token of the nucleus, the most likely tokens whose
    mass reaches top_p of the row's, drawn in proportion to its weight: `_draw_nucleus_`, which needs
    R >= 2 (NUCLEUS_DRAWS) and overwrites weights.
    """
    if top_p >= 1.0:
        return inverse_cdf(weights, u[:, 0])
    if u.size(1) < 2:
        raise ValueError(f"top_p={top_p} needs at least 2 uniforms per token, got {u.size(1)}; pass NUCLEUS_DRAWS")
    return _draw_nucleus_(weights, u, top_p)


def _draw_nucleus_(weights: Tensor, u: Tensor, top_p: float) -> Tensor:
    """Exact nucleus sampling, by rejection: no sort of the vocabulary (at batch 256 a sort costs ten times
    the decoder step), no search for the cut-off.

    Draw x by inverse CDF at u[:, 0]. x is in the nucleus iff the tokens more likely than x hold less than
    top_p of the mass: one pass over the row. If not, draw again at u[:, 1] among those more likely tokens
    (they hold the whole nucleus), and so on: the token accepted follows the nucleus renormalised. A try
    misses with probability at most 1 - top_p, and a miss removes on average at least half of the mass
    outside the nucleus, so at top_p = 0.9 a row takes at most about 1.1 tries on average; rows that hit
    leave the batch, so later tries cost little. The last uniform, u[:, R - 1], draws from the nucleus
    found by sorting (rarely needed with R = NUCLEUS_DRAWS).

    Probabilities within a factor _TIE (1 + 2^-20) of each other count as ties, so a token that close to
    the cut-off may be kept or not: float rounding decides, as it does for the sums of mass.
    """
    tok, total = _inverse_cdf(weights, u[:, 0])  # (b,), (b, 1): the first tries
    target = total * top_p  # (b, 1)
    live = torch.arange(weights.size(0), device=weights.device)  # (n,): rows whose try tok[live] is untested
    for r in range(1, u.size(1)):
        weights, target = _more_likely_(weights, tok[live], target)  # (n, V), (n, 1)
        miss = (weights.sum(dim=-1) >= target.squeeze(1)).nonzero().squeeze(1)  # (n',)
        if miss.numel() == 0:
            return tok
        live, weights, target = live[miss], weights.index_select(0, miss), target[miss]  # (n',), (n', V), (n', 1)
        if r == u.size(1) - 1:
            weights = _nucleus_by_sort(weights, target)
        tok[live] = inverse_cdf(weights, u[live, r])
    return tok


def _more_likely_(weights: Tensor, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Over weights (n, V): the weights of the tokens more likely than x (n,), others 0, and target (n, 1),
    both divided by the weight of x. One multiply and one threshold (a (n, V) boolean mask and masked_fill
    cost ten times more), in place."""
    inv = weights.gather(1, x.unsqueeze(1)).reciprocal_().clamp_(max=_MAX_SCALE)  # (n, 1)
    return torch.nn.functional.threshold(weights.mul_(inv), _TIE, 0.0, inplace=True), target * inv


def _nucleus_by_sort(weights: Tensor, target: Tensor) -> Tensor:
    """weights (n, V) with 0 outside the nucleus: the tokens preceded, in descending order of weight, by less
    than target (n, 1) of mass."""
    desc, order = weights.sort(dim=-1, descending=True)  # (n, V)
    desc.masked_fill_(desc.cumsum(dim=-1) - desc >= target, 0.0)
    return torch.zeros_like(weights).scatter_(1, order, desc)  # (n, V)


def _block_width(V: int) -> int:
    """The largest divisor of V in [32, 512] (0 if none): the width of inverse_cdf's blocks."""
    return next((w for w in range(512, 31, -1) if V % w == 0), 0)


def inverse_cdf(weights: Tensor, u: Tensor) -> Tensor:
    """Per row, the token k with cdf[k-1] <= u * total < cdf[k], for weights (b, V) >= 0 and u (b,) in [0, 1).

    Two levels, so no cumulative sum runs over the whole vocabulary (the costliest pass of a sampling
    step at large batches): the block holding the draw, then the token inside that block. The token
    returned always has a positive weight.
    """
    return _inverse_cdf(weights, u)[0]


def _inverse_cdf(weights: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """inverse_cdf's tokens (b,), and each row's total weight (b, 1) that it sums on the way."""
    b, V = weights.shape
    width = _block_width(V)
    if width == 0:
        cdf = weights.cumsum(dim=-1)  # (b, V)
        at = u.unsqueeze(1) * cdf[:, -1:]  # (b, 1)
        return torch.minimum(_search(cdf, at), _last_positive(cdf)).squeeze(1), cdf[:, -1:]  # (b,), (b, 1)
    blocks = weights.view(b, V // width, width)  # (b, nb, W)
    bcdf = blocks.sum(dim=-1).cumsum_(dim=-1)  # (b, nb)
    at = u.unsqueeze(1) * bcdf[:, -1:]  # (b, 1)
    blk = torch.minimum(_search(bcdf, at), _last_positive(bcdf))  # (b, 1)
    before = torch.where(blk > 0, bcdf.gather(1, (blk - 1).clamp_(min=0)), torch.zeros_like(at))  # (b, 1)
    inner = blocks[torch.arange(b, device=weights.device), blk.squeeze(1)].cumsum_(dim=-1)  # (b, W)
    tok = torch.minimum(_search(inner, at - before), _last_positive(inner))  # (b, 1)
    return (blk * width + tok).squeeze(1), bcdf[:, -1:]  # (b,), (b, 1)


def _search(cdf: Tensor, draw: Tensor) -> Tensor:
    return torch.searchsorted(cdf, draw, right=True)  # (b, 1): first index with cdf > draw


def _last_positive(cdf: Tensor) -> Tensor:
    return torch.searchsorted(cdf, cdf[:, -1:].contiguous(), right=False)  # (b, 1): first index reaching the total


def sample(
    model: TextVAE,
    *,
    z: Tensor | None = None,
    n: int | None = None,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    max_len: int | None = None,
) -> list[list[int]]:
    """Ancestral sampling; top_k=0 and top_p=1 switch those filters off. Tokens are drawn by `draw_` from
    uniforms of the generator, which sets the seed."""
    if temperature <= 0.0:
        raise ValueError(f"temperature={temperature}: must be positive; use greedy() for temperature 0")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p}: must be in (0, 1]; 1 switches nucleus sampling off")

    draws = 1 if top_p >= 1.0 else NUCLEUS_DRAWS

    def choose(logits: Tensor, rows: Tensor, t: int) -> Tensor:
        probs = _filter_top_k(logits / temperature, top_k).softmax(dim=-1)  # (b, V)
        u = torch.rand((probs.size(0), draws), generator=generator, device=probs.device)  # (b, R)
        return draw_(probs, u, top_p)  # (b,)

    with eval_mode(model):
        return _generate(model, _latents(model, z, n), _max_len(model, max_len), choose)


class _Beams:
    """Per-row bookkeeping of finished hypotheses (score, ids) for beam search."""

    def __init__(self, rows: int, width: int, length_penalty: float) -> None:
        self.width, self.alpha = width, length_penalty
        self.finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(rows)]
        self.done = [False] * rows

    def norm(self, score: float, length: int) -> float:
        return score / (length**self.alpha) if self.alpha else score

    def add(self, row: int, score: float, ids: list[int]) -> None:
        if not self.done[row]:
            self.finished[row].append((self.norm(score, len(ids) + 1), ids))

    def update_done(self, row: int, best_alive: float, length: int) -> None:
        hyps = sorted(self.finished[row], key=lambda h: -h[0])[: self.width]
        if len(hyps) >= self.width and self.norm(best_alive, length) <= hyps[-1][0]:
            self.done[row] = True

    def best(self, row: int) -> list[int]:
        return max(self.finished[row], key=lambda h: h[0])[1]


def _select(
    beams: _Beams, top_s: Tensor, top_i: Tensor, hist: Tensor, V: int
) -> tuple[list[int], list[int], list[float]]:
    """From the 2W best candidates of each row keep W that do not end; finished ones go to `beams`."""
    W, t = beams.width, hist.size(1)
    origins, words, scores = [], [], []
    for row, (ss, ii) in enumerate(zip(top_s.tolist(), top_i.tolist(), strict=True)):
        kept = 0
        for rank, (s, i) in enumerate(zip(ss, ii, strict=True)):
            origin, word = row * W + i // V, i % V
            if word == EOS:
                if rank < W and s > -math.inf:
                    beams.add(row, s, hist[origin].tolist())
                continue
            if kept < W:
                origins.append(origin)
                words.append(word)
                scores.append(s)
                kept += 1
        beams.update_done(row, scores[row * W], t + 1)
    return origins, words, scores


@torch.no_grad()
def _beam(model: TextVAE, z: Tensor, W: int, max_len: int, length_penalty: float) -> list[list[int]]:
    B, device = z.size(0), z.device
    zz = z.repeat_interleave(W, dim=0)  # (B*W, Z)
    scores = torch.full((B, W), -math.inf, device=device)
    scores[:, 0] = 0.0  # (B, W): only the first beam is live at the start
    tok = torch.full((B * W,), BOS, dtype=torch.long, device=device)  # (B*W,)
    hist = torch.zeros((B * W, 0), dtype=torch.long, device=device)  # (B*W, t)
    beams = _Beams(B, W, length_penalty)
    state: LSTMState | None = None
    for _ in range(max_len):
        logp, state = _next_logp(model, tok, zz, state)  # (B*W, V)
        V = logp.size(1)
        cand = (scores.view(B * W, 1) + logp).view(B, W * V)  # (B, W*V)
        top_s, top_i = cand.topk(min(2 * W, W * V), dim=1)  # (B, 2W)
        origins, words, new_scores = _select(beams, top_s, top_i, hist, V)
        idx = torch.tensor(origins, device=device)  # (B*W,)
        tok = torch.tensor(words, device=device)  # (B*W,)
        hist = torch.cat([hist[idx], tok.unsqueeze(1)], dim=1)  # (B*W, t+1)
        state = (state[0][:, idx], state[1][:, idx])  # each (L, B*W, H)
        scores = torch.tensor(new_scores, device=device).view(B, W)
        if all(beams.done):
            break
    for row in range(B):
        if not beams.done[row]:
            for k in range(W):
                beams.add(row, float(scores[row, k]), hist[row * W + k].tolist())
    return [beams.best(row) for row in range(B)]


def beam_search(
    model: TextVAE,
    *,
    z: Tensor | None = None,
    n: int | None = None,
    beam_width: int = 4,
    max_len: int | None = None,
    length_penalty: float = 0.0,
) -> list[list[int]]:
    """Batched beam search; score = sum of log-probabilities / length**length_penalty. Width 1 = greedy."""
    if beam_width < 1:
        raise ValueError(f"beam_width={beam_width}: must be at least 1")
    with eval_mode(model):
        z_ = _latents(model, z, n)
        return _beam(model, z_, beam_width, _max_len(model, max_len), length_penalty)


def interpolate(z_a: Tensor, z_b: Tensor, *, steps: int, method: Literal["linear", "slerp"] = "linear") -> Tensor:
    """`steps` points from z_a to z_b (both (Z,)), endpoints included: (steps, Z)."""
    if steps < 2:
        raise ValueError(f"steps={steps}: must be at least 2 (the two endpoints)")
    t = torch.linspace(0.0, 1.0, steps, dtype=z_a.dtype, device=z_a.device).unsqueeze(1)  # (S, 1)
    if method == "linear":
        return (1 - t) * z_a + t * z_b  # (S, Z)
    cos = torch.dot(z_a, z_b) / (z_a.norm() * z_b.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if float(omega.sin().abs()) < 1e-6:
        return (1 - t) * z_a + t * z_b  # nearly parallel: slerp degenerates to lerp
    return (torch.sin((1 - t) * omega) * z_a + torch.sin(t * omega) * z_b) / omega.sin()  # (S, Z)
