"""Tiny configs, batches and a fit loop shared by the model unit tests."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import pytest
import torch
from torch import Tensor

from vaelm.config.model import ModelConfig
from vaelm.model.vae import BOS, EOS, PAD, TextVAE, vae_loss

TINY = {"vocab_size": 50, "embed_dim": 16, "hidden_dim": 16, "latent_dim": 4, "max_tokens": 16}


def tiny_config(**overrides: object) -> ModelConfig:
    return ModelConfig.model_validate({**TINY, **overrides})


def tiny_model(seed: int = 0, **overrides: object) -> TextVAE:
    torch.manual_seed(seed)
    return TextVAE(tiny_config(**overrides))


def batch(docs: list[list[int]]) -> tuple[Tensor, Tensor]:
    """Rows [<bos>, ids, <eos>, <pad>...] and their lengths (non-pad tokens)."""
    width = max(len(d) for d in docs) + 2
    rows = [[BOS, *d, EOS] + [PAD] * (width - len(d) - 2) for d in docs]
    tokens = torch.tensor(rows)
    return tokens, (tokens != PAD).sum(dim=1)


DISTINCT_DOCS = [
    [10, 11, 12, 13, 14, 15],
    [20, 21, 22, 23],
    [30, 31, 32, 33, 34],
    [40, 41, 42, 43, 44, 45, 46],
    [15, 25, 35, 45],
    [12, 22, 32, 42, 12, 22],
    [47, 48, 49],
    [5, 6, 7, 8, 9],
]


@contextmanager
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and a busy shared machine punishes more."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def fit(model: TextVAE, tokens: Tensor, lengths: Tensor, *, steps: int, beta: float = 1.0) -> list[float]:
    """Adam on one fixed batch; returns the loss of every step."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    model.train()
    losses = []
    with one_thread():
        for _ in range(steps):
            losses.append(_step(model, opt, tokens, lengths, beta))
    return losses


def _step(model: TextVAE, opt: torch.optim.Optimizer, tokens: Tensor, lengths: Tensor, beta: float) -> float:
    terms = vae_loss(model(tokens, lengths), tokens[:, 1:], beta=beta, free_bits=0.0)
    opt.zero_grad()
    terms.loss.backward()
    opt.step()
    return float(terms.loss.detach())


def collapsed_model() -> TextVAE:
    """A VAE with posterior collapse built in: q(z|x) = N(0, I) for every x and a decoder blind to z."""
    model = tiny_model(bn_gamma=None)
    assert model.encoder is not None and model.decoder.z_to_state is not None
    with torch.no_grad():
        for head in (model.encoder.to_mu, model.encoder.to_logvar):
            head.weight.zero_()
            head.bias.zero_()
        model.decoder.z_to_state.weight.zero_()
        cast(Tensor, model.decoder.lstm.weight_ih_l0)[:, TINY["embed_dim"] :].zero_()  # the z columns of the input
    return model.eval()


@functools.cache
def trained_model(steps: int = 120) -> TextVAE:
    """A tiny BN-VAE fitted on DISTINCT_DOCS (built once; do not modify it): z is not collapsed."""
    model = tiny_model(bn_gamma=0.5, dropout=0.0)
    tokens, lengths = batch(DISTINCT_DOCS)
    fit(model, tokens, lengths, steps=steps)
    return model.eval()


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """Import into a test module to run each of its tests on one torch thread."""
    with one_thread():
        yield
