"""`vaelm train`: train the VAE language model with Ray Train and export the model artifact.

Reads a finished preprocessed dataset (checks _SUCCESS, the manifest and the tokenizer), streams its
train/ and val/ shards through Ray Data to a TorchTrainer (DDP over CPU or GPU workers), checkpoints to
local disk or S3, resumes when the same spec is rerun, and writes the artifact (safetensors) with the
final metrics, the metric history (JSON lines, TensorBoard) and a PNG of the curves.
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
from pathlib import Path
from typing import Any

import ray
import ray.data
import torch
from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from vaelm import __version__, storage
from vaelm.config.loader import identity_hash
from vaelm.config.model import ModelConfig
from vaelm.config.train import LoopConfig, TrainSpec
from vaelm.errors import InputError, SpecError
from vaelm.model.artifact import artifact_files, check_compatible
from vaelm.model.batching import pad_batch
from vaelm.model.decode import greedy
from vaelm.model.metrics import evaluate
from vaelm.model.vae import TextVAE
from vaelm.pipeline.cluster import cluster_cpus, ensure_ray
from vaelm.pipeline.commit import claim_output, mark_success, now
from vaelm.pipeline.progress import say
from vaelm.pipeline.train_loop import train_loop
from vaelm.plots import training_curves_png
from vaelm.storage import Location


def run_train(spec: TrainSpec, *, overwrite: bool = False) -> dict[str, Any]:
    spec = spec.model_copy(update={"storage": spec.storage.resolved()})
    data = open_dataset(spec.dataset, spec)
    model_cfg = resolve_model(spec, data)
    out = storage.open_location(spec.output, spec.storage)
    state = claim_output(
        out, job="train", identity=identity_hash(spec), fingerprint=data.fingerprint, overwrite=overwrite
    )
    if state == "done":
        say(f"{out.uri} already holds the model of this spec: nothing to do")
        return {**summarize(storage.read_json(out.join("metrics.json"))), "status": "already complete"}
    ensure_ray(spec.ray)
    ray.data.DataContext.get_current().enable_progress_bars = False
    run_name = spec.run_name or f"vaelm-train-{identity_hash(spec)}"
    check_resumable(spec, run_name, model_cfg)
    result = _fit(spec, data, model_cfg, run_name)
    summary = export(spec, data, model_cfg, result, out)
    mark_success(out)
    return {**summary, "status": "completed"}


# -- the dataset -------------------------------------------------------------------------------------


class Dataset:
    """A finished preprocessed dataset: its manifest, stats, tokenizer and shard locations."""

    def __init__(self, root: Location) -> None:
        self.root = root
        self.manifest: dict[str, Any] = storage.read_json(root.join("manifest.json"))
        self.stats: dict[str, Any] = storage.read_json(root.join("stats.json"))
        self.tokenizer_json = storage.read_bytes(root.join(self.manifest["tokenizer"]["path"])).decode()

    @property
    def fingerprint(self) -> str:
        return f"{self.manifest['spec_hash']}@{self.manifest['created_at']}"

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["tokenizer"]["vocab_size"])

    def shards(self, split: str) -> list[Location]:
        return [self.root.join(p) for p in self.manifest["shards"][split]]


def open_dataset(uri: str, spec: TrainSpec) -> Dataset:
    root = storage.open_location(uri, spec.storage)
    missing = [n for n in ("_SUCCESS", "manifest.json") if not storage.exists(root.join(n))]
    if missing:
        raise InputError(
            f"dataset {uri} has no {' or '.join(missing)}: it is not a finished `vaelm preprocess` "
            "output; run (or rerun, to finish) the preprocess job, or fix `dataset:` in the spec"
        )
    data = Dataset(root)
    digest = hashlib.sha256(data.tokenizer_json.encode()).hexdigest()
    if digest != data.manifest["tokenizer"].get("sha256"):
        raise InputError(
            f"{uri}/tokenizer/tokenizer.json does not match the dataset's manifest (sha256 {digest[:12]} "
            f"vs {str(data.manifest['tokenizer'].get('sha256'))[:12]}): the token ids in train/ were made "
            "with another tokenizer; rerun `vaelm preprocess` rather than swapping tokenizers"
        )
    return data


def resolve_model(spec: TrainSpec, data: Dataset) -> ModelConfig:
    """The spec's model with vocab_size and max_tokens taken from the dataset where left empty."""
    given = spec.model.model_dump()
    if given["vocab_size"] not in (None, data.vocab_size):
        raise InputError(
            f"model.vocab_size={given['vocab_size']} but the dataset's tokenizer has {data.vocab_size} "
            "ids: the tokenizer does not match the model; leave model.vocab_size empty to use the dataset's"
        )
    given["vocab_size"] = data.vocab_size
    given["max_tokens"] = given["max_tokens"] or int(data.manifest.get("max_tokens", 128))
    return ModelConfig.model_validate(given)


