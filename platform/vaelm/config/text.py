"""Spec sections for the text layer: normalisation, noise filters, deduplication, tokenizer, tokenization.

Each class is one section of a preprocess job spec. The field docstrings are the documentation
(`vaelm explain` and the CLI help read them), and every validator message says the rule and the fix;
`vaelm.config.base.describe_validation_error` adds the key and the value in front of it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator, model_validator

from vaelm.config.base import SpecModel

SCRIPTS = (
    "Arabic",
    "Cyrillic",
    "Devanagari",
    "Greek",
    "Han",
    "Hangul",
    "Hebrew",
    "Hiragana",
    "Katakana",
    "Latin",
    "Thai",
)
"""Script names accepted in `filter.allowed_scripts`; `vaelm.text.filters` maps them to code points."""


def _fraction(value: float | None, *, closed_low: bool, closed_high: bool, hint: str) -> float | None:
    """Check that `value` (if given) lies in the interval the flags describe; `hint` is the fix."""
    if value is None:
        return None
    low_ok = value >= 0.0 if closed_low else value > 0.0
    high_ok = value <= 1.0 if closed_high else value < 1.0
    if not (low_ok and high_ok):
        interval = f"{'[' if closed_low else '('}0, 1{']' if closed_high else ')'}"
        raise ValueError(f"must be in {interval}; {hint}")
    return value


def _at_least(value: int | None, *, low: int, hint: str) -> int | None:
    if value is not None and value < low:
        raise ValueError(f"must be at least {low}; {hint}")
    return value


def _between(value: int, *, low: int, high: int, hint: str) -> int:
    if not low <= value <= high:
        raise ValueError(f"must be between {low} and {high}; {hint}")
    return value


class NormalizeConfig(SpecModel):
    """How each document's text is cleaned before it is filtered, deduplicated and tokenized."""

    form: Literal["NFC", "NFKC", "none"] = "NFC"
    """Unicode normal form. NFC keeps full-width CJK punctuation (，！？) as it is; NFKC folds it to ASCII (,!?)."""
    strip_control: bool = True
    """Remove control characters (Unicode category Cc) other than newline and tab."""
    strip_zero_width: bool = True
    """Remove invisible characters: zero-width space/joiners, word joiner, BOM, soft hyphen, bidi marks."""
    collapse_whitespace: bool = True
    """Turn each run of spaces/tabs into one space, strip every line, keep at most one blank line, strip both ends."""
    invalid_utf8: Literal["replace", "reject"] = "replace"
    """Bytes that are not valid UTF-8: 'replace' them with U+FFFD, or 'reject' the document as invalid_utf8."""


