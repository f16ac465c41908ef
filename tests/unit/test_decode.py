"""Decoding: greedy, sampling, beam search, interpolation."""

from __future__ import annotations

import math

import pytest
import torch

from tests.unit.vae_testlib import (
    single_thread,  # noqa: F401  (autouse fixture)
    tiny_config,
    tiny_model,
    trained_model,
)
from vaelm.model.decode import NUCLEUS_DRAWS, beam_search, draw_, greedy, interpolate, inverse_cdf, sample
from vaelm.model.generation import DecodeParams, decode_latents
from vaelm.model.vae import BOS, EOS, PAD, TextVAE


def _z(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn((n, 4), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decode_beam_width_one_equals_greedy(seed: int) -> None:
    model = tiny_model(seed=seed)
    z = _z(6, seed)
    assert beam_search(model, z=z, beam_width=1, max_len=12) == greedy(model, z=z, max_len=12)


def test_decode_beam_width_one_equals_greedy_on_a_trained_model() -> None:
    model = trained_model()
    z = _z(8)
    assert beam_search(model, z=z, beam_width=1) == greedy(model, z=z)


def test_decode_batched_greedy_equals_one_row_at_a_time() -> None:
    model = tiny_model()
    z = _z(5)
    rows = [greedy(model, z=z[i : i + 1], max_len=10)[0] for i in range(5)]
    assert greedy(model, z=z, max_len=10) == rows


def _rig(model: TextVAE, token: int) -> TextVAE:
    with torch.no_grad():
        model.decoder.out.bias[token] = 100.0
    return model


def test_decode_stops_at_eos() -> None:
    model = _rig(tiny_model(), EOS)
    z = _z(3)
    assert greedy(model, z=z) == [[], [], []]
    assert beam_search(model, z=z, beam_width=3) == [[], [], []]
    assert sample(model, z=z, generator=torch.Generator().manual_seed(0)) == [[], [], []]


def test_decode_stops_at_max_len() -> None:
    model = _rig(tiny_model(), 7)
    assert greedy(model, z=_z(2), max_len=5) == [[7] * 5, [7] * 5]
    assert beam_search(model, z=_z(2), beam_width=2, max_len=5) == [[7] * 5, [7] * 5]
    assert len(greedy(model, z=_z(1))[0]) == model.cfg.max_tokens - 1


@pytest.mark.parametrize("special", [PAD, BOS])
def test_decode_never_generates_pad_or_bos(special: int) -> None:
    model = _rig(tiny_model(), special)
    for ids in greedy(model, z=_z(4), max_len=8) + beam_search(model, z=_z(4), beam_width=3, max_len=8):
        assert PAD not in ids and BOS not in ids


def test_decode_sampling_is_seeded_and_filters_reduce_to_greedy() -> None:
    model = tiny_model()
    z = _z(6)
    a = sample(model, z=z, generator=torch.Generator().manual_seed(5), max_len=10)
    b = sample(model, z=z, generator=torch.Generator().manual_seed(5), max_len=10)
    assert a == b
    reference = greedy(model, z=z, max_len=10)
    assert sample(model, z=z, top_k=1, generator=torch.Generator().manual_seed(1), max_len=10) == reference
    assert sample(model, z=z, top_p=1e-6, generator=torch.Generator().manual_seed(1), max_len=10) == reference
    hot = sample(model, z=z, temperature=5.0, generator=torch.Generator().manual_seed(5), max_len=10)
    assert hot != reference


def test_decode_rejects_bad_arguments() -> None:
    model = tiny_model()
    with pytest.raises(ValueError, match="temperature"):
        sample(model, z=_z(1), temperature=0.0)
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        greedy(model, z=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="n="):
        greedy(tiny_model(mode="lm"))


def test_decode_lm_mode_needs_no_z_and_restores_training_mode() -> None:
    model = tiny_model(mode="lm").train()
    out = greedy(model, n=3, max_len=6)
    assert len(out) == 3 and out[0] == out[1] == out[2]  # no z: every row is the same
    assert model.training


def test_decode_interpolate_linear_and_slerp() -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    line = interpolate(a, b, steps=3)
    assert torch.allclose(line, torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]))
    arc = interpolate(a, b, steps=5, method="slerp")
    assert torch.allclose(arc[0], a) and torch.allclose(arc[-1], b, atol=1e-6)
    assert torch.allclose(arc.norm(dim=1), torch.ones(5), atol=1e-6)  # stays on the circle
    with pytest.raises(ValueError, match="steps"):
        interpolate(a, b, steps=1)


