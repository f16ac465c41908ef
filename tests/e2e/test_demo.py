"""The whole pipeline end to end: a tiny run of jobs/demo.yaml (fixture in conftest.py), checked stage by stage."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest

from tests.e2e.conftest import DemoRun
from tests.support.datasets import read_folder
from vaelm.config.demo import RUN_LAYOUT

pytestmark = pytest.mark.timeout(600)


def _ids(run: DemoRun, stage: str, folder: str = "data") -> list[str]:
    return read_folder(str(run.workdir / RUN_LAYOUT[stage]), folder, ["id"]).column("id").to_pylist()


def _corpus(run: DemoRun, name: str) -> list[dict[str, object]]:
    return pq.read_table(run.workdir / "corpus" / f"{name}.parquet").to_pylist()


def test_every_stage_completes_and_the_summary_is_printed(tiny_demo: DemoRun) -> None:
    for stage, folder in RUN_LAYOUT.items():
        assert (tiny_demo.workdir / folder / "_SUCCESS").exists(), f"stage {stage} did not finish"
    out = tiny_demo.result.stdout
    for label in ("documents", "KL (nats/doc)", "active units", "val perplexity", "test accuracy", "report"):
        assert re.search(rf"^\s+{re.escape(label)}\s", out, re.M), f"summary lacks {label!r}:\n{out}"
    record = json.loads((tiny_demo.workdir / "demo.json").read_text())
    assert set(record["stages"]) == set(RUN_LAYOUT)
    print(f"tiny demo: {tiny_demo.seconds:.0f}s; stages { ({k: v['seconds'] for k, v in record['stages'].items()}) }")


def test_test_reviews_are_held_out_and_classified_once_each(tiny_demo: DemoRun) -> None:
    train = {r["text"] for r in _corpus(tiny_demo, "labelled-train")}
    test = _corpus(tiny_demo, "labelled-test")
    assert test and not train & {r["text"] for r in test}, "a test review's text is also a training text"
    assert all(r["split"] != "test" for r in _corpus(tiny_demo, "pretrain")), "the VAE saw test documents"
    classified = read_folder(str(tiny_demo.workdir / "classify"), "data", ["id", "label", "input_label"])
    rejected = _ids(tiny_demo, "classify", "rejects")
    assert sorted(classified.column("id").to_pylist() + rejected) == sorted(r["id"] for r in test)
    assert set(classified.column("label").to_pylist()) <= {"neg", "pos"}
    assert set(classified.column("input_label").to_pylist()) == {"neg", "pos"}


def test_bulk_outputs_reconcile_with_their_inputs(tiny_demo: DemoRun) -> None:
    test_ids = sorted(str(r["id"]) for r in _corpus(tiny_demo, "test"))
    for stage in ("embed", "score"):
        assert sorted(_ids(tiny_demo, stage) + _ids(tiny_demo, stage, "rejects")) == test_ids, stage
    assert len(_ids(tiny_demo, "generate")) == 4
    interpolations = read_folder(str(tiny_demo.workdir / RUN_LAYOUT["interpolate"]), "data", ["id_a", "step"])
    assert interpolations.num_rows == 2 * 3  # 2 pairs x 3 steps
    embedding = read_folder(str(tiny_demo.workdir / "embed"), "data", ["embedding"]).column("embedding")
    assert {len(v) for v in embedding.to_pylist()} == {8}


def test_the_summary_numbers_are_the_reports(tiny_demo: DemoRun) -> None:
    report = (tiny_demo.workdir / "report.html").read_text(encoding="utf-8")
    for label in ("KL (nats/doc)", "active units", "val perplexity", "test accuracy"):
        match = re.search(rf"^\s+{re.escape(label)}\s+(.+)$", tiny_demo.result.stdout, re.M)
        assert match, label
        assert f"<b>{match.group(1).strip()}</b><span>{label}</span>" in report, (label, match.group(1))


def test_a_rerun_skips_every_finished_stage(tiny_demo: DemoRun) -> None:
    data_files = sorted(tiny_demo.workdir.rglob("*.parquet"))
    before = {p: p.stat().st_mtime_ns for p in data_files}
    again = tiny_demo.rerun()
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("already complete") >= len(RUN_LAYOUT), again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in data_files} == before, "a rerun rewrote finished outputs"


def test_a_bad_override_is_refused_before_anything_runs(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import REPO_ROOT
    from tests.support.datasets import run_cli

    result = run_cli(
        "run",
        str(REPO_ROOT / "jobs/demo.yaml"),
        "--set",
        f"workdir={tmp_path}/w",
        "--set",
        "train.train.epochs=0",
        "--set",
        "classify.output=elsewhere",
    )
    assert result.returncode == 2
    assert "train.epochs=0" in result.stderr and "classify.output is set by the demo" in result.stderr
    assert not (tmp_path / "w").exists()
