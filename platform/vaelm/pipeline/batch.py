"""`vaelm classify | embed | score | generate`: one mechanism for every bulk job over a model artifact.

1. load the artifact in the driver (a clear InputError naming its path if it cannot be used) and plan
   the input into stable units (runs of row groups of one file; for generate mode prior, ranges of
   sample indices);
2. claim the output: same spec + input + model resumes or is a no-op, anything else is refused unless
   --overwrite;
3. run the job's step over every uncommitted unit on a pool of Ray actors (the model loaded once per
   actor, `run.batch_size` documents per forward pass, `ray.num_gpus_per_actor` GPUs each); each unit
   writes data/part-NNNNN.parquet and rejects/part-NNNNN.parquet at fixed names, then is committed;
4. reconcile counts (rows in = documents out + rejects), write manifest.json, then _SUCCESS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from vaelm import __version__, storage
from vaelm.config.batch import ClassifySpec, EmbedSpec, GenerateSpec, ScoreSpec
from vaelm.config.common import RayConfig
from vaelm.config.loader import identity_hash, public_dict
from vaelm.errors import InputError
from vaelm.model.artifact import Artifact
from vaelm.pipeline.batch_io import load_model, read_artifact_files
from vaelm.pipeline.commit import WORK, Ledger, claim_output, mark_success, now
from vaelm.pipeline.progress import say
from vaelm.pipeline.units import Unit, plan_input
from vaelm.storage import FileEntry, Location

BatchJobSpec = ClassifySpec | EmbedSpec | ScoreSpec | GenerateSpec
MANIFEST_FORMAT = "vaelm.batch/1"


def run_classify(spec: ClassifySpec, *, overwrite: bool = False) -> dict[str, Any]:
    return run_batch_job(spec, overwrite=overwrite)


def run_embed(spec: EmbedSpec, *, overwrite: bool = False) -> dict[str, Any]:
    return run_batch_job(spec, overwrite=overwrite)


def run_score(spec: ScoreSpec, *, overwrite: bool = False) -> dict[str, Any]:
    return run_batch_job(spec, overwrite=overwrite)


def run_generate(spec: GenerateSpec, *, overwrite: bool = False) -> dict[str, Any]:
    return run_batch_job(spec, overwrite=overwrite)


@dataclass
class Plan:
    units: list[Unit]
    rows: int
    fingerprint: str
    files: list[FileEntry] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def run_batch_job(spec: BatchJobSpec, *, overwrite: bool = False) -> dict[str, Any]:
    spec = spec.model_copy(update={"storage": spec.storage.resolved()})
    files = read_artifact_files(spec.model, spec.storage)
    art = load_model(files, uri=spec.model)
    check_model(spec, art)
    plan = plan_units(spec)
    root = storage.open_location(spec.output, spec.storage)
    say(f"{spec.job}: model {art.model_id}, {plan.rows} rows in {len(plan.units)} units -> {root.uri}")
    state = claim_output(
        root,
        job=spec.job,
        identity=identity_hash(spec),
        fingerprint=f"{plan.fingerprint}+model:{art.model_id}",
        overwrite=overwrite,
    )
    if state == "done":
        say(f"{root.uri} is already complete for this spec, input and model: nothing to do")
        return {**summarize(storage.read_json(root.join("manifest.json")), root), "status": "already complete"}
    stats = _run_units(spec, art.model_id, plan)
    manifest = finish(root, spec, plan, stats, art)
    return {**summarize(manifest, root), "status": "resumed and completed" if state == "resume" else "completed"}


def check_model(spec: BatchJobSpec, art: Artifact) -> None:
    """Refuse a model that cannot do the job, before any actor starts."""
    if spec.job == "classify" and art.classifier is None:
        raise InputError(
            f"model artifact {spec.model} has no classifier (classifier.safetensors, labels.json); "
            "train one with `vaelm train-classifier` and point `model:` at its output"
        )
    needs_z = spec.job in ("embed", "classify") or (
        isinstance(spec, GenerateSpec) and spec.generate.mode in ("reconstruct", "interpolate")
    )
    if needs_z and art.model.z_dim == 0:
        raise InputError(
            f"model artifact {spec.model} is a language model without latent code (mode: lm); "
            f"`{spec.job}` needs a VAE (model.mode: vae)"
        )


def plan_units(spec: BatchJobSpec) -> Plan:
    from vaelm.pipeline.batch_generate import check_target_column, prior_units

    if isinstance(spec, GenerateSpec) and spec.input is None:
        g = spec.generate
        return Plan(prior_units(g.num_samples, g.samples_per_unit), g.num_samples, f"prior:{g.num_samples}")
    assert spec.input is not None
    p = plan_input(spec.input, spec.storage)
    if isinstance(spec, GenerateSpec):
        check_target_column(spec, sorted({u.file_uri for u in p.units}))
    return Plan(p.units, p.rows, p.fingerprint, p.files, p.skipped)


def _run_units(spec: BatchJobSpec, model_id: str, plan: Plan) -> dict[str, dict[str, Any]]:
    """Each actor reads the artifact from `spec.model` itself and checks it is still `model_id`: the files
    are not shipped through the object store, where a lost copy would make an actor restart fail (Ray
    warns of exactly that for actors with constructor arguments in the object store)."""
    from vaelm.pipeline.actors import run_units
    from vaelm.pipeline.batch_generate import GenerateStep
    from vaelm.pipeline.batch_steps import ClassifyStep, EmbedStep, ScoreStep
    from vaelm.pipeline.cluster import ensure_ray

    steps = {"classify": ClassifyStep, "embed": EmbedStep, "score": ScoreStep, "generate": GenerateStep}
    ensure_ray(spec.ray)
    return run_units(
        steps[spec.job],
        (spec.model_dump(), model_id),
        ledger=Ledger(storage.open_location(spec.output, spec.storage), "units"),
        units=plan.units,
        ray_cfg=gpu_capped(spec.ray),
        label=spec.job,
    )


def gpu_capped(cfg: RayConfig) -> RayConfig:
    """With GPUs per actor, no more actors than the cluster's GPUs can hold."""
    if cfg.num_gpus_per_actor <= 0:
        return cfg
    import ray

    gpus = float(ray.cluster_resources().get("GPU", 0.0))
    fit = math.floor(gpus / cfg.num_gpus_per_actor + 1e-9)
    if fit < 1:
        raise InputError(
            f"ray.num_gpus_per_actor={cfg.num_gpus_per_actor} but the cluster has {gpus:.0f} GPUs; "
            "set it to 0 to run on CPU, or join a cluster with GPUs"
        )
    return cfg.model_copy(update={"max_actors": min(fit, cfg.max_actors or fit)})


