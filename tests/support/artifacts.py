"""Tiny model artifacts for tests: an untrained TextVAE with a real tokenizer, written like `vaelm train` does."""

from __future__ import annotations

import functools

import torch

from tests.support.corpus import make_docs
from vaelm import storage
from vaelm.config.model import ModelConfig
from vaelm.model.artifact import artifact_files
from vaelm.model.classifier import LatentClassifier
from vaelm.model.vae import TextVAE
from vaelm.text.tokenizer import tokenizer_to_json, train_tokenizer


@functools.cache
def tiny_tokenizer_json() -> str:
    return tokenizer_to_json(train_tokenizer(make_docs(300, seed=11), vocab_size=400, min_frequency=1))


def tiny_vae(*, seed: int = 0, max_tokens: int = 32, latent_dim: int = 4) -> tuple[TextVAE, ModelConfig]:
    tok_json = tiny_tokenizer_json()
    from vaelm.text.tokenizer import tokenizer_from_json

    vocab = tokenizer_from_json(tok_json).get_vocab_size()
    cfg = ModelConfig(
        vocab_size=vocab, embed_dim=16, hidden_dim=16, num_layers=1, latent_dim=latent_dim, max_tokens=max_tokens
    )
    torch.manual_seed(seed)
    return TextVAE(cfg).eval(), cfg


def write_artifact(uri: str, *, labels: list[str] | None = None, seed: int = 0, max_tokens: int = 32) -> str:
    """Write an artifact at `uri` (local or s3://); with `labels`, an untrained classifier head too."""
    model, cfg = tiny_vae(seed=seed, max_tokens=max_tokens)
    clf = LatentClassifier.from_vae(model, num_labels=len(labels)) if labels else None
    files = artifact_files(
        model=model,
        model_config=cfg,
        tokenizer_json=tiny_tokenizer_json(),
        metrics={},
        provenance={"test": True},
        classifier=clf,
        labels=labels,
    )
    root = storage.open_location(uri)
    for name, blob in files.items():
        storage.write_bytes(root.join(name), blob)
    return uri