# -- Ray Train -----------------------------------------------------------------------------------------


def _storage_for_ray(spec: TrainSpec) -> tuple[str, Any]:
    root = storage.open_location(spec.run_root(), spec.storage)
    return (root.path, root.fs) if root.is_s3 else (root.path, None)


def check_resumable(spec: TrainSpec, run_name: str, model_cfg: ModelConfig) -> None:
    """Refuse, before any worker starts, a run folder whose checkpoints were made by another architecture."""
    run = storage.open_location(spec.run_root(), spec.storage).join(run_name)
    states = [e for e in storage.list_files(run, suffix="state.json")]
    if states:
        newest = max(states, key=lambda e: e.mtime_ns or 0)
        saved = json.loads(storage.read_bytes(run.at(newest)))["model_config"]
        check_compatible(saved, model_cfg, where=f"checkpoint {newest.uri}")
        say(f"train: resuming {run.uri} (latest checkpoint {newest.uri.rsplit('/', 2)[-2]})")


def _fit(spec: TrainSpec, data: Dataset, model_cfg: ModelConfig, run_name: str) -> Any:
    loop = spec.train
    rows = int(data.stats["splits"]["train"]["rows"])
    steps_per_epoch = rows // loop.num_workers // loop.batch_size
    if steps_per_epoch < 1:
        raise SpecError(
            f"train.batch_size={loop.batch_size} x num_workers={loop.num_workers} exceeds the "
            f"{rows} training rows; lower the batch size or the workers"
        )
    storage_path, fs = _storage_for_ray(spec)
    say(f"train: {rows} rows, {loop.num_workers} workers x batch {loop.batch_size}, {steps_per_epoch} steps/epoch")
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "spec": spec.model_dump(),
            "model": model_cfg.model_dump(),
            "steps_per_epoch": steps_per_epoch,
            "fault": _fault(),
        },
        scaling_config=ScalingConfig(
            num_workers=loop.num_workers,
            use_gpu=loop.use_gpu,
            resources_per_worker={"CPU": worker_cpus(loop.num_workers, loop.cpus_per_worker)},
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            storage_filesystem=fs,
            failure_config=FailureConfig(max_failures=loop.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=loop.keep_checkpoints, checkpoint_score_attribute="val_elbo", checkpoint_score_order="min"
            ),
        ),
        datasets={"train": _read(data, "train", loop), "val": _read(data, "val", loop)},
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    return trainer.fit()


def worker_cpus(num_workers: int, wanted: float, *, data_reserve: float = 1.0) -> float:
    """Logical CPUs per train worker, lowered so that Ray Data's read tasks keep `data_reserve` CPUs.

    Without this, 2 one-CPU workers on a 2-CPU machine take every CPU and the dataset's file listing
    waits forever (a silent deadlock). Torch still uses `wanted` threads per worker.
    """
    total = cluster_cpus()
    if num_workers * wanted <= total - data_reserve:
        return wanted
    fair = max((total - data_reserve) / num_workers, 0.1)
    say(
        f"train: {num_workers} workers x {wanted} CPU leave no CPU for data loading on this {total:.0f}-CPU "
        f"cluster; reserving {fair:.2f} CPU per worker instead (torch threads unchanged)"
    )
    return round(fair, 2)


def _read(data: Dataset, split: str, loop: LoopConfig) -> ray.data.Dataset:
    """A split as a Ray dataset, in the order `loop.shuffle` asks for (seeded: a rerun sees the same order)."""
    shards = data.shards(split)
    fs = shards[0].fs if shards else None
    ds = ray.data.read_parquet([s.path for s in shards], filesystem=fs, columns=["input_ids", "n_tokens"])
    if loop.shuffle == "global":
        return ds.random_shuffle(seed=loop.seed)
    if loop.shuffle == "blocks":
        return ds.randomize_block_order(seed=loop.seed)
    return ds


def _fault() -> dict[str, Any]:
    import os

    return {
        "kill_at_step": os.environ.get("VAELM_FAULT_KILL_TRAIN_STEP"),
        "marker": os.environ.get("VAELM_FAULT_MARKER"),
    }


# -- export --------------------------------------------------------------------------------------------


