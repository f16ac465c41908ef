"""Reading the model artifact, checking input rows, and assembling output tables for the bulk jobs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from vaelm import storage
from vaelm.config.batch import RunConfig
from vaelm.config.common import StorageConfig
from vaelm.errors import InputError, VaelmError
from vaelm.model.artifact import Artifact, load_artifact
from vaelm.pipeline.preprocess_steps import Rejects
from vaelm.pipeline.units import Unit
from vaelm.text.normalize import decode_text, normalize

ARTIFACT_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "metrics.json",
    "classifier.safetensors",
    "labels.json",
)


def read_artifact_files(uri: str, storage_cfg: StorageConfig) -> dict[str, bytes]:
    """The artifact's files (name -> bytes); InputError naming the path when there is no artifact there."""
    root = storage.open_location(uri, storage_cfg)
    files = {name: storage.read_bytes(root.join(name)) for name in ARTIFACT_FILES if storage.exists(root.join(name))}
    if not files:
        raise InputError(
            f"model artifact {uri} holds none of {list(ARTIFACT_FILES[:3])}; point `model:` at a directory "
            "written by `vaelm train` or `vaelm train-classifier`"
        )
    return files


def load_model(files: dict[str, bytes], *, uri: str) -> Artifact:
    """load_artifact, with every failure turned into an InputError that names the artifact's path."""
    try:
        return load_artifact(files)
    except VaelmError as exc:
        raise InputError(f"model artifact {uri} cannot be loaded: {exc}") from None
    except Exception as exc:  # torch / safetensors / tokenizers raise many kinds
        raise InputError(
            f"model artifact {uri} cannot be loaded ({type(exc).__name__}: {str(exc)[:300]}); re-export it"
        ) from None


# -- input rows ----------------------------------------------------------------------------------------


def check_rows(table: pa.Table, unit: Unit, run: RunConfig, rejects: Rejects) -> tuple[list[int], list[str]]:
    """Indices and normalised texts of the usable rows; the others go to `rejects` with their reason."""
    keep: list[int] = []
    texts: list[str] = []
    raws = table.column("text").to_pylist()
    ids = table.column("id").to_pylist()
    for i, (raw, doc_id) in enumerate(zip(raws, ids, strict=True)):
        text, reason = _check(raw, doc_id, run)
        if reason is None and text is not None:
            keep.append(i)
            texts.append(text)
        else:
            lossy = raw[:4096].decode("utf-8", errors="replace") if raw is not None else None
            rejects.add(doc_id=doc_id, source=unit.source, row=unit.first_row + i, reason=reason or "", text=lossy)
    return keep, texts


def check_targets(
    table: pa.Table, column: str, keep: list[int], unit: Unit, run: RunConfig, rejects: Rejects
) -> tuple[list[int], list[str]]:
    """Of the rows `keep`, those whose `column` holds usable text, and that text normalised; the others go
    to `rejects` with reason target_<why> (target_null_text, target_empty, target_invalid_utf8:...)."""
    raws = table.column(column).cast(pa.large_binary()).to_pylist()
    ids = table.column("id").to_pylist()
    ok: list[int] = []
    texts: list[str] = []
    for i in keep:
        text, reason = _check(raws[i], ids[i], run)
        if reason is None and text is not None:
            ok.append(i)
            texts.append(text)
        else:
            lossy = raws[i][:4096].decode("utf-8", errors="replace") if raws[i] is not None else None
            rejects.add(
                doc_id=ids[i], source=unit.source, row=unit.first_row + i, reason=f"target_{reason}", text=lossy
            )
    return ok, texts


def _check(raw: bytes | None, doc_id: str | None, run: RunConfig) -> tuple[str | None, str | None]:
    if doc_id is None or doc_id == "":
        return None, "null_id"
    if raw is None:
        return None, "null_text"
    decoded = decode_text(raw, policy=run.invalid_utf8)
    if decoded.text is None:
        return None, decoded.reason
    text = normalize(decoded.text, run.normalize)
    return (None, "empty") if not text.strip() else (text, None)


# -- output tables -------------------------------------------------------------------------------------


def float_lists(values: Any, width: int) -> pa.Array:
    """A (N, width) float array -> list<float32> column (every list `width` long)."""
    flat = pa.array(values.reshape(-1), pa.float32())
    offsets = pa.array([i * width for i in range(len(values) + 1)], pa.int32())
    return pa.ListArray.from_arrays(offsets, flat)


def output_table(
    columns: dict[str, pa.Array | Sequence[Any]],
    *,
    passthrough: pa.Table | None,
    provenance: dict[str, str],
) -> pa.Table:
    """The job's columns, then passthrough columns, then model_id and job_id on every row."""
    table = pa.table(columns)
    if passthrough is not None:
        for name in passthrough.column_names:
            target = name if name not in table.column_names else f"input_{name}"
            table = table.append_column(target, passthrough.column(name))
    for name, value in provenance.items():
        table = table.append_column(name, pa.array([value] * table.num_rows, pa.string()))
    return table


def passthrough_of(table: pa.Table, keep: list[int], names: Sequence[str]) -> pa.Table | None:
    """The asked-for input columns (and the input label, if any) of the kept rows."""
    wanted = [n for n in ("label", *names) if n in table.column_names]
    if not wanted:
        return None
    return table.select(list(dict.fromkeys(wanted))).take(pa.array(keep, pa.int64()))
