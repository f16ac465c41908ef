"""TextVAE: shapes, padding, the reparameterisation gradient, loss terms, word dropout, learning."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pydantic import ValidationError
from torch.distributions import Normal
from torch.distributions import kl_divergence as torch_kl

from tests.unit.vae_testlib import (
    DISTINCT_DOCS,
    batch,
    fit,
    single_thread,  # noqa: F401  (autouse fixture)
    tiny_config,
    tiny_model,
)
from vaelm.config.base import SpecModel, raise_spec_error
from vaelm.config.model import LossConfig, ModelConfig
from vaelm.errors import SpecError
from vaelm.model.vae import BOS, EOS, PAD, UNK, VAEOutput, kl_divergence, reconstruction_nll, vae_loss, word_dropout


@pytest.mark.parametrize("overrides", [{}, {"bidirectional_encoder": False, "num_layers": 1}, {"bn_gamma": None}])
def test_vae_forward_shapes(overrides: dict[str, Any]) -> None:
    model = tiny_model(**overrides)
    tokens, lengths = batch(DISTINCT_DOCS[:3])  # (3, 8): the longest doc has 6 tokens
    out = model(tokens, lengths)
    assert out.logits.shape == (3, 7, 50)
    assert out.mu.shape == out.logvar.shape == out.z.shape == (3, 4)


def test_lm_mode_has_no_z_and_no_encoder() -> None:
    model = tiny_model(mode="lm")
    tokens, lengths = batch(DISTINCT_DOCS[:3])
    out = model(tokens, lengths)
    assert model.encoder is None and out.mu.shape == (3, 0) and out.logits.shape == (3, 7, 50)
    terms = vae_loss(out, tokens[:, 1:], beta=1.0, free_bits=0.5)
    assert float(terms.kl) == 0.0
    assert torch.allclose(terms.loss, reconstruction_nll(out.logits, tokens[:, 1:]).mean())


def test_vae_encoder_ignores_padding() -> None:
    model = tiny_model().eval()
    tokens, lengths = batch([[10, 11, 12]])
    padded = torch.cat([tokens, torch.zeros((1, 5), dtype=torch.long)], dim=1)
    mu_a, logvar_a = model.encode(tokens, lengths)
    mu_b, logvar_b = model.encode(padded, lengths)
    assert torch.allclose(mu_a, mu_b, atol=1e-6) and torch.allclose(logvar_a, logvar_b, atol=1e-6)


@pytest.mark.parametrize("bn_gamma", [None, 0.5])
def test_vae_reparameterisation_gradient_reaches_mu_and_sigma_heads(bn_gamma: float | None) -> None:
    model = tiny_model(bn_gamma=bn_gamma)
    tokens, lengths = batch(DISTINCT_DOCS[:4])
    out = model(tokens, lengths)
    # reconstruction only: the gradient must flow through z = mu + sigma * eps
    reconstruction_nll(out.logits, tokens[:, 1:]).sum().backward()
    assert model.encoder is not None
    assert model.encoder.to_mu.weight.grad is not None and model.encoder.to_mu.weight.grad.abs().sum() > 0
    assert model.encoder.to_logvar.weight.grad is not None and model.encoder.to_logvar.weight.grad.abs().sum() > 0


def test_vae_kl_equals_closed_form_of_torch_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn((5, 4), generator=g), torch.randn((5, 4), generator=g)
    expected = torch_kl(Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros(4), torch.ones(4)))
    assert torch.allclose(kl_divergence(mu, logvar), expected, atol=1e-5)
    assert torch.equal(kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3)), torch.zeros(2, 3))


def test_vae_reconstruction_counts_eos_and_skips_pad() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn((2, 4, 50), generator=g)
    targets = torch.tensor([[10, 11, EOS, PAD], [12, EOS, PAD, PAD]])
    logp = logits.log_softmax(-1)
    row0 = -(logp[0, 0, 10] + logp[0, 1, 11] + logp[0, 2, EOS])
    row1 = -(logp[1, 0, 12] + logp[1, 1, EOS])
    assert torch.allclose(reconstruction_nll(logits, targets), torch.stack([row0, row1]), atol=1e-5)


def _fixed_output(mu: torch.Tensor, logvar: torch.Tensor) -> VAEOutput:
    logits = torch.zeros((mu.size(0), 2, 50))  # uniform: rec = 2 * log 50 per doc
    return VAEOutput(logits=logits, mu=mu, logvar=logvar, z=mu)


def test_vae_free_bits_floor_each_dimension() -> None:
    mu = torch.tensor([[0.1, 2.0], [0.1, 2.0]])  # per-dim KL: 0.005 and 2.0
    out = _fixed_output(mu, torch.zeros_like(mu))
    targets = torch.tensor([[10, EOS], [11, EOS]])
    rec = 2 * torch.log(torch.tensor(50.0))
    off = vae_loss(out, targets, beta=0.5, free_bits=0.0)
    on = vae_loss(out, targets, beta=0.5, free_bits=0.25)
    assert torch.allclose(off.loss, rec + 0.5 * (0.005 + 2.0), atol=1e-5)
    assert torch.allclose(on.loss, rec + 0.5 * (0.25 + 2.0), atol=1e-5)
    assert torch.allclose(on.kl, off.kl)  # the reported KL is the true one
    assert on.n_tokens == 4 and torch.allclose(on.nll_per_token, (2 * rec + 2 * 2.005) / 4, atol=1e-5)


def test_vae_word_dropout_replaces_only_ordinary_tokens() -> None:
    inputs = torch.tensor([[BOS, 10, 11, 12, EOS, PAD]] * 50)
    g = torch.Generator().manual_seed(0)
    dropped = word_dropout(inputs, 0.5, generator=g)
    assert torch.equal(dropped[:, [0, 4, 5]], inputs[:, [0, 4, 5]])
    share = float((dropped[:, 1:4] == UNK).float().mean())
    assert 0.35 < share < 0.65
    assert torch.equal(word_dropout(inputs, 0.0), inputs)


def test_vae_batchnorm_keeps_mu_variance_at_gamma_squared() -> None:
    model = tiny_model(bn_gamma=0.6).train()
    assert model.encoder is not None
    with torch.no_grad():
        model.encoder.to_mu.weight.mul_(100.0)  # raw mu spread well above BatchNorm's eps
    tokens, lengths = batch(DISTINCT_DOCS)
    mu, _ = model.encode(tokens, lengths)
    var = mu.var(dim=0, unbiased=False)
    assert torch.allclose(var, torch.full_like(var, 0.36), atol=0.01)


def test_vae_stepwise_decoding_matches_full_sequence() -> None:
    model = tiny_model().eval()
    tokens, _ = batch(DISTINCT_DOCS[:2])
    z = torch.randn(2, 4)
    full, _ = model.decode(tokens[:, :-1], z)
    state, steps = None, []
    for t in range(tokens.size(1) - 1):
        logits, state = model.decode(tokens[:, t : t + 1], z, state)
        steps.append(logits)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("mode", ["vae", "lm"])
def test_vae_loss_falls_on_a_fixed_batch(mode: str) -> None:
    model = tiny_model(mode=mode, dropout=0.0)
    tokens, lengths = batch(DISTINCT_DOCS)
    losses = fit(model, tokens, lengths, steps=30)
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize(
    ("cls", "values", "needle"),
    [
        (ModelConfig, {"vocab_size": 50, "latent_dim": 0}, "latent_dim"),
        (ModelConfig, {"vocab_size": 50, "hidden_dim": -4}, "hidden_dim"),
        (ModelConfig, {"vocab_size": 3}, "tokenizer"),
        (ModelConfig, {"vocab_size": 50, "dropout": 1.0}, "dropout"),
        (ModelConfig, {"vocab_size": 50, "bn_gamma": 0.0}, "bn_gamma"),
        (LossConfig, {"free_bits": -0.1}, "free_bits"),
        (LossConfig, {"word_dropout": -0.1}, "word_dropout"),
        (LossConfig, {"kl_anneal": "cosine"}, "kl_anneal"),
        (LossConfig, {"cycle_ratio": 0.0}, "cycle_ratio"),
        (LossConfig, {"beta": 1.0}, "unknown key"),
    ],
)
def test_vae_config_rejects_impossible_values(cls: type[SpecModel], values: dict[str, object], needle: str) -> None:
    with pytest.raises(ValidationError) as info:
        cls.model_validate(values)
    err = raise_spec_error(info.value, where="jobs/train.yaml model")
    assert isinstance(err, SpecError) and needle in str(err)


def test_vae_config_defaults_match_the_reference_design() -> None:
    cfg = tiny_config()
    assert ModelConfig(vocab_size=8000).model_dump() | {"vocab_size": 50} != cfg.model_dump()
    ref = ModelConfig(vocab_size=8000)
    assert (ref.embed_dim, ref.hidden_dim, ref.num_layers, ref.latent_dim) == (256, 128, 2, 32)
    assert ref.bn_gamma is not None and ref.latent_dim * ref.bn_gamma**2 / 2 >= 3.0  # KL floor >= 3 nats
    assert "latent" in (ModelConfig.model_fields["latent_dim"].description or "")
