"""`vaelm run jobs/demo.yaml`: the whole pipeline, one stage after another, in this process.

corpus -> preprocess -> train -> train-classifier -> classify -> generate (samples) -> generate
(interpolations) -> embed -> score -> report. Each stage is the job's own runner, called with a spec
built from the DemoSpec (vaelm.config.demo), writing under `workdir`. Every runner resumes, so
rerunning the demo skips finished stages and finishes an interrupted one. The summary's numbers come
from the same function as the report's headline (vaelm.report_sections.headline), so they agree.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable
from typing import Any

from vaelm import storage
from vaelm.config.demo import JOB_OF_STAGE, RUN_LAYOUT, STAGES, DemoSpec
from vaelm.config.loader import identity_hash, public_dict
from vaelm.pipeline.commit import now
from vaelm.pipeline.progress import say

RUNNERS: dict[str, str] = {
    "preprocess": "vaelm.pipeline.preprocess:run_preprocess",
    "train": "vaelm.pipeline.train:run_train",
    "train-classifier": "vaelm.pipeline.classifier:run_train_classifier",
    "classify": "vaelm.pipeline.batch:run_classify",
    "generate": "vaelm.pipeline.batch:run_generate",
    "embed": "vaelm.pipeline.batch:run_embed",
    "score": "vaelm.pipeline.batch:run_score",
}
"""Job -> runner (the same ones `vaelm <job>` calls)."""


def run_demo(spec: DemoSpec, *, overwrite: bool = False) -> dict[str, Any]:
    from vaelm.pipeline.cluster import ensure_ray

    spec = spec.model_copy(update={"storage": spec.storage.resolved()})
    record = _start_record(spec)
    ensure_ray(spec.ray)
    total = len(STAGES) + 1
    _stage(record, spec, 1, total, "corpus", lambda: _corpus(spec, overwrite=overwrite))
    for k, stage in enumerate(STAGES, start=2):
        _stage(record, spec, k, total, stage, _runner(spec, stage, overwrite=overwrite))
    return _finish(spec, record)


def _runner(spec: DemoSpec, stage: str, *, overwrite: bool) -> Callable[[], dict[str, Any]]:
    module, _, name = RUNNERS[JOB_OF_STAGE.get(stage, stage)].partition(":")
    run = getattr(importlib.import_module(module), name)
    return lambda: run(spec.stage_spec(stage), overwrite=overwrite)


def _corpus(spec: DemoSpec, *, overwrite: bool) -> dict[str, Any]:
    from vaelm.pipeline.demo_inputs import run_corpus_stage

    return run_corpus_stage(spec.corpus, spec.path(RUN_LAYOUT["corpus"]), spec.storage, overwrite=overwrite)


def _stage(
    record: dict[str, Any], spec: DemoSpec, k: int, total: int, stage: str, fn: Callable[[], dict[str, Any]]
) -> None:
    out = spec.path(RUN_LAYOUT[stage])
    say(f"demo [{k}/{total}] {stage} -> {out}")
    started = time.monotonic()
    summary = fn()
    seconds = round(time.monotonic() - started, 1)
    say(f"demo [{k}/{total}] {stage}: {summary.get('status', 'done')} in {seconds:.0f}s")
    _print_stage_summary(summary)
    earlier = record["earlier"].get(stage, {})
    if summary.get("status") == "already complete" and "seconds" in earlier:
        seconds = earlier["seconds"]  # keep the time of the run that did the work
    record["stages"][stage] = {"output": out, "seconds": seconds, "summary": summary}
    _save_record(spec, record)


def _print_stage_summary(summary: dict[str, Any]) -> None:
    """The stage's own numbers (duplicates removed, validation metrics, greedy decodings of several z...)."""
    for key, value in summary.items():
        if key == "status":
            continue
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            print(f"    {key}:", *(f"      - {v}" for v in value), sep="\n", flush=True)
        else:
            print(f"    {key:<22} {json.dumps(value, ensure_ascii=False, default=str)}", flush=True)


def _start_record(spec: DemoSpec) -> dict[str, Any]:
    from vaelm.report import DEMO_FILE
    from vaelm.report_outputs import versions

    loc = storage.open_location(spec.path(DEMO_FILE), spec.storage)
    earlier = storage.read_json(loc).get("stages", {}) if storage.exists(loc) else {}
    return {
        "spec_hash": identity_hash(spec),
        "spec": public_dict(spec),
        "started_at": now(),
        "versions": versions(),
        "stages": {},
        "earlier": earlier,
    }


def _save_record(spec: DemoSpec, record: dict[str, Any]) -> None:
    from vaelm.report import DEMO_FILE

    saved = {k: v for k, v in record.items() if k != "earlier"}
    storage.write_json(storage.open_location(spec.path(DEMO_FILE), spec.storage), saved)


def _finish(spec: DemoSpec, record: dict[str, Any]) -> dict[str, Any]:
    from vaelm.report import RunFiles, write_report
    from vaelm.report_sections import headline

    record.pop("earlier", None)
    record["finished_at"] = now()
    record["seconds"] = round(sum(s["seconds"] for s in record["stages"].values()), 1)
    _save_record(spec, record)
    files = RunFiles(spec.workdir, spec.storage)
    summary: dict[str, Any] = dict(headline(files))
    summary["stage seconds"] = {k: s["seconds"] for k, s in record["stages"].items()}
    summary["model"] = spec.path(RUN_LAYOUT["train"])
    summary["classifier"] = spec.path(RUN_LAYOUT["train_classifier"])
    if spec.report:
        say("demo: writing the report")
        summary["report"] = write_report(spec.workdir, storage_cfg=spec.storage)
    return summary
