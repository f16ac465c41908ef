"""The model artifact as in-memory files (name -> bytes); the pipeline stores them. Never unpickles.

config.json             architecture (ModelConfig), classifier head, training provenance
model.safetensors       TextVAE weights
tokenizer.json          the Hugging Face tokenizer, verbatim
metrics.json            validation / test metrics (optional when loading)
classifier.safetensors  LatentClassifier weights (head only when its encoder was frozen)
labels.json             the classifier's label names, index = class id
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from vaelm.config.base import describe_validation_error
from vaelm.config.model import ModelConfig
from vaelm.errors import InputError
from vaelm.model.classifier import LatentClassifier
from vaelm.model.vae import TextVAE

FORMAT = "vaelm-model"
FORMAT_VERSION = 1
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json")
IDENTITY_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "classifier.safetensors",
    "labels.json",
)
RESUME_FREE_FIELDS = frozenset({"dropout", "max_tokens"})  # may change when resuming


@dataclass(frozen=True)
class Artifact:
    model: TextVAE  # in eval mode
    config: ModelConfig
    tokenizer_json: str
    metrics: dict[str, Any]
    provenance: dict[str, Any]
    classifier: LatentClassifier | None
    labels: list[str] | None
    model_id: str


def _json_bytes(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False).encode()


def _weights(module: nn.Module, *, prefix: str = "") -> bytes:
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items() if k.startswith(prefix)}
    return st_save(state, metadata={"format": "pt"})


def artifact_files(
    *,
    model: TextVAE,
    model_config: ModelConfig,
    tokenizer_json: str,
    metrics: Mapping[str, Any],
    provenance: Mapping[str, Any],
    classifier: LatentClassifier | None = None,
    labels: list[str] | None = None,
) -> dict[str, bytes]:
    """The artifact's files; `model` must be the unwrapped module (not DDP) built from `model_config`."""
    if model.cfg != model_config:
        raise ValueError("model was built from a different ModelConfig than model_config; pass the one it used")
    if (classifier is None) != (labels is None):
        raise ValueError("pass classifier and labels together, or neither")
    if classifier is not None and labels is not None and len(labels) != classifier.num_labels:
        raise ValueError(f"{len(labels)} labels for a classifier with {classifier.num_labels} outputs")
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model_config.model_dump(mode="json"),
        "classifier": classifier.head_config() if classifier is not None else None,
        "provenance": dict(provenance),
    }
    files = {
        "config.json": _json_bytes(config),
        "model.safetensors": _weights(model),
        "tokenizer.json": tokenizer_json.encode(),
        "metrics.json": _json_bytes(dict(metrics)),
    }
    if classifier is not None:
        prefix = "head." if classifier.freeze_encoder else ""
        files["classifier.safetensors"] = _weights(classifier, prefix=prefix)
        files["labels.json"] = _json_bytes(list(labels or []))
    return files


def model_id(files: Mapping[str, bytes]) -> str:
    """Content hash of the files that decide the model's behaviour (not metrics.json): 16 hex digits."""
    digest = hashlib.sha256()
    for name in sorted(n for n in files if n in IDENTITY_FILES):
        data = files[name]
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:16]


