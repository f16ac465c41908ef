"""Specs of the bulk jobs over a model artifact: generate, classify, embed, score, train-classifier.

Every bulk job reads Parquet (`input`), runs the model of `model` (an artifact directory or s3://
prefix written by `vaelm train` or `vaelm train-classifier`) on a pool of Ray actors, and writes
`output`/data/part-NNNNN.parquet, `output`/rejects/, `output`/manifest.json and `output`/_SUCCESS.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vaelm.config.base import SpecModel
from vaelm.config.common import InputConfig, RayConfig, StorageConfig
from vaelm.config.text import NormalizeConfig


class RunConfig(SpecModel):
    """How documents become model inputs, shared by every bulk job."""

    batch_size: int = Field(default=64, ge=1)
    """Documents per forward pass (per actor). Larger is faster until memory runs out."""
    max_tokens: int | None = Field(default=None, ge=3)
    """Longest model input incl. <bos>/<eos>; empty = the model's max_tokens. Longer documents are
    truncated and flagged in the output's `truncated` column."""
    invalid_utf8: Literal["reject", "replace"] = "reject"
    """Text that is not valid UTF-8: reject the row (reason invalid_utf8), or replace bad bytes with U+FFFD."""
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    """Text normalisation applied before tokenizing; keep it as the model's preprocess job had it."""
    excerpt_chars: int = Field(default=200, ge=0)
    """Characters of a rejected document kept in rejects/ to help find it."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Arithmetic of the model: fp32, or bf16 autocast (matmuls and LSTMs in bfloat16, softmax and losses
    in fp32). bf16 is for GPUs and for CPUs with native bfloat16 (AVX512-BF16 or AMX; elsewhere it is
    emulated and slower): sampled generation at batch 256 ran 1.6x faster on such a CPU
    (bench/results/batch.json). Values differ from fp32 in the third significant digit, and a sampled or
    greedy token may flip where two are nearly tied; outputs stay reproducible for the same spec."""


class BatchSpec(SpecModel):
    """Fields every bulk job has."""

    model: str = Field(min_length=1)
    """The model artifact: a directory or s3:// prefix holding config.json, model.safetensors, tokenizer.json."""
    output: str = Field(min_length=1)
    """Where the results go (directory or s3:// prefix); refused if it holds another job's results."""
    storage: StorageConfig = Field(default_factory=StorageConfig)
    """S3 endpoint and credentials."""
    ray: RayConfig = Field(default_factory=RayConfig)
    """How the job uses Ray (actor CPUs, GPUs per actor, pool size)."""
    run: RunConfig = Field(default_factory=RunConfig)
    """Batching, truncation and text handling."""


class InputBatchSpec(BatchSpec):
    input: InputConfig
    """The documents: Parquet files or prefixes, text column, id column, columns to pass through."""


class ClassifyConfig(SpecModel):
    """Options of `vaelm classify`."""

    probabilities: bool = True
    """Write `probabilities` (list<float32>, in the order of manifest.json's `labels`) besides `label`."""


class ClassifySpec(InputBatchSpec):
    """Label every document with the artifact's classifier (written by `vaelm train-classifier`)."""

    job: Literal["classify"] = "classify"
    """Which job this spec runs."""
    classify: ClassifyConfig = Field(default_factory=ClassifyConfig)
    """Classification options."""


class EmbedConfig(SpecModel):
    """Options of `vaelm embed`."""

    include_sigma: bool = False
    """Also write `sigma` = exp(logvar / 2), the posterior standard deviation, as list<float32>."""


class EmbedSpec(InputBatchSpec):
    """Write the posterior mean mu(x) (a latent_dim list<float32>) of every document."""

    job: Literal["embed"] = "embed"
    """Which job this spec runs."""
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    """Embedding options."""


class ScoreConfig(SpecModel):
    """Options of `vaelm score`."""

    iw_samples: int = Field(default=0, ge=0, le=1000)
    """K importance samples for `iw_nll` (a tighter bound than the ELBO; K forward passes per document); 0 = off."""
    seed: int = 0
    """Seed of the z samples; each document's noise comes from (seed, id), so scores do not depend on batching
    (beyond float rounding)."""


class ScoreSpec(InputBatchSpec):
    """Per-document ELBO NLL and per-token NLL (nats), for noise and anomaly filtering."""

    job: Literal["score"] = "score"
    """Which job this spec runs."""
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    """Scoring options."""


