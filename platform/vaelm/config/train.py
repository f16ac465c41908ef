"""The `train` job spec: the VAE language model trained data-parallel with Ray Train."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from vaelm.config.base import SpecModel
from vaelm.config.common import RayConfig, StorageConfig
from vaelm.config.model import LossConfig, ModelConfig


class ModelSpec(ModelConfig):
    """ModelConfig as a spec writes it: vocab_size and max_tokens default to the dataset's."""

    vocab_size: int | None = None  # type: ignore[assignment]
    """Number of token ids; empty = the dataset tokenizer's vocabulary size (the usual choice)."""
    max_tokens: int | None = None  # type: ignore[assignment]
    """Longest sequence incl. <bos>/<eos>; empty = the dataset's tokenize.max_tokens."""

    @field_validator("embed_dim", "hidden_dim", "num_layers", "latent_dim", "max_tokens")
    @classmethod
    def _positive(cls, value: int | None, info: ValidationInfo) -> int | None:  # type: ignore[override]
        return None if value is None else ModelConfig._positive(value, info)

    @field_validator("vocab_size")
    @classmethod
    def _vocab(cls, value: int | None) -> int | None:  # type: ignore[override]
        if value is not None and value < 5:
            raise ValueError(
                "must be at least 5 (4 special tokens and one real one); leave it empty to use the tokenizer's"
            )
        return value


class LoopConfig(SpecModel):
    """The training loop: workers, optimiser, schedule, validation and checkpoints."""

    num_workers: int = Field(default=2, ge=1)
    """Data-parallel Ray Train workers (one process each, DDP)."""
    use_gpu: bool = False
    """One GPU per worker (bf16 autocast, cuDNN LSTM); false trains on CPU."""
    cpus_per_worker: float = Field(default=1.0, gt=0)
    """CPUs reserved by each worker; torch uses as many threads."""
    epochs: int = Field(default=1, ge=1)
    """Passes over the training split."""
    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimiser steps in total (empty = epochs decide)."""
    batch_size: int = Field(default=64, ge=1)
    """Documents per batch per worker."""
    bucket_batches: int = Field(default=20, ge=1)
    """Batches' worth of documents sorted by length together, so a batch holds similar lengths (less padding)."""
    shuffle: Literal["global", "blocks", "none"] = "global"
    """Order of the documents. global: a full shuffle of train/ and val/ before training (Ray Data
    random_shuffle with the seed; right while a split fits the object store). blocks: shuffle the order of
    blocks and mix documents in a local buffer of bucket_batches x 4 batches (cheap at any size, less
    thorough). none: the order of the shards, which preprocess writes grouped by source file, so training
    sees one source after another and validation takes the first source only. Ray Data streams blocks as
    they are ready, so the order can differ between runs even with the same seed."""
    optimizer: Literal["adam", "adamw", "rmsprop"] = "adam"
    """Optimiser."""
    lr: float = Field(default=1e-3, gt=0, le=1.0)
    """Learning rate; 1e-3 suits Adam on this model."""
    weight_decay: float = Field(default=0.0, ge=0)
    """Weight decay (decoupled for adamw)."""
    grad_clip: float | None = Field(default=5.0, gt=0)
    """Clip the gradient's global norm to this; empty = no clipping."""
    seed: int = 0
    """Seed of weights, shuffling, word dropout and z samples (each worker offsets it by its rank)."""
    eval_every: int = Field(default=200, ge=1)
    """Validate and checkpoint every this many steps (and at each epoch's end)."""
    val_docs: int = Field(default=2000, ge=1)
    """Validation documents used at each validation: the first of val/ in the order `shuffle` gives (with
    global, a random sample drawn once per run, the same at every validation of that run)."""
    keep_checkpoints: int = Field(default=2, ge=1)
    """Checkpoints kept: the best by validation ELBO (the latest is kept for resume as well)."""
    max_failures: int = Field(default=2, ge=0)
    """Worker-group restarts from the latest checkpoint after a worker dies, before the job fails."""
    final_iw_samples: int = Field(default=50, ge=0)
    """Importance samples K for the final IW-NLL of the exported model (0 = skip)."""
    final_eval_docs: int = Field(default=500, ge=1)
    """Validation documents for the final evaluation, a fixed seeded sample of val/ (IW-NLL is costly: K
    forward passes per document)."""


class TrainSpec(SpecModel):
    """Train the VAE (or the LSTM-LM baseline, model.mode: lm) on a preprocessed dataset."""

    job: Literal["train"] = "train"
    """Which job this spec runs."""
    dataset: str = Field(min_length=1)
    """The preprocessed dataset (directory or s3:// prefix written by `vaelm preprocess`)."""
    output: str = Field(min_length=1)
    """Where the model artifact goes (config.json, model.safetensors, tokenizer.json, metrics.json)."""
    run_dir: str | None = None
    """Where checkpoints and Ray Train state go (local or s3://); empty = <output>/_run."""
    run_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]+$")
    """Name of the Ray Train run under run_dir; empty = derived from the spec, so a changed spec starts a new
    run. Set it to continue a run's checkpoints with changed loop settings (the architecture must match)."""
    storage: StorageConfig = Field(default_factory=StorageConfig)
    """S3 endpoint and credentials."""
    ray: RayConfig = Field(default_factory=RayConfig)
    """How the job uses Ray."""
    model: ModelSpec = Field(default_factory=ModelSpec)
    """The model's architecture."""
    loss: LossConfig = Field(default_factory=LossConfig)
    """The loss and its remedies against posterior collapse."""
    train: LoopConfig = Field(default_factory=LoopConfig)
    """The training loop."""

    def run_root(self) -> str:
        return self.run_dir or f"{self.output.rstrip('/')}/_run"
