"""The `preprocess` job spec."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vaelm.config.base import SpecModel
from vaelm.config.common import InputConfig, RayConfig, StorageConfig
from vaelm.config.text import DedupConfig, FilterConfig, NormalizeConfig, TokenizeConfig, TokenizerConfig


class PreprocessSpec(SpecModel):
    """Normalise, filter, deduplicate, train a tokenizer, tokenize and split a Parquet corpus."""

    job: Literal["preprocess"] = "preprocess"
    """Which job this spec runs."""
    input: InputConfig
    """The input corpus."""
    output: str = Field(min_length=1)
    """Directory or s3:// prefix of the preprocessed dataset (train/, val/, rejects/, manifest.json)."""
    storage: StorageConfig = Field(default_factory=StorageConfig)
    """S3 endpoint and credentials (local paths need none)."""
    ray: RayConfig = Field(default_factory=RayConfig)
    """How the job uses Ray."""
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    """Unicode normalisation and clean-up."""
    filters: FilterConfig = Field(default_factory=FilterConfig)
    """Noise filters, each with a named drop reason."""
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    """Exact and near-duplicate removal across the whole corpus."""
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    """Train a byte-level BPE tokenizer, or load a given one."""
    tokenize: TokenizeConfig = Field(default_factory=TokenizeConfig)
    """Tokenisation, long documents and the train/validation split."""
    excerpt_chars: int = Field(default=200, ge=0)
    """Characters of each rejected document kept in rejects/ as an excerpt."""
