"""Input planning: list the Parquet files of a corpus, check their columns, and cut them into units.

A unit is a run of row groups of one file (about `rows_per_unit` rows). Units are numbered in the
sorted order of files, so a rerun of the same input gets the same units: the basis of resume.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from vaelm import retry, storage
from vaelm.config.common import InputConfig, StorageConfig
from vaelm.errors import InputError
from vaelm.storage import FileEntry

TEXT_TYPES = (pa.string(), pa.large_string(), pa.binary(), pa.large_binary())


@dataclass(frozen=True)
class Unit:
    """A run of row groups of one input file: the unit of work, commit and resume."""

    index: int
    file_uri: str
    source: str
    row_groups: tuple[int, ...]
    first_row: int
    rows: int
    has_id: bool

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}"


@dataclass
class InputPlan:
    units: list[Unit]
    files: list[FileEntry]
    rows: int
    fingerprint: str
    skipped: list[dict[str, str]] = field(default_factory=list)


def plan_input(cfg: InputConfig, storage_cfg: StorageConfig) -> InputPlan:
    """List, check and cut the input. Raises InputError naming the file, the rule and the fix."""
    entries = [(root, f) for root in cfg.paths for f in _list(root, storage_cfg)]
    if not entries:
        raise InputError(
            f"no Parquet files found under {cfg.paths}; check input.paths (files or prefixes holding *.parquet)"
        )
    units: list[Unit] = []
    skipped: list[dict[str, str]] = []
    for root, entry in entries:
        meta = _footer(entry, storage_cfg, cfg, skipped)
        if meta is not None:
            units.extend(_cut(entry, _source(root, entry), meta, cfg, first_index=len(units)))
    files = [f for _, f in entries]
    return InputPlan(
        units=units, files=files, rows=sum(u.rows for u in units), fingerprint=fingerprint(files), skipped=skipped
    )


def _list(root: str, storage_cfg: StorageConfig) -> list[FileEntry]:
    loc = storage.open_location(root, storage_cfg)
    found = storage.list_files(loc)
    if not found and not storage.exists(loc):
        raise InputError(f"input path {root} does not exist; check input.paths")
    return found


def _source(root: str, entry: FileEntry) -> str:
    rel = entry.uri[len(root.rstrip("/")) + 1 :] if entry.uri != root.rstrip("/") else ""
    return rel or posixpath.basename(entry.uri)


def _raise_if_transient(loc: storage.Location, exc: Exception) -> None:
    """A network error that outlasted the storage retries is a storage problem, not a corrupt file."""
    if retry.is_transient(exc):
        with storage.storage_errors(loc, "read"):
            raise exc


def _footer(
    entry: FileEntry, storage_cfg: StorageConfig, cfg: InputConfig, skipped: list[dict[str, str]]
) -> pq.FileMetaData | None:
    loc = storage.open_location(entry.uri, storage_cfg)
    with storage.storage_errors(loc, "open"):
        f = loc.fs.open_input_file(loc.path)
    try:
        meta = pq.ParquetFile(f).metadata
    except Exception as exc:
        _raise_if_transient(loc, exc)  # pyarrow raises ArrowInvalid, OSError... for a corrupt footer
        if cfg.on_corrupt_file == "skip":
            skipped.append({"file": entry.uri, "reason": f"corrupt_parquet: {str(exc)[:200]}"})
            return None
        raise InputError(
            f"{entry.uri} is not a readable Parquet file ({str(exc)[:200]}); remove or "
            "repair it, or set input.on_corrupt_file: skip to record it and go on"
        ) from None
    finally:
        f.close()
    check_columns(meta.schema.to_arrow_schema(), cfg, entry.uri)
    return meta


def check_columns(schema: pa.Schema, cfg: InputConfig, uri: str) -> None:
    """The text column exists and holds text; asked-for columns exist."""
    names = schema.names
    if cfg.text_column not in names:
        raise InputError(
            f"column '{cfg.text_column}' not found in {uri}; its columns are {names}; set input.text_column"
        )
    kind = schema.field(cfg.text_column).type
    if kind not in TEXT_TYPES:
        raise InputError(
            f"column '{cfg.text_column}' in {uri} has type {kind}; it must hold text (string); "
            "convert it or point input.text_column at a text column"
        )
    explicit_id = "id_column" in cfg.model_fields_set and cfg.id_column is not None
    wanted = [*cfg.passthrough_columns, *([cfg.label_column] if cfg.label_column else [])]
    wanted += [cfg.id_column] if explicit_id and cfg.id_column else []
    missing = [c for c in wanted if c not in names]
    if missing:
        raise InputError(
            f"columns {missing} not found in {uri}; its columns are {names}; fix "
            "input.id_column / input.label_column / input.passthrough_columns"
        )


def _cut(entry: FileEntry, source: str, meta: pq.FileMetaData, cfg: InputConfig, *, first_index: int) -> list[Unit]:
    has_id = cfg.id_column is not None and cfg.id_column in meta.schema.to_arrow_schema().names
    units: list[Unit] = []
    groups: list[int] = []
    rows = start = offset = 0
    for rg in range(meta.num_row_groups):
        if not groups:
            start = offset
        groups.append(rg)
        n = meta.row_group(rg).num_rows
        rows += n
        offset += n
        if rows >= cfg.rows_per_unit or rg == meta.num_row_groups - 1:
            units.append(Unit(first_index + len(units), entry.uri, source, tuple(groups), start, rows, has_id))
            groups, rows = [], 0
    return units


def fingerprint(files: list[FileEntry]) -> str:
    """What identifies the input's content: paths, sizes and modification times."""
    data = [(f.uri, f.size, f.mtime_ns) for f in files]
    return hashlib.sha256(json.dumps(data).encode()).hexdigest()[:16]


