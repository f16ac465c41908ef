"""Load a job spec from YAML, apply `--set key=value` overrides, and validate it into its typed class.

The spec's `job:` field picks the class. Errors name the file, the key, the value and the fix.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from vaelm.config.base import SpecModel, describe_validation_error, spec_hash
from vaelm.errors import SpecError

# job name -> "module:Class" (imported on use, so a job's heavy imports stay out of the others)
SPEC_CLASSES: dict[str, str] = {
    "preprocess": "vaelm.config.preprocess:PreprocessSpec",
    "train": "vaelm.config.train:TrainSpec",
    "generate": "vaelm.config.batch:GenerateSpec",
    "train-classifier": "vaelm.config.batch:TrainClassifierSpec",
    "classify": "vaelm.config.batch:ClassifySpec",
    "embed": "vaelm.config.batch:EmbedSpec",
    "score": "vaelm.config.batch:ScoreSpec",
    "demo": "vaelm.config.demo:DemoSpec",
}

# sections that say how to run, not what to compute: left out of the spec's identity hash
EXECUTION_SECTIONS = ("ray", "storage")


def spec_class(job: str) -> type[SpecModel]:
    target = SPEC_CLASSES.get(job)
    if target is None:
        raise SpecError(f"job: '{job}' is not a vaelm job; use one of {sorted(SPEC_CLASSES)}")
    module, _, name = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"job '{job}' is not available in this version of vaelm ({exc})") from None
    return cls


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec file {p} does not exist; pass the path of a YAML job spec (see jobs/)")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SpecError(f"{p} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{p}: a spec is a YAML mapping with a 'job:' key, found {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides; the value is parsed as YAML (so 3 is an int, [a, b] a list)."""
    out = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set {item!r}: write --set key.path=value, e.g. --set train.epochs=2")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_path(out, key.strip().split("."), value, item)
    return out


def _set_path(data: dict[str, Any], parts: list[str], value: Any, item: str) -> None:
    node = data
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise SpecError(f"--set {item!r}: '{part}' holds {child!r}, not a section")
        node = child
    node[parts[-1]] = value


def _deep_copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def parse_spec(data: dict[str, Any], *, where: str, job: str | None = None) -> SpecModel:
    """Validate a plain dict into its job's spec class (`job` fills a missing `job:` key)."""
    data = dict(data)
    if job is not None:
        found = data.setdefault("job", job)
        if found != job:
            raise SpecError(f"{where}: this spec is for job '{found}', not '{job}'; run `vaelm run {where}`")
    if "job" not in data:
        raise SpecError(f"{where}: missing key 'job'; add e.g. `job: preprocess` (one of {sorted(SPEC_CLASSES)})")
    cls = spec_class(str(data["job"]))
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise SpecError(describe_validation_error(exc, where=where)) from None


def load_spec(path: str | Path, *, overrides: list[str] | None = None, job: str | None = None) -> SpecModel:
    data = apply_overrides(read_yaml(path), overrides or [])
    return parse_spec(data, where=str(path), job=job)


def public_dict(spec: SpecModel) -> dict[str, Any]:
    """The resolved spec as JSON-able data with secrets masked (safe for manifests and logs)."""
    return spec.model_dump(mode="json")


def identity_hash(spec: SpecModel) -> str:
    """Hash of what the job computes (execution-only sections left out): same hash = same output."""
    data = {k: v for k, v in public_dict(spec).items() if k not in EXECUTION_SECTIONS}
    return spec_hash(data)
