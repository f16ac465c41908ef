"""Specs of the VAE language model (`ModelConfig`) and of its training loss (`LossConfig`).

Default recipe against posterior collapse on short texts (Chinese product reviews, ~10-40 tokens,
where an LSTM decoder predicts the next character well without z and the KL term is quickly
driven to zero):

- BN-VAE (Zhu et al. 2020), `ModelConfig.bn_gamma=0.5`: batch norm on mu with a fixed scale gamma
  keeps the batch variance of every mu dimension at gamma^2, so the expected KL is at least
  latent_dim * gamma^2 / 2 = 32 * 0.25 / 2 = 4 nats and all 32 units stay active, whatever the
  decoder does. Zhu et al. report gamma 0.5-0.7 as robust; 0.5 is the smallest that clears the
  3-nat target of the benchmark with a margin and costs the least reconstruction.
- Free bits (Kingma et al. 2016), `LossConfig.free_bits=0.15` nats per dimension (batch mean): no
  KL pressure below 4.8 nats in total, so useful dimensions are not squeezed towards the BN floor;
  it is also the guard that remains when BN-VAE is switched off.
- Cyclical beta annealing (Fu et al. 2019), 4 cycles of 400 steps, half of each rising: the
  encoder is re-trained with beta near 0 several times early on, then beta stays at beta_max.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ValidationInfo, field_validator, model_validator

from vaelm.config.base import SpecModel

_REFERENCE = {"embed_dim": 256, "hidden_dim": 128, "num_layers": 2, "latent_dim": 32, "max_tokens": 128}


class ModelConfig(SpecModel):
    """Architecture of the text VAE (and of its LSTM language-model baseline, `mode: lm`)."""

    vocab_size: int
    """Number of token ids, specials included (<pad>=0, <bos>=1, <eos>=2, <unk>=3); from the tokenizer."""
    embed_dim: int = 256
    """Width of the token embeddings (encoder and decoder each have their own table)."""
    hidden_dim: int = 128
    """Hidden size of the encoder and decoder LSTMs (per direction for a bidirectional encoder)."""
    num_layers: int = 2
    """Stacked LSTM layers in the encoder and in the decoder."""
    latent_dim: int = 32
    """Size of the latent vector z. Ignored in `mode: lm`, which has no z."""
    bidirectional_encoder: bool = True
    """Read the document in both directions; the final states of both feed the mu / log-variance heads."""
    encoder_pooling: Literal["last", "mean"] = "last"
    """What of the encoder LSTM feeds the mu / log-variance heads. last: the final state of each direction
    of the top layer. mean: the top layer's outputs averaged over the document's tokens, so every position
    contributes directly (better document codes for classification and retrieval, bench/sentiment_bench)."""
    dropout: float = 0.2
    """Dropout on embeddings, between LSTM layers and before the output projection (training only)."""
    max_tokens: int = 128
    """Longest sequence, <bos> and <eos> included; decoding stops after max_tokens - 1 generated tokens."""
    mode: Literal["vae", "lm"] = "vae"
    """vae: the variational autoencoder. lm: the same decoder without z, the language-model baseline."""
    bn_gamma: float | None = 0.5
    """BN-VAE (Zhu et al. 2020): batch-norm mu with this fixed scale, so the expected KL is at least
    latent_dim * gamma^2 / 2 nats; null switches it off. Part of the architecture (it also acts at
    inference), hence here and not in LossConfig."""
    bow_head: bool = False
    """Bag-of-words head (Zhao et al. 2017): a linear map z -> vocabulary trained to predict every token of
    the document regardless of order (loss.bow_weight). The decoder cannot do that task for z, so z must
    carry the document's content; used only in training. vae mode only."""

    @model_validator(mode="after")
    def _bow_needs_z(self) -> ModelConfig:
        if self.bow_head and self.mode != "vae":
            raise ValueError("bow_head: true needs mode: vae (it predicts the document's words from z)")
        return self

    @field_validator("vocab_size")
    @classmethod
    def _vocab(cls, value: int) -> int:
        if value < 5:
            raise ValueError("must be at least 5 (4 special tokens and one real one); take it from the tokenizer")
        return value

    @field_validator("embed_dim", "hidden_dim", "num_layers", "latent_dim", "max_tokens")
    @classmethod
    def _positive(cls, value: int, info: ValidationInfo) -> int:
        name = info.field_name or ""
        minimum = 3 if name == "max_tokens" else 1
        if value < minimum:
            raise ValueError(f"must be at least {minimum}; the reference design uses {_REFERENCE[name]}")
        return value

    @field_validator("dropout")
    @classmethod
    def _dropout(cls, value: float) -> float:
        if not 0.0 <= value < 1.0:
            raise ValueError("must be in [0, 1); 0.2 is the default, 0 switches dropout off")
        return value

    @field_validator("bn_gamma")
    @classmethod
    def _gamma(cls, value: float | None) -> float | None:
        if value is not None and value <= 0.0:
            raise ValueError("must be positive or null; 0.5-0.7 is the usual range, null switches BN-VAE off")
        return value


class LossConfig(SpecModel):
    """Training objective: reconstruction NLL + beta * KL, with the remedies against posterior collapse."""

    beta_max: float = 1.0
    """Weight of the KL term once annealing is over; 1.0 gives the true ELBO."""
    kl_anneal: Literal["none", "linear", "cyclical"] = "cyclical"
    """How beta rises to beta_max: none (constant), linear (Bowman et al. 2016), cyclical (Fu et al. 2019)."""
    anneal_steps: int = 400
    """linear: steps from 0 to beta_max. cyclical: length of one cycle in optimizer steps."""
    cycles: int = 4
    """cyclical: number of cycles; after cycles * anneal_steps steps beta stays at beta_max."""
    cycle_ratio: float = 0.5
    """cyclical: fraction of each cycle during which beta rises linearly; the rest holds beta_max."""
    word_dropout: float = 0.0
    """Probability of replacing a decoder input token with <unk> in training (Bowman et al. 2016); 0 = off."""
    free_bits: float = 0.15
    """Per-dimension KL floor in nats (batch mean, Kingma et al. 2016): no KL pressure below it; 0 = off."""
    bow_weight: float = 1.0
    """Weight of the bag-of-words NLL (summed over the document's tokens) added to the loss; used only with
    model.bow_head. 1 follows Zhao et al. 2017; larger values push more of the content into z."""

    @field_validator("beta_max", "free_bits", "bow_weight")
    @classmethod
    def _non_negative(cls, value: float) -> float:
        if value < 0.0:
            raise ValueError("must not be negative; use 0 to switch it off")
        return value

    @field_validator("anneal_steps", "cycles")
    @classmethod
    def _at_least_one(cls, value: int) -> int:
        if value < 1:
            raise ValueError("must be at least 1; use kl_anneal: none for no annealing")
        return value

    @field_validator("cycle_ratio")
    @classmethod
    def _ratio(cls, value: float) -> float:
        if not 0.0 < value <= 1.0:
            raise ValueError("must be in (0, 1]; Fu et al. use 0.5")
        return value

    @field_validator("word_dropout")
    @classmethod
    def _rate(cls, value: float) -> float:
        if not 0.0 <= value < 1.0:
            raise ValueError("must be in [0, 1); 0 switches word dropout off, 0.25 is a common choice")
        return value
