"""Per-batch model functions of the bulk jobs: a row's result never depends on its batch."""

from __future__ import annotations

import pytest
import torch

from tests.support.artifacts import tiny_tokenizer_json, tiny_vae
from tests.unit.vae_testlib import DISTINCT_DOCS, batch, one_thread, tiny_model
from vaelm.model import classify_train as ct
from vaelm.model import infer
from vaelm.model.classifier import LatentClassifier
from vaelm.model.decode import inverse_cdf
from vaelm.model.generation import DecodeParams, _softmax_, decode_latents, prior_latents
from vaelm.text.tokenizer import tokenizer_from_json


def test_row_seed_is_stable_and_keyed() -> None:
    assert infer.row_seed(0, "a") == infer.row_seed(0, "a")
    assert len({infer.row_seed(0, "a"), infer.row_seed(1, "a"), infer.row_seed(0, "b")}) == 3
    assert 0 <= infer.row_seed(7, "x") < 2**63


def test_score_of_a_row_does_not_depend_on_its_batch() -> None:
    model = tiny_model()
    tokens, lengths = batch(DISTINCT_DOCS[:4])
    seeds = [infer.row_seed(0, f"d{i}") for i in range(4)]
    together = infer.score(model, tokens, lengths, seeds=seeds, iw_samples=3)
    alone_tokens, alone_lengths = batch([DISTINCT_DOCS[2]])
    alone = infer.score(model, alone_tokens, alone_lengths, seeds=[seeds[2]], iw_samples=3)
    assert torch.allclose(together.elbo_nll[2], alone.elbo_nll[0], atol=1e-4)
    assert together.iw_nll is not None and alone.iw_nll is not None
    assert torch.allclose(together.iw_nll[2], alone.iw_nll[0], atol=1e-4)
    assert torch.allclose(together.elbo_nll, together.rec_nll + together.kl)
    assert together.target_tokens.tolist() == [len(d) + 1 for d in DISTINCT_DOCS[:4]]  # <eos> counted


def test_sampled_text_of_a_row_does_not_depend_on_its_batch() -> None:
    model = tiny_model()
    seeds = [infer.row_seed(3, f"prior:{i}") for i in range(5)]
    params = DecodeParams(strategy="sample", temperature=1.0, top_p=0.9, max_len=12)
    all_rows = decode_latents(model, prior_latents(model, seeds), params=params, seeds=seeds)
    one = decode_latents(model, prior_latents(model, seeds[3:4]), params=params, seeds=seeds[3:4])
    assert all_rows[3] == one[0]
    assert len({tuple(r) for r in all_rows}) > 1, "different seeds give different samples"
    assert all(t not in (0, 1) for row in all_rows for t in row), "<pad>/<bos> are never generated"


def test_greedy_and_beam_decode_every_row() -> None:
    model = tiny_model()
    z = torch.randn(3, model.z_dim)
    for strategy in ("greedy", "beam"):
        out = decode_latents(model, z, params=DecodeParams(strategy=strategy, beam_width=2, max_len=6), seeds=[1, 2, 3])
        assert len(out) == 3 and all(len(r) <= 6 for r in out)


def test_long_documents_are_truncated_and_flagged() -> None:
    tok = tokenizer_from_json(tiny_tokenizer_json())
    docs = infer.encode_docs(tok, ["短文。", "很长的文档" * 40], max_tokens=16)
    assert docs.truncated == [False, True]
    assert len(docs.rows[1]) == 16 and docs.rows[1][0] == 1 and docs.rows[1][-1] == 2
    assert docs.n_tokens[1] > 14


def test_length_batches_cover_every_row_once_sorted_by_length() -> None:
    lengths = [5, 1, 4, 1, 9, 2]
    batches = infer.length_batches(lengths, 4)
    assert sorted(i for b in batches for i in b) == list(range(6))
    flat = [lengths[i] for b in batches for i in b]
    assert flat == sorted(flat)


def test_embed_gives_mu_and_positive_sigma() -> None:
    model, _ = tiny_vae()
    tokens, lengths = batch(DISTINCT_DOCS[:3])
    mu, sigma = infer.embed(model, tokens, lengths)
    assert mu.shape == sigma.shape == (3, 4) and bool((sigma > 0).all())


def test_fine_tuned_classifier_learns_an_easy_task() -> None:
    torch.manual_seed(0)
    model = tiny_model()
    rows = [[1, *([10 + i % 5] * 4), 2] for i in range(40)] + [[1, *([30 + i % 5] * 4), 2] for i in range(40)]
    labels = [0] * 40 + [1] * 40
    clf = LatentClassifier.from_vae(model, num_labels=2, freeze_encoder=False)
    with one_thread():
        losses = ct.fit(clf, rows, labels, params=ct.FitParams(epochs=10, batch_size=16, lr=1e-2))
    assert losses[-1] < losses[0]
    pred = ct.predict_proba(clf, rows).argmax(dim=1).tolist()
    acc, f1 = ct.accuracy_macro_f1(pred, labels, 2)
    assert acc >= 0.95 and f1 >= 0.95


def test_accuracy_and_macro_f1() -> None:
    acc, f1 = ct.accuracy_macro_f1([0, 0, 1, 1], [0, 1, 1, 1], 2)
    assert acc == 0.75
    assert abs(f1 - (2 / 3 + 0.8) / 2) < 1e-9
    assert ct.subsample(100, fraction=0.1, max_labels=None, seed=0) == ct.subsample(
        100, fraction=0.1, max_labels=None, seed=0
    )
    assert len(ct.subsample(1000, fraction=0.5, max_labels=7, seed=0)) == 7


def test_sampling_softmax_overwrites_the_logits_with_the_same_values_as_softmax() -> None:
    logits = torch.randn((8, 8000), generator=torch.Generator().manual_seed(0)) * 4
    logits[:, :2] = -float("inf")  # banned tokens, as <pad> and <bos> in every step
    expected = logits.softmax(dim=-1)
    probs = _softmax_(logits)
    assert probs.data_ptr() == logits.data_ptr(), "no second (b, V) block per decoding step"
    assert torch.equal(probs, expected)


@pytest.mark.parametrize("V", [8000, 97])  # 8000: two levels (blocks of 500); 97 (prime): one cumulative sum
def test_inverse_cdf_picks_the_token_whose_cdf_step_holds_the_draw(V: int) -> None:
    gen = torch.Generator().manual_seed(0)
    weights = torch.rand((64, V), generator=gen) ** 8  # (b, V), many near zero
    weights[weights < 0.2] = 0.0  # and many exactly zero (filtered or banned tokens)
    weights[:, -5:] = 0.0
    u = torch.rand(64, generator=gen)
    u[:4] = torch.tensor([0.0, 0.5, 0.999999, 1.0 - 2**-24])
    tok = inverse_cdf(weights.clone(), u)  # (b,)
    assert bool((weights.gather(1, tok.unsqueeze(1)) > 0).all()), "a zero-weight token is never drawn"
    cdf = weights.double().cumsum(dim=1)
    expected = torch.searchsorted(cdf, u.double().unsqueeze(1) * cdf[:, -1:], right=True).squeeze(1)
    assert (tok == expected).float().mean() >= 0.95, "the same token as a float64 inverse CDF, but for rounding"
    n = 20000
    pattern = torch.tensor([1.0, 0.0, 3.0, 0.0] * (V // 4) + [0.0] * (V % 4)).expand(n, V).contiguous()
    picked = inverse_cdf(pattern, torch.rand(n, generator=gen))
    assert set((picked % 4).tolist()) == {0, 2} and abs(float((picked % 4 == 0).float().mean()) - 0.25) < 0.01
