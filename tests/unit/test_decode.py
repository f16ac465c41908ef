"""Decoding: greedy, sampling, beam search, interpolation."""

from __future__ import annotations

import pytest
import torch

from tests.unit.vae_testlib import (
    single_thread,  # noqa: F401  (autouse fixture)
    tiny_config,
    tiny_model,
    trained_model,
)
from vaelm.model.decode import beam_search, greedy, interpolate, sample
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


def test_decode_top_p_keeps_the_nucleus_without_sorting() -> None:
    from vaelm.model.decode import _filter_top_p

    logits = torch.randn((64, 500), generator=torch.Generator().manual_seed(0)) * 3  # (B, V)
    probs = logits.softmax(dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    exact = torch.zeros_like(probs, dtype=torch.bool).scatter(1, order, (sorted_p.cumsum(-1) - sorted_p) < 0.9)
    kept = _filter_top_p(logits, 0.9) > float("-inf")
    assert int((exact & ~kept).sum()) <= 1, "the exact nucleus is kept (but for float rounding)"
    floor = torch.where(exact, probs, 1.0).amin(dim=-1, keepdim=True)  # (B, 1): smallest exactly kept
    extra = kept & ~exact
    assert bool((probs[extra.nonzero(as_tuple=True)] >= (floor / 1.003).expand_as(probs)[extra]).all())
    assert (probs * kept).sum(-1).min() >= 0.9 - 1e-5
    only_top = _filter_top_p(logits, 1e-6) > float("-inf")
    assert only_top.sum(-1).tolist() == [1] * 64 and bool(only_top.gather(1, probs.argmax(-1, keepdim=True)).all())
