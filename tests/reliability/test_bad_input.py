"""Crafted bad input for the preprocess reader: schema drift between the files of one dataset, duplicate
ids across files, null ids, an empty dataset, a folder without Parquet, a spec with unknown keys. Each
case is a clear error (exit 2) or rejects with reasons; no input row is silently dropped; no traceback.

Covered elsewhere, not repeated here: truncated/corrupt Parquet and skip-on-corrupt, a missing or
non-text text column, null text, invalid UTF-8 and a 6 MB document (tests/integration/test_preprocess.py);
hostile Unicode in the text functions (tests/unit/test_hostile_text.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.integration.test_preprocess import spec_for
from tests.support.corpus import make_docs
from tests.support.datasets import dataset_ids, read_folder, write_spec
from vaelm.cli import main

pytestmark = pytest.mark.timeout(240)


def preprocess(tmp_path: Path, spec: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["preprocess", str(write_spec(tmp_path / "s.yaml", spec))])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


def test_schema_drift_duplicate_and_null_ids_across_files_are_read_or_rejected(
    ray_cluster: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = make_docs(90, seed=21)
    inp = tmp_path / "in"
    inp.mkdir()
    # a: text string, id string (and id "7", which b repeats as an int)
    a_ids = [f"a{i}" for i in range(29)] + ["7"]
    pq.write_table(pa.table({"id": a_ids, "text": docs[:30]}), inp / "a.parquet")
    # b: text large_string, id int64 (1 null), an extra column
    b_ids = [*range(5, 34), None]
    b = pa.table(
        {
            "id": pa.array(b_ids, pa.int64()),
            "text": pa.array(docs[30:60], pa.large_string()),
            "extra": pa.array([1.5] * 30),
        }
    )
    pq.write_table(b, inp / "b.parquet")
    # c: text binary, columns in another order; ids repeat some of a's
    c_ids = [f"a{i}" for i in range(5)] + [f"c{i}" for i in range(25)]
    c = pa.table({"text": pa.array([d.encode() for d in docs[60:90]], pa.binary()), "id": c_ids})
    pq.write_table(c, inp / "c.parquet")
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}), inp / "d.parquet")

    code, err = preprocess(tmp_path, spec_for(str(inp), str(tmp_path / "out")), capsys)
    assert code == 0, err
    out = str(tmp_path / "out")
    train, val, rejects = dataset_ids(out)
    inputs = a_ids + [str(x) for x in b_ids if x is not None] + c_ids
    assert sorted(train + val + [r for r in rejects if r is not None]) == sorted(inputs), "each input row once"
    assert len(train + val) == len(set(train + val)), "each id at most once in the dataset"
    reasons = read_folder(out, "rejects").to_pylist()
    assert [r["reason"] for r in reasons if r["id"] is None] == ["null_id"], "the null id is a reject, not lost"
    by_id: dict[str, list[str]] = {}
    for r in reasons:
        by_id.setdefault(r["id"], []).append(r["reason"])
    assert by_id["7"] == ["duplicate_id:7"], "id 7 as a string in a.parquet and an int in b.parquet is one id"
    for i in range(5):
        assert by_id[f"a{i}"] == [f"duplicate_id:a{i}"]


def test_empty_dataset_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], ray_cluster: str) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}), inp / "a.parquet")
    code, err = preprocess(tmp_path, spec_for(str(inp), str(tmp_path / "out")), capsys)
    assert code == 2 and "no documents are left" in err and "no rows at all" in err, err
    assert not list((tmp_path / "out").rglob("_SUCCESS"))


def test_folder_without_parquet_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "notes.csv").write_text("id,text\n1,hello\n")
    code, err = preprocess(tmp_path, spec_for(str(inp), str(tmp_path / "out")), capsys)
    assert code == 2 and "no Parquet files found" in err and "input.paths" in err, err


@pytest.mark.parametrize(
    ("extra", "key"),
    [({"outptu": "x"}, "outptu"), ({"tokenizer": {"vocab_size": 300, "vocab_sise": 3}}, "tokenizer.vocab_sise")],
)
def test_spec_with_unknown_key_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: dict[str, Any], key: str
) -> None:
    code, err = preprocess(tmp_path, spec_for(str(tmp_path), str(tmp_path / "out"), **extra), capsys)
    assert code == 2 and f"unknown key '{key}'" in err, err


def test_errors_raised_in_ray_tasks_reach_the_user_without_stack_frames(capsys: pytest.CaptureFixture[str]) -> None:
    import ray.exceptions

    from vaelm.cli import _report_error
    from vaelm.errors import StorageError

    cause = StorageError("cannot write /out/x.parquet: No space left on device; the disk is full")
    frames = 'Traceback (most recent call last):\n  File "actors.py", line 25, in run\nStorageError: ...'
    task_error = ray.exceptions.RayTaskError("StepActor.run", frames, cause).as_instanceof_cause()
    assert _report_error(task_error) == 1
    err = capsys.readouterr().err
    assert err == f"vaelm: {cause}\n"
