"""The text VAE: embedding -> LSTM encoder -> (mu, log sigma^2) -> z -> LSTM decoder -> vocabulary.

Shapes: B batch, T sequence length, E embedding, H hidden, L layers, D encoder directions, Z latent,
V vocabulary. Each token row is [<bos>, w1 .. wn, <eos>, <pad> ...]; the decoder reads tokens[:, :-1]
and predicts tokens[:, 1:]; pad targets are not counted, the <eos> target is.

Single-device code: no device moves, no DDP, no autocast in here; the pipeline applies them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from vaelm.config.model import ModelConfig

PAD, BOS, EOS, UNK = 0, 1, 2, 3
NUM_SPECIALS = 4

LSTMState = tuple[Tensor, Tensor]  # (h, c), each (L, B, H)


@dataclass(frozen=True)
class VAEOutput:
    logits: Tensor  # (B, T-1, V)
    mu: Tensor  # (B, Z); (B, 0) in lm mode
    logvar: Tensor  # (B, Z)
    z: Tensor  # (B, Z)
    bow_logits: Tensor | None = None  # (B, V) with model.bow_head


@dataclass(frozen=True)
class LossTerms:
    loss: Tensor  # scalar to minimise: mean over documents of rec + beta * KL (free bits applied)
    rec: Tensor  # scalar: reconstruction NLL per document (nats), detached
    kl: Tensor  # scalar: KL(q(z|x) || N(0, I)) per document, without free bits, detached
    kl_per_dim: Tensor  # (Z,) batch mean KL of each latent dimension, detached
    rec_per_token: Tensor  # scalar: total reconstruction NLL / target tokens
    nll_per_token: Tensor  # scalar: total (rec + KL) / target tokens: log of the ELBO perplexity
    n_docs: int
    n_tokens: int
    bow: Tensor | None = None  # scalar: bag-of-words NLL per document (with a bow head), detached


def _embedding(cfg: ModelConfig) -> nn.Embedding:
    emb = nn.Embedding(cfg.vocab_size, cfg.embed_dim, padding_idx=PAD)
    nn.init.uniform_(emb.weight, -0.1, 0.1)
    with torch.no_grad():
        emb.weight[PAD].zero_()
    return emb


class Encoder(nn.Module):
    """q(z|x): tokens -> (mu, logvar)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        directions = 2 if cfg.bidirectional_encoder else 1
        self.embed = _embedding(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.lstm = nn.LSTM(
            cfg.embed_dim,
            cfg.hidden_dim,
            num_layers=cfg.num_layers,
            batch_first=True,
            bidirectional=cfg.bidirectional_encoder,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.to_mu = nn.Linear(directions * cfg.hidden_dim, cfg.latent_dim)
        self.to_logvar = nn.Linear(directions * cfg.hidden_dim, cfg.latent_dim)
        # BN-VAE: mu = gamma * (mu - batch mean) / batch std + shift, gamma fixed, shift learnt
        self.bn_gamma = cfg.bn_gamma or 0.0
        self.mu_bn = nn.BatchNorm1d(cfg.latent_dim, affine=False) if cfg.bn_gamma else None
        self.mu_shift = nn.Parameter(torch.zeros(cfg.latent_dim)) if cfg.bn_gamma else None

    def forward(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        x = self.drop(self.embed(tokens))  # (B, T, E)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, (h_n, _) = self.lstm(packed)  # h_n: (L*D, B, H)
        h = self._mean(outputs, lengths) if self.cfg.encoder_pooling == "mean" else self._last(h_n)  # (B, D*H)
        mu, logvar = self.to_mu(h), self.to_logvar(h)  # (B, Z), (B, Z)
        if self.mu_bn is not None and self.mu_shift is not None:
            mu = self.bn_gamma * self.mu_bn(mu) + self.mu_shift  # (B, Z)
        return mu, logvar

    def _last(self, h_n: Tensor) -> Tensor:
        """Final state of each direction of the top layer: (L*D, B, H) -> (B, D*H)."""
        L, B, H = self.cfg.num_layers, h_n.size(1), self.cfg.hidden_dim
        h_top = h_n.view(L, -1, B, H)[-1]  # (D, B, H)
        return h_top.transpose(0, 1).reshape(B, -1)

    @staticmethod
    def _mean(outputs: nn.utils.rnn.PackedSequence, lengths: Tensor) -> Tensor:
        """Top-layer outputs averaged over each document's tokens: packed (B, T, D*H) -> (B, D*H)."""
        padded, _ = pad_packed_sequence(outputs, batch_first=True)  # (B, T', D*H), zeros past each length
        return padded.sum(dim=1) / lengths.to(padded.device, padded.dtype).clamp(min=1).unsqueeze(1)


class Decoder(nn.Module):
    """p(x|z): an LSTM LM whose initial state is a map of z and whose every input step is [embedding; z]."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.z_dim = cfg.latent_dim if cfg.mode == "vae" else 0
        self.embed = _embedding(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        self.lstm = nn.LSTM(
            cfg.embed_dim + self.z_dim,
            cfg.hidden_dim,
            num_layers=cfg.num_layers,
            batch_first=True,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        self.z_to_state = nn.Linear(self.z_dim, cfg.num_layers * cfg.hidden_dim) if self.z_dim else None
        self.out = nn.Linear(cfg.hidden_dim, cfg.vocab_size)

    def initial_state(self, z: Tensor) -> LSTMState | None:
        if self.z_to_state is None:
            return None  # lm mode: zero state
        c0 = self.z_to_state(z)  # (B, L*H)
        c0 = c0.view(-1, self.cfg.num_layers, self.cfg.hidden_dim).transpose(0, 1).contiguous()  # (L, B, H)
        return torch.tanh(c0), c0  # h0 = tanh(c0), as in He et al. 2019

    def forward(self, inputs: Tensor, z: Tensor, state: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        B, T = inputs.shape
        x = self.drop(self.embed(inputs))  # (B, T, E)
        if self.z_dim:
            x = torch.cat([x, z.unsqueeze(1).expand(B, T, self.z_dim)], dim=-1)  # (B, T, E+Z)
        if state is None:
            state = self.initial_state(z)
        h, new_state = self.lstm(x, state)  # (B, T, H)
        return self.out(self.drop(h)), new_state  # (B, T, V)


class TextVAE(nn.Module):
    """The VAE language model; in `mode: lm` the encoder is absent and z has size 0."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg) if cfg.mode == "vae" else None
        self.decoder = Decoder(cfg)
        self.bow = nn.Linear(cfg.latent_dim, cfg.vocab_size) if cfg.bow_head else None  # training only

    @property
    def z_dim(self) -> int:
        return self.decoder.z_dim

    def encode(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T) tokens, (B,) lengths (non-pad tokens) -> mu, logvar, each (B, Z)."""
        if self.encoder is None:
            empty = tokens.new_zeros((tokens.size(0), 0), dtype=torch.float32)  # (B, 0)
            return empty, empty
        return self.encoder(tokens, lengths)

    def decode(self, inputs: Tensor, z: Tensor | None, state: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        """(B, T) inputs, z (B, Z) -> logits (B, T, V) and the LSTM state, to continue step by step."""
        if z is None:
            z = inputs.new_zeros((inputs.size(0), 0), dtype=torch.float32)  # (B, 0)
        return self.decoder(inputs, z, state)

    def forward(
        self,
        tokens: Tensor,
        lengths: Tensor,
        *,
        word_dropout_rate: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> VAEOutput:
        mu, logvar = self.encode(tokens, lengths)  # (B, Z), (B, Z)
        eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype, device=mu.device)
        z = mu + eps * (0.5 * logvar).exp()  # reparameterisation, (B, Z)
        inputs = tokens[:, :-1]  # (B, T-1)
        if self.training and word_dropout_rate > 0.0:
            inputs = word_dropout(inputs, word_dropout_rate, generator=generator)
        logits, _ = self.decode(inputs, z)  # (B, T-1, V)
        bow_logits = self.bow(z) if self.bow is not None else None  # (B, V)
        return VAEOutput(logits=logits, mu=mu, logvar=logvar, z=z, bow_logits=bow_logits)


def word_dropout(inputs: Tensor, rate: float, *, generator: torch.Generator | None = None) -> Tensor:
    """Replace non-special decoder input tokens with <unk> with probability `rate`."""
    u = torch.rand(inputs.shape, generator=generator, device=inputs.device)  # (B, T)
    drop = (u < rate) & (inputs >= NUM_SPECIALS)
    return inputs.masked_fill(drop, UNK)


def reconstruction_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """Summed NLL of the non-pad targets of each document: (B, T, V), (B, T) -> (B,)."""
    B, T, V = logits.shape
    nll = F.cross_entropy(logits.float().reshape(B * T, V), targets.reshape(B * T), reduction="none")
    return nll.view(B, T).masked_fill(targets == PAD, 0.0).sum(dim=1)  # (B,)


def bag_of_words_nll(bow_logits: Tensor, targets: Tensor) -> Tensor:
    """Summed NLL of each document's word tokens (specials not counted) under one distribution over the
    vocabulary, order ignored: (B, V), (B, T) -> (B,)."""
    logp = F.log_softmax(bow_logits.float(), dim=-1)  # (B, V)
    words = (targets >= NUM_SPECIALS).to(logp.dtype)  # (B, T)
    return -(logp.gather(1, targets) * words).sum(dim=1)


def kl_divergence(mu: Tensor, logvar: Tensor) -> Tensor:
    """Closed-form KL(N(mu, sigma^2) || N(0, 1)) per dimension: (B, Z) -> (B, Z)."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0)


def vae_loss(
    out: VAEOutput, targets: Tensor, *, beta: float, free_bits: float = 0.0, bow_weight: float = 1.0
) -> LossTerms:
    """Mean over documents of rec + beta * KL (+ bow_weight * bag-of-words NLL with a bow head); free bits
    floor each dimension's batch-mean KL."""
    rec = reconstruction_nll(out.logits, targets)  # (B,)
    kl = kl_divergence(out.mu, out.logvar)  # (B, Z)
    kl_per_dim = kl.mean(dim=0)  # (Z,)
    kl_term = kl_per_dim.clamp(min=free_bits).sum() if free_bits > 0 else kl_per_dim.sum()
    n_tokens = int((targets != PAD).sum())
    total_kl = kl.sum()
    loss = rec.mean() + beta * kl_term
    bow = bag_of_words_nll(out.bow_logits, targets).mean() if out.bow_logits is not None else None
    if bow is not None:
        loss = loss + bow_weight * bow
    return LossTerms(
        loss=loss,
        rec=rec.mean().detach(),
        kl=kl.sum(dim=1).mean().detach(),
        kl_per_dim=kl_per_dim.detach(),
        rec_per_token=(rec.sum() / max(n_tokens, 1)).detach(),
        nll_per_token=((rec.sum() + total_kl) / max(n_tokens, 1)).detach(),
        n_docs=targets.size(0),
        n_tokens=n_tokens,
        bow=None if bow is None else bow.detach(),
    )