def _parse_json(files: Mapping[str, bytes], name: str) -> Any:
    try:
        return json.loads(files[name].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{name} of the model artifact is not valid JSON ({exc}); re-export the artifact") from exc


def _parse_weights(files: Mapping[str, bytes], name: str) -> dict[str, torch.Tensor]:
    try:
        return st_load(bytes(files[name]))
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise InputError(
            f"{name} of the model artifact is not a safetensors file ({exc}); "
            "vaelm never unpickles weights: re-export the artifact with vaelm"
        ) from exc


def _config_of(raw: Any) -> ModelConfig:
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or not isinstance(raw.get("model"), dict):
        raise InputError(f"config.json is not a vaelm model config (needs format '{FORMAT}' and a 'model' section)")
    try:
        return ModelConfig.model_validate(raw["model"])
    except ValidationError as exc:
        raise InputError(describe_validation_error(exc, where="config.json of the model artifact")) from exc


def _shape(t: torch.Tensor | torch.Size) -> str:
    return "x".join(str(d) for d in (t.shape if isinstance(t, torch.Tensor) else t)) or "scalar"


def _mismatch(name: str, key: str, got: torch.Tensor, want: torch.Tensor, cfg: ModelConfig) -> str:
    if key.endswith("embed.weight") or key.startswith("decoder.out."):
        says = f"vocab_size {cfg.vocab_size} and embed_dim {cfg.embed_dim}"
    else:
        says = (
            f"embed_dim {cfg.embed_dim}, hidden_dim {cfg.hidden_dim}, num_layers {cfg.num_layers}, "
            f"latent_dim {cfg.latent_dim}"
        )
    return (
        f"{name} has {key} {_shape(got)} but config.json says {says} (expected {_shape(want)}); "
        "the artifact is inconsistent — re-export it"
    )


def _load_into(
    module: nn.Module, state: dict[str, torch.Tensor], *, name: str, cfg: ModelConfig, prefix: str = ""
) -> None:
    expected = {k: v for k, v in module.state_dict().items() if k.startswith(prefix)}
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise InputError(
            f"{name} does not match config.json: missing tensors {missing[:5]}, unexpected tensors "
            f"{extra[:5]} (config says mode {cfg.mode!r}, bn_gamma {cfg.bn_gamma}, bow_head {cfg.bow_head}); "
            "the artifact is inconsistent — re-export it"
        )
    for key, want in expected.items():
        if state[key].shape != want.shape:
            raise InputError(_mismatch(name, key, state[key], want, cfg))
    module.load_state_dict(state, strict=not prefix)


def _classifier_of(
    files: Mapping[str, bytes], head: Mapping[str, Any], model: TextVAE, cfg: ModelConfig
) -> tuple[LatentClassifier, list[str]]:
    for name in ("classifier.safetensors", "labels.json"):
        if name not in files:
            raise InputError(f"config.json describes a classifier but {name} is missing; re-export the artifact")
    labels = _parse_json(files, "labels.json")
    if not isinstance(labels, list) or len(labels) != head.get("num_labels"):
        raise InputError(f"labels.json must list {head.get('num_labels')} label names; it holds {labels!r:.80}")
    clf = LatentClassifier.from_vae(
        model,
        num_labels=int(head["num_labels"]),
        hidden_dim=int(head.get("hidden_dim", 0)),
        freeze_encoder=bool(head.get("freeze_encoder", True)),
    )
    prefix = "head." if clf.freeze_encoder else ""
    _load_into(
        clf,
        _parse_weights(files, "classifier.safetensors"),
        name="classifier.safetensors",
        cfg=cfg,
        prefix=prefix,
    )
    return clf.eval(), [str(label) for label in labels]


def load_artifact(files: Mapping[str, bytes]) -> Artifact:
    """Rebuild the model (eval mode), tokenizer text, metrics and classifier from the artifact's files."""
    missing = [name for name in REQUIRED if name not in files]
    if missing:
        raise InputError(
            f"the model artifact lacks {', '.join(missing)}; it holds [{', '.join(sorted(files))}]; "
            "point to a directory written by `vaelm train` (config.json, model.safetensors, tokenizer.json)"
        )
    raw = _parse_json(files, "config.json")
    cfg = _config_of(raw)
    model = TextVAE(cfg)
    _load_into(model, _parse_weights(files, "model.safetensors"), name="model.safetensors", cfg=cfg)
    model.eval()
    classifier, labels = None, None
    if raw.get("classifier"):
        classifier, labels = _classifier_of(files, raw["classifier"], model, cfg)
    return Artifact(
        model=model,
        config=cfg,
        tokenizer_json=files["tokenizer.json"].decode(),
        metrics=_parse_json(files, "metrics.json") if "metrics.json" in files else {},
        provenance=dict(raw.get("provenance") or {}),
        classifier=classifier,
        labels=labels,
        model_id=model_id(files),
    )


def check_compatible(
    saved: ModelConfig | Mapping[str, Any], cfg: ModelConfig, *, where: str = "the checkpoint"
) -> None:
    """Raise InputError naming every architecture field where a saved config differs from the spec's."""
    saved_cfg = saved if isinstance(saved, ModelConfig) else _config_of({"format": FORMAT, "model": dict(saved)})
    old, new = saved_cfg.model_dump(), cfg.model_dump()
    diff = [k for k in new if k not in RESUME_FREE_FIELDS and old.get(k) != new[k]]
    if diff:
        was = ", ".join(f"{k}={old.get(k)!r}" for k in diff)
        now = ", ".join(f"{k}={new[k]!r}" for k in diff)
        raise InputError(
            f"{where} was trained with {was} but the spec says {now}; these fields change the weights, so it "
            "cannot be resumed: restore those values in the spec, or train into a new output / run name"
        )