class _Bigram(torch.nn.Module):
    """A decoder whose next-token distribution depends only on the last token: beam search is checkable."""

    def __init__(self, next_logp: torch.Tensor) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(next_logp, requires_grad=False)  # (V, V)
        self.cfg = tiny_config(max_tokens=8)
        self.z_dim = 0

    def decode(self, inputs: torch.Tensor, z: object, state: object = None) -> tuple[torch.Tensor, object]:
        B = inputs.size(0)
        return self.table[inputs], (torch.zeros(1, B, 1), torch.zeros(1, B, 1))  # (B, T, V)


def _trap() -> TextVAE:
    """After <bos>: 10 (0.6) or <eos> (0.4); after 10 nothing is likely and there is no <eos>: a greedy trap."""
    V = 50
    probs = torch.full((V, V), 1e-12)
    probs[BOS, 10], probs[BOS, EOS] = 0.6, 0.4
    probs[10:, 10:] = 0.95 / 39  # nearly flat over the 40 ordinary tokens, no <eos>
    probs[10:, 11] = 0.05
    return _Bigram(probs.log())  # type: ignore[return-value]


def test_decode_beam_search_escapes_the_greedy_trap() -> None:
    model = _trap()
    assert greedy(model, n=1) == [[10] + [11] * 6]
    assert beam_search(model, n=1, beam_width=1) == [[10] + [11] * 6]  # width 1 keeps greedy's choice
    assert beam_search(model, n=1, beam_width=2) == [[]]  # log 0.4 beats log 0.6 + 6 log 0.05


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """The exact nucleus (b, V) bool, by a float64 sort: the tokens preceded by less than top_p of the mass."""
    p = probs.double()
    desc, order = p.sort(dim=-1, descending=True)
    before = desc.cumsum(dim=-1) - desc  # (b, V): mass of the more likely tokens
    inside = before < top_p * p.sum(dim=-1, keepdim=True)
    return torch.zeros_like(inside).scatter(1, order, inside)


def _in_nucleus(probs: torch.Tensor, top_p: float, tok: torch.Tensor) -> torch.Tensor:
    """Per row, whether tok (b,) is in the exact nucleus or within 1e-5 of its least likely token (a tie)."""
    nucleus = _nucleus(probs, top_p)
    floor = torch.where(nucleus, probs.double(), 2.0).amin(dim=-1)  # (b,)
    return probs.double().gather(1, tok.unsqueeze(1)).squeeze(1) >= floor * (1 - 1e-5)


