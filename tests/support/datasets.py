"""Read back what a job wrote, through vaelm's own storage layer (local or S3)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from vaelm import storage


def read_folder(uri: str, folder: str, columns: list[str] | None = None) -> pa.Table:
    root = storage.open_location(uri)
    entries = storage.list_files(root.join(folder))
    tables = [storage.read_table(root.at(e), columns=columns) for e in entries]
    return pa.concat_tables(tables) if tables else pa.table({})


def ids_in(uri: str, folder: str) -> list[str]:
    table = read_folder(uri, folder, ["id"])
    return table.column("id").to_pylist() if table.num_columns else []


def dataset_ids(uri: str) -> tuple[list[str], list[str], list[str]]:
    """Distinct document ids in train/ and val/ (chunks folded), and every id in rejects/."""
    train = sorted(set(ids_in(uri, "train")))
    val = sorted(set(ids_in(uri, "val")))
    return train, val, ids_in(uri, "rejects")


def write_spec(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    return path


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run `vaelm ...` in a subprocess (it joins the test Ray cluster through $RAY_ADDRESS)."""
    import os

    return subprocess.run(
        [sys.executable, "-m", "vaelm.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