# -- finish ------------------------------------------------------------------------------------------


def finish(
    root: Location, spec: BatchJobSpec, plan: Plan, stats: dict[str, dict[str, Any]], art: Artifact
) -> dict[str, Any]:
    counts = _counts(stats)
    if counts["rows_in"] != plan.rows or counts["rows_in"] != counts["documents_out"] + counts["rejected"]:
        raise RuntimeError(
            f"counts do not reconcile, the output is NOT marked complete: planned {plan.rows} rows, {counts}; "
            "this is a bug, please report it with the output's _work/ folder"
        )
    manifest = _manifest(spec, plan, counts, art, stats)
    storage.write_json(root.join("manifest.json"), manifest)
    storage.delete_tree(root.join(WORK))
    mark_success(root)
    return manifest


def _counts(stats: dict[str, dict[str, Any]]) -> dict[str, Any]:
    by_reason: dict[str, int] = {}
    for s in stats.values():
        for reason, n in s["rejected"].items():
            by_reason[reason] = by_reason.get(reason, 0) + n
    return {
        "rows_in": sum(s["rows_in"] for s in stats.values()),
        "documents_out": sum(s["docs_out"] for s in stats.values()),
        "rows_out": sum(s["rows_out"] for s in stats.values()),
        "rejected": sum(by_reason.values()),
        "rejected_by_reason": dict(sorted(by_reason.items(), key=lambda x: -x[1])),
        "truncated": sum(s["truncated"] for s in stats.values()),
    }


def _timing(stats: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Seconds inside the units' steps (after actor start and model load): their sum, and the span from
    the first unit's start to the last one's end (across runs when the job was resumed)."""
    timed = [s for s in stats.values() if "started" in s]
    if not timed:
        return {}
    return {
        "unit_seconds": round(sum(s["finished"] - s["started"] for s in timed), 3),
        "span_seconds": round(max(s["finished"] for s in timed) - min(s["started"] for s in timed), 3),
        "torch_threads": max(s.get("torch_threads", 0) for s in timed),
    }


def _manifest(
    spec: BatchJobSpec, plan: Plan, counts: dict[str, Any], art: Artifact, stats: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    names = [u.name for u in plan.units]
    return {
        "format": MANIFEST_FORMAT,
        "job": spec.job,
        "job_id": identity_hash(spec),
        "vaelm_version": __version__,
        "created_at": now(),
        "spec": public_dict(spec),
        "model": {
            "uri": spec.model,
            "model_id": art.model_id,
            "latent_dim": art.config.latent_dim,
            "max_tokens": art.config.max_tokens,
            "labels": art.labels,
        },
        "input": {
            "fingerprint": plan.fingerprint,
            "files": [{"uri": f.uri, "size": f.size, "mtime_ns": f.mtime_ns} for f in plan.files],
            "skipped_files": plan.skipped,
        },
        "counts": counts,
        "timing": _timing(stats),
        "files": {"data": [f"data/{n}.parquet" for n in names], "rejects": [f"rejects/{n}.parquet" for n in names]},
    }


def summarize(manifest: dict[str, Any], root: Location) -> dict[str, Any]:
    c = manifest["counts"]
    return {
        "output": root.uri,
        "model_id": manifest["model"]["model_id"],
        "rows_in": c["rows_in"],
        "rows_out": c["rows_out"],
        "rejected": c["rejected"],
        "rejected_by_reason": c["rejected_by_reason"],
        "truncated": c["truncated"],
        "timing": manifest.get("timing", {}),
    }
