"""Model-quality metrics: perplexity, IW-NLL, mutual information, active units, collapse detection."""

from __future__ import annotations

import math

import pytest
import torch

from tests.unit.vae_testlib import (
    DISTINCT_DOCS,
    batch,
    collapsed_model,
    single_thread,  # noqa: F401  (autouse fixture)
    tiny_model,
    trained_model,
)
from vaelm.model.metrics import (
    active_units,
    detect_collapse,
    evaluate,
    iw_nll,
    mutual_information,
    perplexity,
)
from vaelm.model.vae import TextVAE, kl_divergence, reconstruction_nll


@pytest.fixture(scope="module")
def trained() -> TextVAE:
    return trained_model()


def test_metrics_perplexity_counts_eos_not_bos() -> None:
    model = tiny_model()
    tokens, lengths = batch(DISTINCT_DOCS)
    result = evaluate(model, [(tokens[:4], lengths[:4]), (tokens[4:], lengths[4:])], probes=0)
    n_targets = sum(len(d) + 1 for d in DISTINCT_DOCS)  # every word and the <eos>
    assert result["docs"] == 8 and result["tokens"] == n_targets
    total = float(result["elbo_nll"]) * 8
    assert result["ppl"] == pytest.approx(math.exp(total / n_targets))
    assert result["elbo_nll"] == pytest.approx(float(result["rec_nll"]) + float(result["kl"]))
    assert perplexity(0.0, 10) == 1.0


def test_metrics_evaluate_restores_training_mode() -> None:
    model = tiny_model().train()
    evaluate(model, [batch(DISTINCT_DOCS)], probes=2)
    assert model.training


def test_metrics_active_units_counts_dimensions_with_variance() -> None:
    g = torch.Generator().manual_seed(0)
    mus = torch.cat([torch.randn((200, 3), generator=g), torch.full((200, 2), 0.5)], dim=1)
    mus[:, 2] *= 0.05  # variance 0.0025 < 0.01
    assert active_units(mus) == 2
    assert active_units(mus, threshold=0.001) == 3


def test_metrics_mutual_information_separates_informative_from_collapsed() -> None:
    g = torch.Generator().manual_seed(0)
    informative = mutual_information(torch.randn((400, 4), generator=g) * 2, torch.full((400, 4), -2.0), generator=g)
    collapsed = mutual_information(torch.zeros((400, 4)), torch.zeros((400, 4)), generator=g)
    assert collapsed == pytest.approx(0.0, abs=1e-9)
    assert 2.0 < informative <= math.log(400)  # MI can never exceed log N


def test_metrics_mutual_information_does_not_depend_on_chunking() -> None:
    mus, logvars = torch.randn((50, 3)), torch.full((50, 3), -1.0)
    a = mutual_information(mus, logvars, generator=torch.Generator().manual_seed(3), chunk=7)
    b = mutual_information(mus, logvars, generator=torch.Generator().manual_seed(3), chunk=256)
    assert a == pytest.approx(b)


def test_metrics_iw_nll_is_exact_when_posterior_equals_prior() -> None:
    model = collapsed_model()  # q(z|x) = p(z) and p(x|z) = p(x): every importance weight is p(x)
    tokens, lengths = batch(DISTINCT_DOCS)
    exact = reconstruction_nll(model.decode(tokens[:, :-1], torch.zeros(8, 4))[0], tokens[:, 1:])
    assert torch.allclose(iw_nll(model, tokens, lengths, k=7, chunk=3), exact, atol=1e-4)


def test_metrics_iw_bound_is_tighter_than_elbo(trained: TextVAE) -> None:
    tokens, lengths = batch(DISTINCT_DOCS)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        outs = [trained(tokens, lengths, generator=g) for _ in range(50)]
        elbo = torch.stack([reconstruction_nll(o.logits, tokens[:, 1:]) for o in outs]).mean(0)
        elbo += kl_divergence(outs[0].mu, outs[0].logvar).sum(dim=1)
    iw = iw_nll(trained, tokens, lengths, k=64, chunk=16, generator=g)
    assert float(iw.mean()) < float(elbo.mean())
    assert iw.shape == (8,)


def test_metrics_iw_nll_in_lm_mode_is_the_exact_nll() -> None:
    model = tiny_model(mode="lm").eval()
    tokens, lengths = batch(DISTINCT_DOCS)
    exact = reconstruction_nll(model.decode(tokens[:, :-1], None)[0], tokens[:, 1:])
    assert torch.allclose(iw_nll(model, tokens, lengths, k=5), exact)


@pytest.mark.parametrize(
    ("kl", "au", "decodes", "collapsed"),
    [
        (0.01, 0, [[5, 6], [5, 6], [5, 6]], True),
        (0.01, 0, ["好评", "好评"], True),
        (0.01, 0, [[5, 6], [5, 7]], False),
        (0.50, 0, [[5, 6], [5, 6]], False),
        (0.01, 1, [[5, 6], [5, 6]], False),
    ],
)
def test_metrics_detect_collapse_needs_all_three_signs(
    kl: float, au: int, decodes: list[list[int]] | list[str], collapsed: bool
) -> None:
    report = detect_collapse(kl=kl, au=au, greedy_decodes=decodes)
    assert report.collapsed is collapsed
    assert ("posterior collapse" in report.describe()) is collapsed


def test_metrics_flag_a_collapsed_model() -> None:
    result = evaluate(collapsed_model(), [batch(DISTINCT_DOCS)], iw_samples=4)
    assert result["collapsed"] is True
    assert result["kl"] == 0.0 and result["au"] == 0 and result["distinct_decodes"] == 1


def test_metrics_do_not_flag_a_trained_model(trained: TextVAE) -> None:
    result = evaluate(trained, [batch(DISTINCT_DOCS)])
    assert result["collapsed"] is False
    assert float(result["kl"]) > 0.1 and int(result["au"]) > 0 and int(result["distinct_decodes"]) > 1