class FilterConfig(SpecModel):
    """Noise filters applied to normalised text; set a threshold to null to turn that filter off."""

    min_chars: int | None = 5
    """Drop documents with fewer characters than this (too_short)."""
    max_chars: int | None = 100_000
    """Drop documents with more characters than this (too_long); checked before every costly filter."""
    max_duplicate_line_fraction: float | None = 0.3
    """Drop documents where more than this fraction of the non-empty lines repeat an earlier line."""
    top_ngram_size: int = 2
    """Character n-gram length for the top n-gram filter (2 to 4; one or two Chinese words)."""
    max_top_ngram_fraction: float | None = 0.4
    """Drop documents where the top character n-gram (seen 3+ times, with a letter or digit) covers more than this
    fraction of the characters (Gopher-style)."""
    duplicate_ngram_size: int = 7
    """Character n-gram length for the duplicated n-gram filter (5 to 10)."""
    max_duplicate_ngram_fraction: float | None = 0.6
    """Drop documents where more than this fraction of characters lie in character n-grams seen twice or more
    (Gopher-style)."""
    max_symbol_ratio: float | None = 0.3
    """Drop documents where more than this fraction of non-space characters are punctuation or symbols (P*, S*)."""
    max_digit_ratio: float | None = 0.3
    """Drop documents where more than this fraction of non-space characters are digits (ASCII or full-width)."""
    allowed_scripts: tuple[str, ...] | None = None
    """Scripts a document's letters should be written in, e.g. [Han, Latin]; null keeps every script."""
    min_allowed_script_fraction: float = 0.8
    """With allowed_scripts: drop documents where fewer than this fraction of letters are in those scripts."""

    @field_validator("min_chars", "max_chars")
    @classmethod
    def _check_chars(cls, v: int | None) -> int | None:
        return _at_least(v, low=1, hint="use null to turn this filter off")

    @field_validator(
        "max_duplicate_line_fraction",
        "max_top_ngram_fraction",
        "max_duplicate_ngram_fraction",
        "max_symbol_ratio",
        "max_digit_ratio",
    )
    @classmethod
    def _check_max_fraction(cls, v: float | None) -> float | None:
        return _fraction(v, closed_low=False, closed_high=False, hint="use null to turn this filter off")

    @field_validator("min_allowed_script_fraction")
    @classmethod
    def _check_script_fraction(cls, v: float) -> float:
        _fraction(v, closed_low=False, closed_high=True, hint="0.8 is a common choice")
        return v

    @field_validator("top_ngram_size")
    @classmethod
    def _check_top_n(cls, v: int) -> int:
        return _between(v, low=2, high=4, hint="2 is a common choice for Chinese")

    @field_validator("duplicate_ngram_size")
    @classmethod
    def _check_dup_n(cls, v: int) -> int:
        return _between(v, low=5, high=10, hint="7 is a common choice for Chinese")

    @field_validator("allowed_scripts")
    @classmethod
    def _check_scripts(cls, v: tuple[str, ...] | None) -> tuple[str, ...] | None:
        unknown = [s for s in v or () if s not in SCRIPTS]
        if unknown:
            raise ValueError(f"unknown script(s) {unknown}; use names from {list(SCRIPTS)}, or null")
        if v is not None and not v:
            raise ValueError("must name at least one script; use null to keep every script")
        return v

    @model_validator(mode="after")
    def _check_range(self) -> FilterConfig:
        if self.min_chars is not None and self.max_chars is not None and self.min_chars > self.max_chars:
            raise ValueError(
                f"min_chars={self.min_chars} is above max_chars={self.max_chars}; lower min_chars or raise max_chars"
            )
        return self


class DedupConfig(SpecModel):
    """Exact and near-duplicate removal (MinHash of character shingles, LSH bands); the lowest-index copy survives."""

    exact: bool = True
    """Drop documents whose normalised text equals an earlier document's."""
    near: bool = True
    """Drop near duplicates found by MinHash LSH."""
    near_threshold: float = 0.8
    """Jaccard similarity of character-shingle sets at or above which two documents count as near duplicates."""
    num_perm: int = 128
    """MinHash permutations (signature length); bands x rows may use at most this many."""
    shingle_size: int = 5
    """Shingle length in characters (works for Chinese, which has no spaces); shorter texts are one shingle."""
    bands: int | None = None
    """LSH bands; null picks bands and rows from near_threshold and num_perm (as datasketch does)."""
    rows: int | None = None
    """LSH rows per band; give it together with bands, or leave both null."""
    seed: int = 1
    """Seed of the MinHash permutations; documents hashed with different seeds cannot be compared."""
    num_shards: int | None = None
    """Number of dedup actors the band keys are spread over; null lets the pipeline decide."""

    @field_validator("near_threshold")
    @classmethod
    def _check_threshold(cls, v: float) -> float:
        _fraction(v, closed_low=False, closed_high=True, hint="0.8 is a common choice")
        return v

    @field_validator("num_perm")
    @classmethod
    def _check_num_perm(cls, v: int) -> int:
        return _between(v, low=2, high=1024, hint="128 is a common choice")

    @field_validator("shingle_size")
    @classmethod
    def _check_shingle(cls, v: int) -> int:
        return _between(v, low=1, high=32, hint="5 characters suits Chinese; 5 to 9 suits English")

    @field_validator("bands", "rows", "num_shards")
    @classmethod
    def _check_positive(cls, v: int | None) -> int | None:
        return _at_least(v, low=1, hint="or null to choose automatically")

    @field_validator("seed")
    @classmethod
    def _check_seed(cls, v: int) -> int:
        return _between(v, low=0, high=2**63 - 1, hint="any non-negative integer; 1 is the default")

    @model_validator(mode="after")
    def _check_bands(self) -> DedupConfig:
        if (self.bands is None) != (self.rows is None):
            raise ValueError(
                f"bands={self.bands} and rows={self.rows}: give both or neither; null picks them from near_threshold"
            )
        if self.bands is not None and self.rows is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(
                f"bands x rows = {self.bands * self.rows} exceeds num_perm={self.num_perm}; "
                "lower bands or rows, or raise num_perm"
            )
        return self