def export(spec: TrainSpec, data: Dataset, model_cfg: ModelConfig, result: Any, out: Location) -> dict[str, Any]:
    best = _best_checkpoint(result)
    latest_history = _history(result.checkpoint)
    model = TextVAE(model_cfg)
    with best.as_directory() as folder:
        model.load_state_dict(torch.load(Path(folder) / "model.pt", weights_only=True))
        best_step = json.loads((Path(folder) / "state.json").read_text())["step"]
    model.eval()
    say(f"train: final evaluation of step {best_step} (IW-NLL with K={spec.train.final_iw_samples})")
    metrics = final_metrics(model, data, spec)
    metrics.update(best_step=best_step, steps=latest_history[-1]["step"] if latest_history else 0)
    provenance = {
        "dataset": data.root.uri,
        "dataset_spec_hash": data.manifest["spec_hash"],
        "train_spec_hash": identity_hash(spec),
        "vaelm_version": __version__,
        "created_at": now(),
        "workers": spec.train.num_workers,
        "use_gpu": spec.train.use_gpu,
    }
    files = artifact_files(
        model=model, model_config=model_cfg, tokenizer_json=data.tokenizer_json, metrics=metrics, provenance=provenance
    )
    for name, blob in files.items():
        storage.write_bytes(out.join(name), blob)
    _write_history(out, latest_history)
    return {**summarize(metrics), "samples": metrics.get("greedy_samples", [])[:5], "output": out.uri}


def _best_checkpoint(result: Any) -> Any:
    ranked = [(m.get("val_elbo", float("inf")), c) for c, m in (result.best_checkpoints or [])]
    if ranked:
        return min(ranked, key=lambda x: x[0])[1]
    if result.checkpoint is None:
        raise RuntimeError(f"training produced no checkpoint ({result.error}); rerun the job to resume")
    return result.checkpoint


def _history(checkpoint: Any) -> list[dict[str, Any]]:
    if checkpoint is None:
        return []
    with checkpoint.as_directory() as folder:
        return list(json.loads((Path(folder) / "state.json").read_text())["history"])


def val_sample(data: Dataset, n_docs: int, *, seed: int) -> list[Any]:
    """A fixed seeded sample of n_docs documents of val/ (all of them if fewer), in val/'s order. Reservoir
    sampling over the shards: one pass, n_docs documents in memory. Shards are grouped by source, so a
    prefix would be one source only."""
    rng = random.Random(seed)
    kept: list[tuple[int, Any]] = []
    seen = 0
    for shard in data.shards("val"):
        for seq in storage.read_table(shard, columns=["input_ids"]).column("input_ids").to_pylist():
            if len(kept) < n_docs:
                kept.append((seen, seq))
            else:
                slot = rng.randrange(seen + 1)
                if slot < n_docs:
                    kept[slot] = (seen, seq)
            seen += 1
    return [seq for _, seq in sorted(kept, key=lambda pair: pair[0])]


def final_metrics(model: TextVAE, data: Dataset, spec: TrainSpec) -> dict[str, Any]:
    """Validation metrics of the exported model on a fixed sample of val/, with IW-NLL, and greedy
    decodings of several z from the prior (the visible check that z is used)."""
    from vaelm.text.tokenizer import decode, tokenizer_from_json

    seqs = val_sample(data, spec.train.final_eval_docs, seed=spec.train.seed)
    batches = [pad_batch(seqs[i : i + 64]) for i in range(0, len(seqs), 64)]
    # iw_chunk 8 samples x 64 documents decoded at once bounds memory (logits are rows x T x vocab floats)
    metrics: dict[str, Any] = dict(
        evaluate(model, batches, iw_samples=spec.train.final_iw_samples, iw_chunk=8, seed=spec.train.seed)
    )
    tok = tokenizer_from_json(data.tokenizer_json)
    if model.z_dim > 0:
        z = torch.randn((6, model.z_dim), generator=torch.Generator().manual_seed(spec.train.seed))
        metrics["greedy_samples"] = [decode(tok, ids) for ids in greedy(model, z=z, max_len=48)]
    metrics["mode"] = model.cfg.mode
    return metrics


def _write_history(out: Location, history: list[dict[str, Any]]) -> None:
    from torch.utils.tensorboard import SummaryWriter

    lines = "".join(json.dumps(h) + "\n" for h in history)
    storage.write_bytes(out.join("training", "metrics.jsonl"), lines.encode())
    if history:
        storage.write_bytes(out.join("training", "curves.png"), training_curves_png(history))
    with tempfile.TemporaryDirectory() as tmp:
        writer = SummaryWriter(tmp)
        for h in history:
            for key, value in h.items():
                if isinstance(value, int | float) and key not in ("step", "epoch"):
                    writer.add_scalar(key, value, h["step"])
        writer.close()
        for path in Path(tmp).iterdir():
            storage.write_bytes(out.join("training", "tensorboard", path.name), path.read_bytes())


def summarize(metrics: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "elbo_nll",
        "rec_nll",
        "kl",
        "bow_nll",
        "ppl",
        "iw_nll",
        "iw_ppl",
        "mi",
        "au",
        "collapsed",
        "distinct_decodes",
        "best_step",
        "steps",
    )
    return {k: (round(metrics[k], 3) if isinstance(metrics[k], float) else metrics[k]) for k in keys if k in metrics}
