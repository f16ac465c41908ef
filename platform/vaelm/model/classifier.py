"""A document classifier on the VAE's posterior mean mu(x): a linear or MLP head on a copy of the encoder."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from vaelm.model.vae import Encoder, TextVAE


class LatentClassifier(nn.Module):
    """logits = head(mu(x)). With freeze_encoder the encoder is a fixed feature extractor (eval mode, no
    gradients); without, it is fine-tuned with the head."""

    def __init__(
        self,
        encoder: Encoder,
        *,
        num_labels: int,
        hidden_dim: int = 0,
        dropout: float = 0.1,
        freeze_encoder: bool = True,
    ) -> None:
        super().__init__()
        if num_labels < 2:
            raise ValueError(f"num_labels={num_labels}: a classifier needs at least 2 labels")
        self.encoder = encoder
        self.freeze_encoder = freeze_encoder
        self.hidden_dim = hidden_dim
        self.num_labels = num_labels
        self.head = _head(encoder.cfg.latent_dim, hidden_dim, num_labels, dropout)
        self.encoder.requires_grad_(not freeze_encoder)

    @classmethod
    def from_vae(
        cls,
        vae: TextVAE,
        *,
        num_labels: int,
        hidden_dim: int = 0,
        dropout: float = 0.1,
        freeze_encoder: bool = True,
    ) -> LatentClassifier:
        """A classifier on a copy of `vae`'s encoder (the VAE itself is left untouched)."""
        if vae.encoder is None:
            raise ValueError("a model in lm mode has no encoder to classify with; train with model.mode: vae")
        encoder = copy.deepcopy(vae.encoder)
        return cls(
            encoder,
            num_labels=num_labels,
            hidden_dim=hidden_dim,
            dropout=dropout,
            freeze_encoder=freeze_encoder,
        )

    def train(self, mode: bool = True) -> LatentClassifier:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()  # fixed features: no dropout, BN running statistics
        return self

    def features(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """mu(x): (B, Z)."""
        if self.freeze_encoder:
            with torch.no_grad():
                return self.encoder(tokens, lengths)[0]
        return self.encoder(tokens, lengths)[0]

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return self.head(self.features(tokens, lengths))  # (B, num_labels)

    @torch.no_grad()
    def predict_proba(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Class probabilities (B, num_labels), in eval mode (restored afterwards)."""
        was_training = self.training
        self.eval()
        try:
            return self(tokens, lengths).float().softmax(dim=-1)
        finally:
            self.train(was_training)

    def head_config(self) -> dict[str, int | bool]:
        return {
            "num_labels": self.num_labels,
            "hidden_dim": self.hidden_dim,
            "freeze_encoder": self.freeze_encoder,
        }


def _head(latent_dim: int, hidden_dim: int, num_labels: int, dropout: float) -> nn.Module:
    if hidden_dim <= 0:
        return nn.Sequential(nn.Dropout(dropout), nn.Linear(latent_dim, num_labels))
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(latent_dim, hidden_dim),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden_dim, num_labels),
    )