class TokenizerConfig(SpecModel):
    """The byte-level BPE tokenizer: load a given one, or train one on a deterministic sample of the corpus."""

    path: str | None = None
    """A tokenizer.json to load instead of training one (its ids 0-3 must be <pad> <bos> <eos> <unk>)."""
    vocab_size: int = 8000
    """Vocabulary size to train, special tokens and the 256 byte symbols included."""
    min_frequency: int = 2
    """A merge must be seen at least this many times in the training sample."""
    sample_docs: int = 50_000
    """Number of documents the tokenizer is trained on (a deterministic sample of the filtered corpus)."""

    @field_validator("vocab_size")
    @classmethod
    def _check_vocab(cls, v: int) -> int:
        return _between(v, low=300, high=1_000_000, hint="8000 suits a small Chinese corpus")

    @field_validator("min_frequency", "sample_docs")
    @classmethod
    def _check_positive(cls, v: int) -> int:
        _at_least(v, low=1, hint="the defaults are min_frequency=2, sample_docs=50000")
        return v


class TokenizeConfig(SpecModel):
    """How documents become token id sequences, and how they are split into train and validation."""

    max_tokens: int = 128
    """Longest sequence in tokens, <bos> and <eos> included."""
    long_documents: Literal["truncate", "split", "reject"] = "truncate"
    """Documents over max_tokens: keep the start ('truncate'), cut them into consecutive pieces of similar length
    ('split'), or reject them as too_many_tokens ('reject')."""
    min_tokens: int = 3
    """Shortest sequence kept, <bos> and <eos> included; shorter ones are rejected as too_few_tokens."""
    batch_size: int = 512
    """Documents per tokenization batch."""
    val_fraction: float = 0.05
    """Fraction of documents (chosen by a hash of the id) that go to the validation split."""

    @field_validator("max_tokens")
    @classmethod
    def _check_max(cls, v: int) -> int:
        return _between(v, low=3, high=1_000_000, hint="128 suits reviews and news sentences")

    @field_validator("min_tokens")
    @classmethod
    def _check_min(cls, v: int) -> int:
        return _between(v, low=2, high=1_000_000, hint="3 keeps every document with at least one token")

    @field_validator("batch_size")
    @classmethod
    def _check_batch(cls, v: int) -> int:
        return _between(v, low=1, high=1_000_000, hint="512 is a common choice")

    @field_validator("val_fraction")
    @classmethod
    def _check_val(cls, v: float) -> float:
        _fraction(v, closed_low=True, closed_high=False, hint="0.05 is a common choice; 0 means no validation split")
        return v

    @model_validator(mode="after")
    def _check_range(self) -> TokenizeConfig:
        if self.min_tokens > self.max_tokens:
            raise ValueError(
                f"min_tokens={self.min_tokens} is above max_tokens={self.max_tokens}; "
                "lower min_tokens or raise max_tokens"
            )
        return self
