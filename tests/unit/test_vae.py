"""TextVAE: shapes, padding, the reparameterisation gradient, loss terms, word dropout, learning."""

from __future__ import annotations

import dataclasses
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
from vaelm.model.vae import (
    BOS,
    EOS,
    PAD,
    UNK,
    VAEOutput,
    bag_of_words_nll,
    kl_divergence,
    reconstruction_nll,
    vae_loss,
    word_dropout,
)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"bidirectional_encoder": False, "num_layers": 1},
        {"bn_gamma": None},
        {"encoder_pooling": "mean", "bow_head": True},
    ],
)
def test_vae_forward_shapes(overrides: dict[str, Any]) -> None:
    model = tiny_model(**overrides)
    tokens, lengths = batch(DISTINCT_DOCS[:3])  # (3, 8): the longest doc has 6 tokens
    out = model(tokens, lengths)
    assert out.logits.shape == (3, 7, 50)
    assert out.mu.shape == out.logvar.shape == out.z.shape == (3, 4)
    assert (out.bow_logits is None) == (not overrides.get("bow_head"))
    if out.bow_logits is not None:
        assert out.bow_logits.shape == (3, 50)


def test_lm_mode_has_no_z_and_no_encoder() -> None:
    model = tiny_model(mode="lm")
    tokens, lengths = batch(DISTINCT_DOCS[:3])
    out = model(tokens, lengths)
    assert model.encoder is None and out.mu.shape == (3, 0) and out.logits.shape == (3, 7, 50)
    terms = vae_loss(out, tokens[:, 1:], beta=1.0, free_bits=0.5)
    assert float(terms.kl) == 0.0
    assert torch.allclose(terms.loss, reconstruction_nll(out.logits, tokens[:, 1:]).mean())


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_vae_encoder_ignores_padding(pooling: str) -> None:
    model = tiny_model(encoder_pooling=pooling).eval()
    tokens, lengths = batch([[10, 11, 12]])
    padded = torch.cat([tokens, torch.zeros((1, 5), dtype=torch.long)], dim=1)
    mu_a, logvar_a = model.encode(tokens, lengths)
    mu_b, logvar_b = model.encode(padded, lengths)
    assert torch.allclose(mu_a, mu_b, atol=1e-6) and torch.allclose(logvar_a, logvar_b, atol=1e-6)


def test_vae_mean_pooling_averages_the_top_layer_outputs_over_the_tokens() -> None:
    model = tiny_model(encoder_pooling="mean", bn_gamma=None).eval()
    assert model.encoder is not None
    tokens, lengths = batch(DISTINCT_DOCS[:2])  # the second row is padded
    mu, _ = model.encode(tokens, lengths)
    for row in range(2):
        n = int(lengths[row])
        outputs, _ = model.encoder.lstm(model.encoder.embed(tokens[row : row + 1, :n]))  # (1, n, 2H)
        expected = model.encoder.to_mu(outputs.mean(dim=1))  # (1, Z)
        assert torch.allclose(mu[row], expected[0], atol=1e-5)
    last, _ = tiny_model(encoder_pooling="last", bn_gamma=None).eval().encode(tokens, lengths)
    assert not torch.allclose(mu, last, atol=1e-3)


def test_vae_bag_of_words_nll_counts_each_word_once_in_any_order() -> None:
    g = torch.Generator().manual_seed(2)
    bow_logits = torch.randn((2, 50), generator=g)
    targets = torch.tensor([[10, 11, 10, EOS, PAD], [12, EOS, PAD, PAD, PAD]])
    logp = bow_logits.log_softmax(-1)
    expected = torch.stack([-(2 * logp[0, 10] + logp[0, 11]), -logp[1, 12]])  # specials not counted
    assert torch.allclose(bag_of_words_nll(bow_logits, targets), expected, atol=1e-5)
    shuffled = torch.tensor([[11, 10, 10, EOS, PAD], [12, EOS, PAD, PAD, PAD]])
    assert torch.allclose(bag_of_words_nll(bow_logits, shuffled), expected, atol=1e-5)
    out = VAEOutput(logits=torch.zeros((2, 5, 50)), mu=torch.zeros(2, 4), logvar=torch.zeros(2, 4), z=torch.zeros(2, 4))
    plain = vae_loss(out, targets, beta=1.0)
    with_bow = vae_loss(dataclasses.replace(out, bow_logits=bow_logits), targets, beta=1.0, bow_weight=3.0)
    assert plain.bow is None and with_bow.bow is not None
    assert torch.allclose(with_bow.loss, plain.loss + 3.0 * expected.mean(), atol=1e-5)


def test_vae_bow_head_trains_the_encoder_and_its_loss_falls() -> None:
    model = tiny_model(bow_head=True, encoder_pooling="mean", dropout=0.0)
    tokens, lengths = batch(DISTINCT_DOCS)
    out = model(tokens, lengths)
    assert model.encoder is not None and model.bow is not None and out.bow_logits is not None
    bag_of_words_nll(out.bow_logits, tokens[:, 1:]).sum().backward()  # the bag-of-words term alone
    grad = model.encoder.lstm.weight_ih_l0.grad
    assert grad is not None and grad.abs().sum() > 0  # reaches the encoder through z
    assert all(p.grad is None for p in model.decoder.parameters())  # and not the decoder
    model.zero_grad()
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    bows = []
    for _ in range(40):
        terms = vae_loss(model(tokens, lengths), tokens[:, 1:], beta=0.1)  # little KL pressure: sigma can shrink
        opt.zero_grad()
        terms.loss.backward()
        opt.step()
        bows.append(float(terms.bow))  # type: ignore[arg-type]
    assert bows[-1] < 0.7 * bows[0], bows


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
        (ModelConfig, {"vocab_size": 50, "mode": "lm", "bow_head": True}, "bow_head"),
        (ModelConfig, {"vocab_size": 50, "encoder_pooling": "max"}, "encoder_pooling"),
        (LossConfig, {"bow_weight": -1.0}, "bow_weight"),
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