def read_unit(unit: Unit, cfg: InputConfig, storage_cfg: StorageConfig) -> pa.Table:
    """The unit's rows: `text` as binary (decoded later, so bad UTF-8 is caught per row), `id` as
    string (derived from source#row when the file has none), then label and passthrough columns."""
    loc = storage.open_location(unit.file_uri, storage_cfg)
    columns = _columns(unit, cfg)
    with storage.storage_errors(loc, "open"):
        f = loc.fs.open_input_file(loc.path)
    try:
        table = pq.ParquetFile(f).read_row_groups(list(unit.row_groups), columns=columns)
    except Exception as exc:
        _raise_if_transient(loc, exc)
        raise InputError(
            f"{unit.file_uri}: row groups {list(unit.row_groups)} cannot be read ({str(exc)[:200]}); "
            "the file is corrupt: repair or remove it"
        ) from None
    finally:
        f.close()
    return _standardise(table, unit, cfg)


def _columns(unit: Unit, cfg: InputConfig) -> list[str]:
    cols = [cfg.text_column]
    if unit.has_id and cfg.id_column:
        cols.append(cfg.id_column)
    if cfg.label_column:
        cols.append(cfg.label_column)
    return list(dict.fromkeys([*cols, *cfg.passthrough_columns]))


def _standardise(table: pa.Table, unit: Unit, cfg: InputConfig) -> pa.Table:
    text = table.column(cfg.text_column)
    binary = (
        pa.large_binary() if pa.types.is_large_string(text.type) or pa.types.is_large_binary(text.type) else pa.binary()
    )
    out = {"text": text.cast(binary), "id": _ids(table, unit, cfg)}
    if cfg.label_column:
        out["label"] = table.column(cfg.label_column)
    for name in cfg.passthrough_columns:
        out[name] = table.column(name)
    return pa.table(out)


def _ids(table: pa.Table, unit: Unit, cfg: InputConfig) -> pa.ChunkedArray | pa.Array:
    if unit.has_id and cfg.id_column:
        col = table.column(cfg.id_column)
        return col if pa.types.is_string(col.type) else col.cast(pa.string())
    return pa.array([f"{unit.source}#{unit.first_row + i}" for i in range(table.num_rows)], pa.string())