class GenerateConfig(SpecModel):
    """What to generate and how to decode."""

    mode: Literal["prior", "reconstruct", "interpolate"] = "prior"
    """prior: num_samples documents from z ~ N(0, I) (no input). reconstruct: encode each input document
    and decode it again (a paraphrase when latent: sample). interpolate: `steps` points from one document
    to another: from each row's text to the same row's `target_column` when that is set, else between
    consecutive rows (rows 1-2, 3-4, ... of each unit; an odd last row is rejected as unpaired)."""
    num_samples: int = Field(default=100, ge=1)
    """prior: how many documents to sample."""
    samples_per_unit: int = Field(default=1000, ge=1)
    """prior: samples per unit of work (the unit of commit and resume)."""
    latent: Literal["mean", "sample"] = "mean"
    """reconstruct/interpolate: decode from mu(x), or from z ~ q(z|x) (a paraphrase)."""
    target_column: str | None = Field(default=None, min_length=1)
    """interpolate: an input column holding each row's target text; every row is interpolated from its
    text (input.text_column) to its target, giving rows id = <input id>#<step>, input_id, step, t (plus
    the passthrough columns). Rows whose target is null, empty or not valid UTF-8 are rejected (reason
    target_null_text, target_empty, target_invalid_utf8). Empty = consecutive pairs (id_a, id_b)."""
    steps: int = Field(default=5, ge=2)
    """interpolate: points from the first document to the second, both ends included."""
    interpolation: Literal["linear", "slerp"] = "linear"
    """interpolate: straight line or spherical path between the two latent codes."""
    strategy: Literal["greedy", "sample", "beam"] = "sample"
    """Decoding: greedy (most likely token), sample (temperature / top_k / top_p), beam (beam_width)."""
    temperature: float = Field(default=1.0, gt=0)
    """sample: divide the logits by this; below 1 is more conservative."""
    top_k: int = Field(default=0, ge=0)
    """sample: keep the k most likely tokens; 0 = off."""
    top_p: float = Field(default=1.0, gt=0, le=1)
    """sample: keep the smallest set of tokens holding this probability mass; 1 = off."""
    beam_width: int = Field(default=4, ge=1)
    """beam: hypotheses kept per document."""
    length_penalty: float = Field(default=0.0, ge=0)
    """beam: score = log-probability / length**length_penalty."""
    max_len: int | None = Field(default=None, ge=1)
    """Most generated tokens per document; empty = the model's max_tokens - 1."""
    batch_size: int = Field(default=256, ge=1)
    """Latent codes decoded together (per actor). Decoding runs token by token, so large batches pay off
    far more than in the other jobs: 128-256 on CPU, more on a GPU. (run.batch_size sets the encoder's
    batch in reconstruct/interpolate.)"""
    seed: int = 0
    """Seed: each output row's randomness (its z, its sampled tokens) comes from (seed, its sample index or
    input id), not from a shared stream, so the same spec gives the same output however its units are
    spread over actors. A different batch_size can change a few tokens (float sums depend on the batch
    shape; a near tie between two tokens can flip), so keep batch_size fixed when output must be identical."""


class GenerateSpec(BatchSpec):
    """Generate text: from the prior, by reconstructing input documents, or by interpolating between them."""

    job: Literal["generate"] = "generate"
    """Which job this spec runs."""
    input: InputConfig | None = None
    """The documents to reconstruct or interpolate; none for mode: prior."""
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    """What to generate and how to decode."""

    @model_validator(mode="after")
    def _input_matches_mode(self) -> GenerateSpec:
        mode = self.generate.mode
        if mode == "prior" and self.input is not None:
            raise ValueError("generate.mode: prior samples from N(0, I) and reads no input; remove `input:`")
        if mode != "prior" and self.input is None:
            raise ValueError(f"generate.mode: {mode} needs `input:` with the documents to encode")
        target = self.generate.target_column
        if target is not None and mode != "interpolate":
            raise ValueError(
                f"generate.target_column={target!r} is only read by mode: interpolate (mode is {mode}); "
                "remove it or set generate.mode: interpolate"
            )
        if target is not None and self.input is not None and target == self.input.text_column:
            raise ValueError(
                f"generate.target_column={target!r} is input.text_column too, so every row would go from its text "
                "to itself; name the column holding each row's target text"
            )
        return self


class ClassifierTrainConfig(SpecModel):
    """The classifier head and its training loop (one process, plain PyTorch)."""

    freeze_encoder: bool = True
    """true: a head on mu(x) with the VAE encoder fixed. false: fine-tune the encoder with the head."""
    hidden_dim: int = Field(default=0, ge=0)
    """Hidden units of an MLP head; 0 = a linear head."""
    dropout: float = Field(default=0.1, ge=0, lt=1)
    """Dropout before the head's layers."""
    epochs: int = Field(default=20, ge=1)
    """Passes over the labelled training documents."""
    batch_size: int = Field(default=64, ge=1)
    """Documents per optimiser step."""
    lr: float = Field(default=3e-3, gt=0, le=1)
    """AdamW learning rate (the encoder gets lr / 10 when fine-tuned)."""
    weight_decay: float = Field(default=1e-4, ge=0)
    """AdamW weight decay."""
    seed: int = 0
    """Seed of the label subsample, the shuffling and the head's initial weights."""
    val_fraction: float = Field(default=0.1, ge=0, lt=1)
    """Share of labelled documents held out (by a hash of the id) for the reported accuracy and macro-F1."""
    label_fraction: float = Field(default=1.0, gt=0, le=1)
    """Keep this seeded random share of the training labels (1.0, 0.1, 0.01 for the label-scarce protocol)."""
    max_labels: int | None = Field(default=None, ge=2)
    """Keep at most this many training labels (after label_fraction); empty = no cap."""
    labels: list[str] | None = None
    """Label names in class-index order; rows with any other label go to rejects/ (reason unknown_label).
    Empty = the sorted distinct values of the label column."""


class TrainClassifierSpec(BatchSpec):
    """Train a classifier on the VAE's encoder from labelled Parquet; write a new artifact holding the
    VAE's files plus classifier.safetensors and labels.json, and rejects/ with every unusable row and its
    reason (null_text, empty, invalid_utf8, null_label, unknown_label)."""

    job: Literal["train-classifier"] = "train-classifier"
    """Which job this spec runs."""
    input: InputConfig
    """Labelled documents: text and label columns (label: string or integer)."""
    classifier: ClassifierTrainConfig = Field(default_factory=ClassifierTrainConfig)
    """The head and its training."""

    @model_validator(mode="after")
    def _needs_label(self) -> TrainClassifierSpec:
        if self.input.label_column is None:
            raise ValueError("input.label_column is empty; name the column holding the labels, e.g. label")
        return self
