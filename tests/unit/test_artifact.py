"""Model artifact: exact round trip, content id, clear errors, resume compatibility."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
import torch

from tests.unit.vae_testlib import (
    DISTINCT_DOCS,
    batch,
    single_thread,  # noqa: F401  (autouse fixture)
    tiny_config,
    tiny_model,
)
from vaelm.errors import InputError
from vaelm.model.artifact import artifact_files, check_compatible, load_artifact, model_id
from vaelm.model.vae import TextVAE

TOKENIZER = '{"model": {"type": "BPE"}, "note": "中文"}'


def _files(model: TextVAE, **extra: object) -> dict[str, bytes]:
    return artifact_files(
        model=model,
        model_config=model.cfg,
        tokenizer_json=TOKENIZER,
        metrics={"iw_nll": 12.5},
        provenance={"run": "t1", "step": 30},
        **extra,  # type: ignore[arg-type]
    )


def _logits(model: TextVAE) -> torch.Tensor:
    tokens, lengths = batch(DISTINCT_DOCS)
    model.eval()
    with torch.no_grad():
        mu, _ = model.encode(tokens, lengths)
        return model.decode(tokens[:, :-1], mu if model.z_dim else None)[0]


@pytest.mark.parametrize("overrides", [{}, {"mode": "lm"}, {"bn_gamma": None, "bidirectional_encoder": False}])
def test_artifact_round_trip_reproduces_logits_exactly(overrides: dict[str, Any]) -> None:
    model = tiny_model(**overrides)
    model.train()
    tokens, lengths = batch(DISTINCT_DOCS)
    model(tokens, lengths)  # moves BatchNorm running statistics away from their initial values
    files = _files(model)
    loaded = load_artifact(files)
    assert torch.equal(_logits(loaded.model), _logits(model))
    assert not loaded.model.training
    assert loaded.config == model.cfg and loaded.tokenizer_json == TOKENIZER
    assert loaded.metrics == {"iw_nll": 12.5} and loaded.provenance == {"run": "t1", "step": 30}
    assert loaded.model_id == model_id(files) and len(loaded.model_id) == 16
    assert loaded.classifier is None and loaded.labels is None


def test_artifact_model_id_follows_weights_not_metrics() -> None:
    model = tiny_model()
    files = _files(model)
    assert model_id({**files, "metrics.json": b"{}"}) == model_id(files)
    assert model_id(_files(tiny_model())) == model_id(files)  # deterministic export
    with torch.no_grad():
        model.decoder.out.bias[5] += 1.0
    assert model_id(_files(model)) != model_id(files)


def test_artifact_missing_file_is_named() -> None:
    files = _files(tiny_model())
    del files["model.safetensors"]
    with pytest.raises(InputError, match=r"lacks model\.safetensors"):
        load_artifact(files)


def test_artifact_shape_mismatch_names_the_config_field() -> None:
    files = _files(tiny_model())
    config = json.loads(files["config.json"])
    config["model"]["vocab_size"] = 60
    files["config.json"] = json.dumps(config).encode()
    with pytest.raises(InputError) as info:
        load_artifact(files)
    message = str(info.value)
    assert "50x16" in message and "vocab_size 60" in message and "re-export" in message


def test_artifact_never_unpickles() -> None:
    files = _files(tiny_model())
    buffer = io.BytesIO()
    torch.save(tiny_model().state_dict(), buffer)
    files["model.safetensors"] = buffer.getvalue()
    with pytest.raises(InputError, match="never unpickles"):
        load_artifact(files)


def test_artifact_invalid_config_values_are_input_errors() -> None:
    files = _files(tiny_model())
    config = json.loads(files["config.json"])
    config["model"]["latent_dim"] = 0
    files["config.json"] = json.dumps(config).encode()
    with pytest.raises(InputError, match="latent_dim"):
        load_artifact(files)
    with pytest.raises(InputError, match="not valid JSON"):
        load_artifact({**files, "config.json": b"{not json"})


def test_artifact_check_compatible_names_differing_fields() -> None:
    saved = tiny_config()
    check_compatible(saved, tiny_config(dropout=0.5, max_tokens=64))  # free to change on resume
    with pytest.raises(InputError) as info:
        check_compatible(saved.model_dump(), tiny_config(latent_dim=8, hidden_dim=32))
    message = str(info.value)
    assert "latent_dim=4" in message and "latent_dim=8" in message and "hidden_dim=16" in message
    assert "embed_dim" not in message