def _distributions(V: int, seed: int) -> torch.Tensor:
    """64 rows of probabilities (64, V): flat, peaked, heavy-tailed, some with zeros (banned or top-k)."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.05, 0.5, 2.0, 6.0]).repeat_interleave(16).unsqueeze(1)  # (64, 1)
    logits = torch.randn((64, V), generator=gen) * scale
    logits[::3, :2] = -math.inf  # as <pad> and <bos>
    logits[1::4, V // 2 :] = -math.inf  # as a top-k filter
    logits[5, 7] = 30.0  # one token alone beyond any top_p
    return logits.softmax(dim=-1)


@pytest.mark.parametrize("V", [8000, 500, 97])  # 8000: 16 blocks of 500; 500: one block; 97: no blocks
def test_decode_top_p_draws_only_from_the_exact_nucleus(V: int) -> None:
    probs = _distributions(V, seed=V)
    gen = torch.Generator().manual_seed(0)
    for top_p in (0.9, 0.5, 0.1, 0.999, 1e-6):
        for draws in (NUCLEUS_DRAWS, 3, 2):  # 2: one try, then the exact draw by sort for the rows that missed
            u = torch.rand((64, draws), generator=gen)
            tok = draw_(probs.clone(), u, top_p)
            assert bool(_in_nucleus(probs, top_p, tok).all()), (top_p, draws)
            assert tok[5] == 7
    with pytest.raises(ValueError, match="NUCLEUS_DRAWS"):
        draw_(probs.clone(), torch.rand((64, 1)), 0.9)


def test_decode_top_p_draws_in_proportion_to_probability_inside_the_nucleus() -> None:
    p = torch.tensor([0.02, 0.4, 0.05, 0.25, 0.03, 0.15, 0.1])  # nucleus at top_p 0.85: 0.4 0.25 0.15 0.1
    n = 40000
    u = torch.rand((n, NUCLEUS_DRAWS), generator=torch.Generator().manual_seed(0))
    expected = torch.tensor([0, 0.4, 0, 0.25, 0, 0.15, 0.1], dtype=torch.float64) / 0.9
    for draws in (NUCLEUS_DRAWS, 2):  # 2: the rows whose first try missed draw by sort
        tok = draw_(p.expand(n, -1).contiguous(), u[:, :draws], 0.85)
        freq = torch.bincount(tok, minlength=7).double() / n
        assert torch.allclose(freq, expected, atol=0.01), (draws, freq)
    tok = draw_(p.expand(n, -1).contiguous(), u, 0.85)
    first = inverse_cdf(p.expand(n, -1).contiguous(), u[:, 0])  # what plain sampling draws
    hit = torch.isin(first, torch.tensor([1, 3, 5, 6]))
    assert bool((tok[hit] == first[hit]).all()), "a first try inside the nucleus is the token drawn"


def test_decode_draws_are_deterministic_and_leave_the_uniforms_alone() -> None:
    probs = _distributions(8000, seed=1)
    u = torch.rand((64, NUCLEUS_DRAWS), generator=torch.Generator().manual_seed(2))
    u_before = u.clone()
    assert torch.equal(draw_(probs.clone(), u, 0.9), draw_(probs.clone(), u, 0.9))
    assert torch.equal(u, u_before)
    weights = probs.clone()
    assert torch.equal(draw_(weights, u, 1.0), inverse_cdf(probs, u[:, 0])) and torch.equal(weights, probs)


def _allowed(table: torch.Tensor, *, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """(V, V) bool: the tokens that may follow each token (row) of a bigram's logits table (V, V)."""
    logits = table / temperature
    logits[:, PAD] = logits[:, BOS] = -math.inf
    if top_k:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits[logits < kth] = -math.inf
    return _nucleus(logits.softmax(dim=-1), top_p)


@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(1.0, 0, 0.6), (0.7, 10, 0.8), (2.0, 5, 0.95)])
def test_decode_sampling_keeps_to_temperature_top_k_and_top_p(temperature: float, top_k: int, top_p: float) -> None:
    table = torch.randn((40, 40), generator=torch.Generator().manual_seed(0)) * 2.0
    model: TextVAE = _Bigram(table)  # type: ignore[assignment]
    allowed = _allowed(table, temperature=temperature, top_k=top_k, top_p=top_p)
    rng = torch.Generator().manual_seed(0)
    texts = sample(model, n=200, temperature=temperature, top_k=top_k, top_p=top_p, generator=rng)
    params = DecodeParams(strategy="sample", temperature=temperature, top_k=top_k, top_p=top_p)
    texts += decode_latents(model, torch.zeros((200, 0)), params=params, seeds=list(range(200)))
    pairs = [(a, b) for ids in texts for a, b in zip([BOS, *ids], ids, strict=False)]
    assert len(pairs) > 500 and all(bool(allowed[a, b]) for a, b in pairs)
