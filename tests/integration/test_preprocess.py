"""`vaelm preprocess` on a real local Ray cluster, local files and a real S3 server (SeaweedFS)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.corpus import make_docs, near_copy, write_corpus
from tests.support.datasets import dataset_ids, read_folder, run_cli, write_spec
from vaelm import storage
from vaelm.cli import main

pytestmark = pytest.mark.timeout(300)


def spec_for(inp: str, out: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "job": "preprocess",
        "input": {"paths": [inp], "rows_per_unit": 40},
        "output": out,
        "tokenizer": {"vocab_size": 300, "min_frequency": 1},
        "tokenize": {"max_tokens": 48, "val_fraction": 0.2},
    }
    spec.update(extra)
    return spec


def corpus_with_duplicates(folder: Path) -> tuple[list[str], list[str]]:
    docs = make_docs(200, seed=1)
    texts = docs + docs[:10] + [near_copy(d) for d in docs[10:20] if len(d) > 40] + ["", "短"]
    corpus = write_corpus(folder, texts, files=3, row_group_size=20)
    return corpus.ids, texts


def upload(folder: Path, uri: str) -> None:
    root = storage.open_location(uri)
    for path in sorted(folder.glob("*.parquet")):
        storage.write_bytes(root.join(path.name), path.read_bytes())


def test_preprocess_s3_contract_and_reconciliation(ray_cluster: str, s3_bucket: str, tmp_path: Path) -> None:
    ids, _ = corpus_with_duplicates(tmp_path / "in")
    upload(tmp_path / "in", f"{s3_bucket}/corpus")
    out = f"{s3_bucket}/dataset"
    spec = write_spec(tmp_path / "s.yaml", spec_for(f"{s3_bucket}/corpus", out))
    assert main(["preprocess", str(spec)]) == 0

    root = storage.open_location(out)
    for name in ("manifest.json", "stats.json", "tokenizer/tokenizer.json", "_SUCCESS"):
        assert storage.exists(root.join(name)), name
    assert storage.list_files(root.join("_work"), suffix="") == [], "staging must be cleaned up after success"
    train, val, rejects = dataset_ids(out)
    assert sorted(train + val + rejects) == sorted(ids), "every input row in exactly one place"
    assert not set(train) & set(val)
    manifest = storage.read_json(root.join("manifest.json"))
    assert manifest["counts"] == {
        "rows_in": len(ids),
        "train_documents": len(train),
        "val_documents": len(val),
        "rejected": len(rejects),
    }
    assert manifest["spec"]["storage"]["secret_key"] != storage_secret(), "no credentials in the manifest"
    assert all(f["uri"].startswith("s3://") for f in manifest["input"]["files"])

    reasons = dict(zip(*(read_folder(out, "rejects").column(c).to_pylist() for c in ("id", "reason")), strict=True))
    for i in range(200, 210):  # exact copies of docs 0..9 point at their originals
        assert reasons[ids[i]] == f"duplicate_of:{ids[i - 200]}"
    assert reasons[ids[-2]] == "empty" and reasons[ids[-1]].startswith("too_short")
    stats = storage.read_json(root.join("stats.json"))
    assert stats["duplicates"]["exact"] == 10 and stats["duplicates"]["near"] >= 5

    row = read_folder(out, "train").slice(0, 1).to_pylist()[0]
    assert row["input_ids"][0] == 1 and row["input_ids"][-1] == 2 and row["n_tokens"] == len(row["input_ids"])
    assert len(row["input_ids"]) <= 48


def storage_secret() -> str:
    import os

    return os.environ["VAELM_S3_SECRET_KEY"]


def test_kill_midway_then_rerun_loses_nothing_and_duplicates_nothing(ray_cluster: str, tmp_path: Path) -> None:
    ids, _ = corpus_with_duplicates(tmp_path / "in")
    out = tmp_path / "out"
    spec = write_spec(tmp_path / "s.yaml", spec_for(str(tmp_path / "in"), str(out)))

    killed = run_cli("preprocess", str(spec), env={"VAELM_FAULT_EXIT_AFTER_COMMITS": "3"})
    assert killed.returncode == 137, killed.stderr[-2000:]
    assert not (out / "_SUCCESS").exists()
    assert len(list((out / "_work" / "clean").glob("*.json"))) == 3

    rerun = run_cli("preprocess", str(spec))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming, 3 of" in rerun.stderr and "resumed and completed" in rerun.stdout
    train, val, rejects = dataset_ids(str(out))
    assert sorted(train + val + rejects) == sorted(ids)


def test_rerun_of_finished_job_is_a_noop_and_changed_spec_is_refused(
    ray_cluster: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_corpus(tmp_path / "in", make_docs(60, seed=2), files=1)
    out = tmp_path / "out"
    spec = write_spec(tmp_path / "s.yaml", spec_for(str(tmp_path / "in"), str(out)))
    assert main(["preprocess", str(spec)]) == 0
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()

    assert main(["preprocess", str(spec)]) == 0
    assert "already complete" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before, "a no-op writes nothing"

    assert main(["preprocess", str(spec), "--set", "tokenize.max_tokens=32"]) == 2
    err = capsys.readouterr().err
    assert "a different spec" in err and "--overwrite" in err
    assert main(["preprocess", str(spec), "--set", "tokenize.max_tokens=32", "--overwrite"]) == 0
    assert max(len(r) for r in read_folder(str(out), "train").column("input_ids").to_pylist()) <= 32


# -- bad input ---------------------------------------------------------------------------------------


def run_bad(
    tmp_path: Path, table: pa.Table | None, capsys: pytest.CaptureFixture[str], **extra: Any
) -> tuple[int, str]:
    inp = tmp_path / "in"
    inp.mkdir(exist_ok=True)
    if table is not None:
        pq.write_table(table, inp / "a.parquet")
    spec = write_spec(tmp_path / "s.yaml", spec_for(str(inp), str(tmp_path / "out"), **extra))
    code = main(["preprocess", str(spec)])
    return code, capsys.readouterr().err


def test_missing_text_column_names_file_columns_and_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_bad(tmp_path, pa.table({"id": ["a"], "body": ["x"]}), capsys)
    assert code == 2
    assert "column 'text' not found" in err and "a.parquet" in err and "['id', 'body']" in err
    assert "input.text_column" in err


def test_non_string_text_column_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_bad(tmp_path, pa.table({"id": ["a"], "text": [3]}), capsys)
    assert code == 2 and "has type int64" in err


def test_corrupt_parquet_is_an_error_or_skipped_by_choice(
    ray_cluster: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_corpus(tmp_path / "in", make_docs(30, seed=3), files=1)
    good = (tmp_path / "in" / "part-0.parquet").read_bytes()
    (tmp_path / "in" / "broken.parquet").write_bytes(good[: len(good) // 2])
    (tmp_path / "in" / "zero.parquet").write_bytes(b"")
    code, err = run_bad(tmp_path, None, capsys)
    assert code == 2 and "broken.parquet is not a readable Parquet file" in err and "on_corrupt_file" in err
    code, _ = run_bad(tmp_path, None, capsys, input={"paths": [str(tmp_path / "in")], "on_corrupt_file": "skip"})
    assert code == 0
    stats = storage.read_json(storage.open_location(str(tmp_path / "out" / "stats.json")))
    assert {Path(s["file"]).name for s in stats["skipped_files"]} == {"broken.parquet", "zero.parquet"}
    assert stats["counts"]["rows_in"] == 30


def test_row_level_problems_become_rejects(
    ray_cluster: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = make_docs(40, seed=4)
    bad_utf8 = b"\xe8\xbf\x99\xff\xfe" + "家店很好，推荐大家来吃饭。".encode()
    texts = [d.encode() for d in docs] + [None, b"", "巨".encode() * 2_000_000, bad_utf8]
    table = pa.table({"id": [f"r{i}" for i in range(len(texts))], "text": pa.array(texts, pa.binary())})
    code, err = run_bad(tmp_path, table, capsys, normalize={"invalid_utf8": "reject"})
    assert code == 0, err
    out = str(tmp_path / "out")
    reasons = dict(zip(*(read_folder(out, "rejects").column(c).to_pylist() for c in ("id", "reason")), strict=True))
    assert reasons["r40"] == "null_text" and reasons["r41"] == "empty"
    assert reasons["r42"].startswith("too_long") and reasons["r43"].startswith("invalid_utf8")
    train, val, rejects = dataset_ids(out)
    assert sorted(train + val + rejects) == sorted(f"r{i}" for i in range(len(texts)))


def test_unreachable_s3_endpoint_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_bad(
        tmp_path,
        None,
        capsys,
        input={"paths": ["s3://nowhere/corpus"]},
        storage={"endpoint": "http://127.0.0.1:9", "retries": 1, "connect_timeout_s": 1, "retry_max_s": 2},
    )
    assert code == 1 and "cannot be reached" in err and "s3://nowhere/corpus" in err


def test_wrong_credentials_are_a_clear_error_without_the_secret(
    s3_bucket: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "wrong-secret-DO-NOT-PRINT-1234"
    code, err = run_bad(
        tmp_path,
        None,
        capsys,
        input={"paths": [f"{s3_bucket}/corpus"]},
        storage={"access_key": "vaelm-test-access", "secret_key": wrong, "retries": 1},
    )
    assert code == 1 and "access was denied" in err
    assert wrong not in err
