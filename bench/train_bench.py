"""Training throughput (Ray Train vs a plain PyTorch loop) and model quality (VAE vs LSTM-LM baseline).

Part 1, throughput (QUALITY.md "train"): target tokens/s of the reference model (embedding 256, hidden
128, 2 layers, latent 32, the demo dataset's 8k vocabulary, batch 64 of ~41 tokens) trained by
`vaelm.pipeline.train.run_train` with 1 and with 2 CPU workers (cpus_per_worker 1, local Ray with 2
CPUs), read from the run's training/metrics.jsonl (one tokens_per_s per validation window; the first
window, which holds Ray Data start-up, is dropped as warm-up), against a plain single-process loop
over the same model code, the same bucketed + padded batches of the same train/ split, the same loss
step (`train_loop._step`: vae_loss with the annealed beta and free bits, Adam, gradient clipping),
with torch given 1 thread (vs 1 worker) and 2 threads (vs 2 workers). The 1-thread loop also gives
the ceiling of 2 one-thread workers: 2 x (1-thread rate) / (2-thread rate).

Part 2, quality: the default VAE recipe (BN-VAE gamma 0.5, free bits 0.15, cyclical annealing) and
the LSTM-LM baseline (model.mode: lm, the same decoder without z) trained by run_train with the same
steps, batch, data, tokenizer, lr and seed (2 workers), then evaluated here on a fixed subset of val/
(the demo dataset has train/val only, no test split): IW-NLL with K importance samples, ELBO NLL,
KL, MI, AU, perplexity.

    python -m bench.run --only train            full (writes bench/results/train.json)
    python -m bench.run --only train --quick    smoke size, not the protocol's figures
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from itertools import islice
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch

from bench.common import REPO, WORK, load_average, median

DATASET = REPO / "out" / "demo" / "dataset"
OUT = WORK / "train"
NUM_CPUS = 2
BATCH = 64
SEED = 0
TARGET_1W, TARGET_2W = 0.85, 1.5
TARGET_KL, TARGET_AU = 3.0, 8

FULL = {
    "ray_steps": 100,
    "ray_window": 25,
    "loop_reps": 3,
    "loop_warmup": 3,
    "loop_steps": 12,
    "quality_train_s": 400.0,  # training seconds per model (the brief: <= ~8 min; less to leave IW time)
    "quality_steps_min": 100,
    "quality_steps_max": 1600,
    "quality_eval_every": 100,
    "eval_docs": 1000,
    "iw_k": 100,
    "iw_budget_s": 900.0,  # VAE IW-NLL time bound; all 1,000 documents at K=100 should fit on 2 idle CPUs
}
QUICK = {
    "ray_steps": 30,
    "ray_window": 10,
    "loop_reps": 1,
    "loop_warmup": 2,
    "loop_steps": 6,
    "quality_train_s": 0.0,
    "quality_steps_min": 50,
    "quality_steps_max": 50,
    "quality_eval_every": 25,
    "eval_docs": 200,
    "iw_k": 20,
    "iw_budget_s": 20.0,
}
IW_BATCH, IW_CHUNK = 32, 10  # 320 decoder rows at a time: ~0.7 GB of logits at 63 tokens x 8k vocab


def log(message: str) -> None:
    print(f"[train-bench] {message}", file=sys.stderr, flush=True)


# -- specs and Ray runs -------------------------------------------------------------------------------


def make_spec(
    name: str, *, mode: str, workers: int, steps: int, eval_every: int, val_docs: int, final_eval_docs: int = 64
) -> Any:
    from vaelm.config.train import TrainSpec

    return TrainSpec.model_validate(
        {
            "dataset": str(DATASET),
            "output": str(OUT / name),
            "ray": {"num_cpus": NUM_CPUS},
            "model": {"mode": mode},  # reference sizes are the defaults; vocab and max_tokens from the dataset
            "train": {
                "num_workers": workers,
                "cpus_per_worker": 1,
                "batch_size": BATCH,
                "max_steps": steps,
                "eval_every": eval_every,
                "val_docs": val_docs,
                "seed": SEED,
                "final_iw_samples": 0,  # IW-NLL is computed here, bounded (see evaluate_subset)
                "final_eval_docs": final_eval_docs,
                "keep_checkpoints": 1,
            },
        }
    )


def ray_run(spec: Any) -> dict[str, Any]:
    """run_train on a fresh output and a fresh local Ray (shut down afterwards); its metric history."""
    import ray

    from vaelm.pipeline.train import run_train

    out = Path(spec.output)
    shutil.rmtree(out, ignore_errors=True)
    load = load_average()
    started = time.monotonic()
    try:
        summary = run_train(spec, overwrite=True)
    finally:
        if ray.is_initialized():
            ray.shutdown()  # the local Ray that run_train started
    seconds = time.monotonic() - started
    history = [json.loads(line) for line in (out / "training" / "metrics.jsonl").read_text().splitlines() if line]
    return {"summary": summary, "history": history, "seconds": seconds, "load_before": load}


def ray_throughput(workers: int, p: dict[str, Any]) -> dict[str, Any]:
    spec = make_spec(
        f"throughput-{workers}w",
        mode="vae",
        workers=workers,
        steps=p["ray_steps"],
        eval_every=p["ray_window"],
        val_docs=BATCH,  # one batch: the validation inside a window costs little
    )
    log(f"Ray Train, {workers} worker(s), {p['ray_steps']} steps, windows of {p['ray_window']}")
    run = ray_run(spec)
    rates = [float(h["tokens_per_s"]) for h in run["history"]]
    kept = rates[1:] if len(rates) > 1 else rates
    result = {
        "workers": workers,
        "steps": p["ray_steps"],
        "window_tokens_per_s": [round(r, 1) for r in rates],
        "tokens_per_s": round(median(kept), 1),
        "wall_seconds": round(run["seconds"], 1),
        "load_before": run["load_before"],
    }
    log(f"  -> {result}")
    return result


# -- the plain PyTorch loop ------------------------------------------------------------------------------


def plain_batches(n: int) -> list[Any]:
    """n batches of train/ made as the Ray loop makes them: length-bucketed (bucket_batches x batch docs
    sorted together, the batches shuffled with a seed); padded later, inside the timed loop. The documents
    are a seeded shuffle of the whole split, so the batch lengths follow the split's mix (the first shard
    alone holds mostly long documents)."""
    import random

    from vaelm.config.train import LoopConfig
    from vaelm.model.batching import length_buckets

    bucket = LoopConfig().bucket_batches
    seqs: list[Any] = []
    for path in sorted((DATASET / "train").glob("*.parquet")):
        seqs.extend(pq.read_table(path, columns=["input_ids"]).column("input_ids").to_numpy(zero_copy_only=False))
    random.Random(SEED).shuffle(seqs)
    chunks = (seqs[i : i + BATCH * bucket] for i in range(0, len(seqs), BATCH * bucket))
    return list(islice(length_buckets(chunks, batch_size=BATCH, seed=SEED), n))


def plain_loop(threads: int, batches: list[Any], warmup: int) -> dict[str, Any]:
    """Train a fresh reference model on `batches` in this process with `threads` torch threads: tokens/s
    of the steps after `warmup` (pad_batch included, as in the Ray loop)."""
    from vaelm.model.batching import pad_batch
    from vaelm.model.vae import TextVAE
    from vaelm.pipeline.train import open_dataset, resolve_model
    from vaelm.pipeline.train_loop import _step, make_optimizer

    spec = make_spec("plain", mode="vae", workers=1, steps=len(batches), eval_every=10**6, val_docs=BATCH)
    cfg = resolve_model(spec, open_dataset(spec.dataset, spec))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(SEED)
        model = TextVAE(cfg)
        optimizer = make_optimizer(model, spec)
        gen = torch.Generator().manual_seed(SEED)
        cpu = torch.device("cpu")
        tokens_done, started = 0, time.monotonic()
        for i, seqs in enumerate(batches):
            if i == warmup:
                tokens_done, started = 0, time.monotonic()
            tokens, lengths = pad_batch(seqs)
            terms = _step(model, optimizer, tokens, lengths, spec, i, gen, cpu)
            tokens_done += terms.n_tokens
            if not math.isfinite(float(terms.loss.detach())):
                raise RuntimeError(f"plain loop: non-finite loss at step {i}")
        seconds = time.monotonic() - started
    finally:
        torch.set_num_threads(previous)
    return {"tokens_per_s": tokens_done / seconds, "seconds": seconds, "tokens": tokens_done}


def plain_throughput(threads: int, p: dict[str, Any]) -> dict[str, Any]:
    """The plain loop in a fresh Python process (no Ray ever started in it), `loop_reps` runs, median."""
    import subprocess

    log(f"plain loop, {threads} thread(s), {p['loop_reps']} x {p['loop_steps']} steps (fresh process)")
    load = load_average()
    cmd = [sys.executable, "-m", "bench.train_bench", "loop", "--threads", str(threads)]
    cmd += ["--warmup", str(p["loop_warmup"]), "--steps", str(p["loop_steps"]), "--reps", str(p["loop_reps"])]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"plain loop failed ({done.returncode}): {done.stderr[-2000:]}")
    runs = json.loads(done.stdout.strip().splitlines()[-1])
    result = {
        "threads": threads,
        "steps_timed": p["loop_steps"],
        "runs": [round(r["tokens_per_s"], 1) for r in runs],
        "tokens_per_s": round(median([r["tokens_per_s"] for r in runs]), 1),
        "load_before": load,
    }
    log(f"  -> {result}")
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.train_bench loop --threads N ...`: the plain loop alone, JSON list of runs on stdout."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.train_bench")
    parser.add_argument("side", choices=["loop"])
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args(argv)
    batches = plain_batches(args.warmup + args.steps)
    runs = [plain_loop(args.threads, batches, args.warmup) for _ in range(args.reps)]
    print(json.dumps(runs))
    return 0


# -- quality -----------------------------------------------------------------------------------------------


def eval_subset(n_docs: int) -> list[Any]:
    """A fixed subset of val/: the seeded sample of n_docs documents that vaelm's final evaluation also
    takes (`val_sample`; val/'s shards are grouped by source, so a prefix would be news only)."""
    from vaelm.pipeline.train import open_dataset, val_sample

    spec = make_spec("eval", mode="vae", workers=1, steps=1, eval_every=1, val_docs=1)
    seqs = val_sample(open_dataset(spec.dataset, spec), n_docs, seed=SEED)
    if len(seqs) < n_docs:
        raise RuntimeError(f"val/ holds only {len(seqs)} documents, fewer than {n_docs}")
    return seqs


def load_model(folder: Path) -> Any:
    from vaelm.model.artifact import load_artifact

    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    return load_artifact(files)


def batches_of(seqs: list[Any]) -> list[Any]:
    from vaelm.model.batching import pad_batch

    return [pad_batch(seqs[i : i + IW_BATCH]) for i in range(0, len(seqs), IW_BATCH)]


def iw_bounded(model: Any, seqs: list[Any], k: int, budget_s: float, n_docs: int | None) -> dict[str, Any]:
    """IW-NLL (K=k) over the first documents of `seqs`, a batch at a time: all n_docs of them when given,
    else as many whole batches as fit budget_s (at least one). Nats per document over those documents."""
    from vaelm.model.metrics import iw_nll, perplexity

    gen = torch.Generator().manual_seed(SEED)
    total, docs, tokens, started = 0.0, 0, 0, time.monotonic()
    for tok, lengths in batches_of(seqs[:n_docs] if n_docs else seqs):
        total += float(iw_nll(model, tok, lengths, k=k, chunk=IW_CHUNK, generator=gen).sum())
        docs += tok.size(0)
        tokens += int((tok[:, 1:] != 0).sum())
        if n_docs is None and time.monotonic() - started >= budget_s:
            break
    seconds = time.monotonic() - started
    return {
        "iw_nll": round(total / docs, 4),
        "iw_ppl": round(perplexity(total, tokens), 3),
        "iw_docs": docs,
        "iw_k": k,
        "seconds": round(seconds, 1),
        "seconds_per_doc": round(seconds / docs, 3),
    }


def quality(steps: int, p: dict[str, Any]) -> dict[str, Any]:
    from vaelm.model.metrics import evaluate

    seqs = eval_subset(p["eval_docs"])
    torch.set_num_threads(NUM_CPUS)
    models: dict[str, Any] = {}
    arts: dict[str, Any] = {}
    for mode in ("vae", "lm"):
        spec = make_spec(
            f"quality-{mode}",
            mode=mode,
            workers=2,
            steps=steps,
            eval_every=p["quality_eval_every"],
            val_docs=500,
            final_eval_docs=200,
        )
        log(f"quality: training {mode}, {steps} steps, 2 workers x batch {BATCH}")
        run = ray_run(spec)
        arts[mode] = load_model(Path(spec.output))
        hist = run["history"]
        models[mode] = {
            "train_seconds": round(run["seconds"], 1),
            "load_before": run["load_before"],
            "train_tokens_per_s_median": round(median([h["tokens_per_s"] for h in hist[1:] or hist]), 1),
            "history": [
                {k: h.get(k) for k in ("step", "beta", "elbo_nll", "rec_nll", "kl", "ppl", "au", "mi", "tokens_per_s")}
                for h in hist
            ],
            "nonfinite_history": any(
                not math.isfinite(float(v)) for h in hist for v in h.values() if isinstance(v, int | float)
            ),
            "greedy_samples": (arts[mode].metrics.get("greedy_samples") or [])[:4],
        }
    for mode in ("vae", "lm"):
        started = time.monotonic()
        metrics = evaluate(arts[mode].model, batches_of(seqs), iw_samples=0, seed=SEED)
        models[mode]["eval_seconds"] = round(time.monotonic() - started, 1)
        models[mode]["metrics"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items()}
        log(f"quality: {mode} on {len(seqs)} docs -> {models[mode]['metrics']}")
    # IW-NLL: the VAE takes as many whole batches of the subset as fit the budget; the LM (exact NLL, one
    # pass) is scored on the same documents
    vae_iw = iw_bounded(arts["vae"].model, seqs, p["iw_k"], p["iw_budget_s"], None)
    lm_iw = iw_bounded(arts["lm"].model, seqs, 1, 0.0, vae_iw["iw_docs"])
    for mode, iw in (("vae", vae_iw), ("lm", lm_iw)):
        models[mode]["iw"] = iw
        models[mode]["metrics"].update(iw_nll=iw["iw_nll"], iw_ppl=iw["iw_ppl"], iw_docs=iw["iw_docs"])
        log(f"quality: {mode} IW -> {iw}")
    return models


def _part(name: str, measure: Any) -> Any:
    """Each part's result is kept under out/bench/train/parts/; with TRAIN_BENCH_REUSE=1 a kept part is
    reused instead of measured again (to re-summarize after a crash; the notes then hold older figures)."""
    path = OUT / "parts" / f"{name}.json"
    if os.environ.get("TRAIN_BENCH_REUSE") == "1" and path.exists():
        log(f"reusing {path}")
        return json.loads(path.read_text())
    value = measure()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, default=str))
    return value


def quality_steps(ray_2w_tokens_per_s: float, p: dict[str, Any]) -> int:
    """Steps that fit the training-time budget at the 2-worker rate just measured (the same for both models)."""
    if p["quality_train_s"] <= 0:
        return int(p["quality_steps_min"])
    tokens_per_step = 2 * BATCH * _mean_tokens()
    steps = p["quality_train_s"] * ray_2w_tokens_per_s / tokens_per_step
    steps = int(steps // 50 * 50)
    return max(p["quality_steps_min"], min(p["quality_steps_max"], steps))


def _mean_tokens() -> float:
    stats = json.loads((DATASET / "stats.json").read_text())["splits"]["train"]
    return float(stats["tokens"]) / float(stats["rows"])


# -- the benchmark -------------------------------------------------------------------------------------------


def run(quick: bool) -> dict[str, Any]:
    if not (DATASET / "_SUCCESS").exists():
        raise RuntimeError(
            f"{DATASET} is missing: `vaelm demo-corpus data/demo/corpus && vaelm run jobs/preprocess.yaml`"
        )
    p = QUICK if quick else FULL
    OUT.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    tag = "quick" if quick else "full"
    loop1 = _part(f"{tag}-loop1", lambda: plain_throughput(1, p))
    ray1 = _part(f"{tag}-ray1", lambda: ray_throughput(1, p))
    loop2 = _part(f"{tag}-loop2", lambda: plain_throughput(2, p))
    ray2 = _part(f"{tag}-ray2", lambda: ray_throughput(2, p))
    throughput_s = time.monotonic() - started
    ratio_1w = ray1["tokens_per_s"] / loop1["tokens_per_s"]
    ratio_2w = ray2["tokens_per_s"] / loop2["tokens_per_s"]
    ceiling_2w = 2 * loop1["tokens_per_s"] / loop2["tokens_per_s"]
    steps = quality_steps(ray2["tokens_per_s"], p)
    q = _part(f"{tag}-quality-{steps}", lambda: quality(steps, p))
    return summarize(quick, p, loop1, loop2, ray1, ray2, ratio_1w, ratio_2w, ceiling_2w, steps, q, throughput_s)


def summarize(
    quick: bool,
    p: dict[str, Any],
    loop1: dict[str, Any],
    loop2: dict[str, Any],
    ray1: dict[str, Any],
    ray2: dict[str, Any],
    ratio_1w: float,
    ratio_2w: float,
    ceiling_2w: float,
    steps: int,
    q: dict[str, Any],
    throughput_s: float,
) -> dict[str, Any]:
    vae, lm = q["vae"]["metrics"], q["lm"]["metrics"]
    linear_2w = ray2["tokens_per_s"] / (2 * loop1["tokens_per_s"])  # vs perfect scaling of the 1-thread loop
    met_1w, met_2w = ratio_1w >= TARGET_1W, ratio_2w >= TARGET_2W
    scaling_2w = ray2["tokens_per_s"] / loop1["tokens_per_s"]  # the baseline: one plain process
    met_scaling = scaling_2w >= TARGET_2W
    of_ceiling = ratio_2w / ceiling_2w
    met_iw = vae["iw_nll"] <= lm["iw_nll"]
    met_kl, met_au = vae["kl"] >= TARGET_KL, vae["au"] >= TARGET_AU
    k, docs = p["iw_k"], p["eval_docs"]
    iw_docs = q["vae"]["iw"]["iw_docs"]
    rows = [
        [
            "1 worker vs 1 thread",
            ray1["tokens_per_s"],
            loop1["tokens_per_s"],
            round(ratio_1w, 3),
            1.0,
            TARGET_1W,
            met_1w,
            f"{ray1['load_before'][0]:.1f} / {loop1['load_before'][0]:.1f}",
        ],
        [
            "2 workers vs 2 threads",
            ray2["tokens_per_s"],
            loop2["tokens_per_s"],
            round(ratio_2w, 3),
            round(ceiling_2w, 3),
            TARGET_2W,
            met_2w,
            f"{ray2['load_before'][0]:.1f} / {loop2['load_before'][0]:.1f}",
        ],
        [
            "2 workers vs 1 thread (one plain process)",
            ray2["tokens_per_s"],
            loop1["tokens_per_s"],
            round(scaling_2w, 3),
            2.0,
            TARGET_2W,
            met_scaling,
            f"{ray2['load_before'][0]:.1f} / {loop1['load_before'][0]:.1f}",
        ],
    ]
    qrows = [
        [
            name,
            steps,
            m["iw_nll"],
            m["iw_ppl"],
            m["elbo_nll"],
            m["ppl"],
            m["rec_nll"],
            m["kl"],
            m["mi"],
            f"{m['au']} / {32 if name == 'VAE (default recipe)' else 0}",
            m.get("distinct_decodes", "–"),
            q[key]["train_seconds"],
            q[key]["eval_seconds"],
        ]
        for name, key, m in (("VAE (default recipe)", "vae", vae), ("LSTM-LM (mode: lm)", "lm", lm))
    ]
    quick_note = (
        ["QUICK RUN: smoke-test sizes (few steps, small K and subset); these are NOT the protocol's figures."]
        if quick
        else []
    )
    notes = [
        *quick_note,
        f"Throughput targets (issue 3): Ray/loop >= {TARGET_1W}x with 1 worker: {ratio_1w:.2f}x, "
        f"{'met' if met_1w else 'NOT met'}; >= {TARGET_2W}x with 2 workers against the plain single-process loop "
        f"(1 thread): {scaling_2w:.2f}x, {'met' if met_scaling else 'NOT met'}. Against the 2-thread loop "
        f"(QUALITY.md's baseline: as many threads as the workers have CPUs) 2 workers give {ratio_2w:.2f}x, "
        f"{of_ceiling:.0%} of the {ceiling_2w:.2f}x ceiling (QUALITY.md aims at 90% of the ceiling: "
        f"{'met' if of_ceiling >= 0.9 else 'NOT met'}); {TARGET_2W}x over the 2-thread loop is above that ceiling, "
        "so it cannot be met on this machine by any data-parallel run. Ceiling for 2 one-thread workers vs the "
        f"2-thread loop = 2 x (1-thread rate) / (2-thread rate) = {ceiling_2w:.2f}x. A ceiling far above "
        "2 means the 2-thread loop ran slower than 2 one-thread processes would (intra-op threads waiting on each "
        "other on a loaded machine), which flatters the 2-worker ratio; the stricter figure, 2 workers against "
        f"twice the 1-thread loop (perfect scaling), is {linear_2w:.2f}x.",
        f"Ray: `run_train` (local Ray, num_cpus={NUM_CPUS}, cpus_per_worker 1, batch {BATCH} per worker, "
        f"{p['ray_steps']} steps, validation + checkpoint every {p['ray_window']} steps on {BATCH} val docs). "
        "tokens/s = the median over the windows of training/metrics.jsonl after the first (warm-up, Ray Data "
        "start); each later window also contains the previous validation and checkpoint (the loop's clock "
        "restarts before them), a real cost of the Ray run. With 2 workers on 2 CPUs vaelm reserves 1 CPU for "
        "Ray Data, so each worker holds 0.5 logical CPU but runs 1 torch thread. Windows (tokens/s): "
        f"1 worker {ray1['window_tokens_per_s']}, 2 workers {ray2['window_tokens_per_s']}.",
        f"Loop: the same TextVAE code and train step (`train_loop._step`: vae_loss with annealed beta and free "
        f"bits, Adam lr 1e-3, grad clip 5) over the first {p['loop_warmup'] + p['loop_steps']} length-bucketed "
        f"batches of train/ (pad_batch inside the timed loop), {p['loop_warmup']} warm-up steps then "
        f"{p['loop_steps']} timed, median of {p['loop_reps']} runs in one fresh Python process per thread count "
        f"(no Ray in it; 1 thread: {loop1['runs']}, "
        f"2 threads: {loop2['runs']}). Order: loop 1t, Ray 1w, loop 2t, Ray 2w.",
        "The machine is shared: the load column is the 1-minute load average before each side "
        "(Ray / loop); with load well above 2 on 2 CPUs every figure here is depressed and noisy.",
        f"Quality targets: VAE IW-NLL <= LM IW-NLL: {vae['iw_nll']:.2f} vs {lm['iw_nll']:.2f}, "
        f"{'met' if met_iw else 'NOT met'}; KL >= {TARGET_KL}: {vae['kl']:.2f}, {'met' if met_kl else 'NOT met'}; "
        f"AU >= {TARGET_AU} of 32: {vae['au']}, {'met' if met_au else 'NOT met'}.",
        f"Quality budget: both models trained by `run_train` with 2 workers x batch {BATCH}, the same {steps} "
        f"steps (= {steps * 2 * BATCH:,} documents, {steps * 2 * BATCH / 33066:.2f} epochs of the 33,066 "
        "training documents), lr 1e-3, seed 0, the same data and tokenizer; "
        + (
            f"the step count is what fit {p['quality_train_s']:.0f} s of training at the 2-worker rate measured "
            f"above (clamped to [{p['quality_steps_min']}, {p['quality_steps_max']}])"
            if p["quality_train_s"] > 0
            else f"the step count is fixed at {steps} (quick)"
        )
        + f", so the VAE has seen {min(steps / 400, 4):.2f} of its 4 cyclical-annealing cycles of 400 steps.",
        f"Evaluation: a fixed seeded sample of {docs} documents of val/ (the demo dataset has train and "
        f"val only, no test split, so this stands in for QUALITY.md's test subset; val/ is never trained on). "
        "ELBO NLL, rec NLL, KL, MI, AU "
        f"and ELBO ppl over all {docs} documents (one z per document; MI with q(z) over the whole subset; nats "
        f"per document; for the LM, KL = 0 and the ELBO NLL is its exact NLL). IW-NLL with K={k} (batches of "
        f"{IW_BATCH}, {IW_CHUNK} samples at a time) is time-bounded on this shared 2-CPU machine: the VAE is "
        f"scored on as many whole batches of the subset as fit {p['iw_budget_s']:.0f} s, which came to the first "
        f"{iw_docs} documents of the sample ({q['vae']['iw']['seconds']} s, "
        f"{q['vae']['iw']['seconds_per_doc']} s per document; "
        f"all {docs} would take ~{q['vae']['iw']['seconds_per_doc'] * docs:.0f} s), and the LM on the same "
        f"{iw_docs} documents (exact NLL). IW ppl = exp(IW-NLL total / target tokens) over those documents.",
        "Greedy decodes of different z from the prior (VAE): " + " | ".join(q["vae"]["greedy_samples"]),
    ]
    return {
        "title": "Training: target tokens/s of Ray Train (1 and 2 CPU workers) vs a plain PyTorch loop on the same "
        "batches; and the VAE vs the LSTM-LM baseline at the same budget on the demo dataset.",
        "metrics": {
            "ray_tokens_per_s": {"1w": ray1["tokens_per_s"], "2w": ray2["tokens_per_s"]},
            "ceiling_2w": round(ceiling_2w, 3),
            "vae": {k2: vae.get(k2) for k2 in ("iw_nll", "iw_ppl", "elbo_nll", "ppl", "kl", "mi", "au")},
        },
        "baseline": {
            "loop_tokens_per_s": {"1t": loop1["tokens_per_s"], "2t": loop2["tokens_per_s"]},
            "lm": {k2: lm.get(k2) for k2 in ("iw_nll", "iw_ppl", "elbo_nll", "ppl")},
        },
        "ratio": {
            "throughput_1w": round(ratio_1w, 3),
            "throughput_2w": round(ratio_2w, 3),
            "throughput_2w_vs_2x_1thread": round(linear_2w, 3),
            "throughput_2w_vs_1thread": round(scaling_2w, 3),
            "iw_nll_vae_over_lm": round(vae["iw_nll"] / lm["iw_nll"], 4),
        },
        "target": {
            "throughput_1w": {"min": TARGET_1W, "measured": round(ratio_1w, 3), "met": met_1w},
            "throughput_2w": {
                "min": TARGET_2W,
                "measured": round(ratio_2w, 3),
                "ceiling": round(ceiling_2w, 3),
                "met": met_2w,
            },
            "throughput_2w_vs_1thread_loop": {"min": TARGET_2W, "measured": round(scaling_2w, 3), "met": met_scaling},
            "throughput_2w_of_ceiling": {"min": 0.9, "measured": round(of_ceiling, 3), "met": of_ceiling >= 0.9},
            "iw_nll_vae_le_lm": {"vae": vae["iw_nll"], "lm": lm["iw_nll"], "met": met_iw},
            "kl_ge_3": {"measured": vae["kl"], "met": met_kl},
            "au_ge_8": {"measured": vae["au"], "met": met_au},
        },
        "budget": {
            "quality_steps": steps,
            "quality_workers": 2,
            "batch_per_worker": BATCH,
            "quality_train_budget_s": p["quality_train_s"],
            "eval_docs": docs,
            "eval_subset": f"seeded sample of {docs} documents of val/ (vaelm.pipeline.train.val_sample, seed {SEED})",
            "iw_docs": iw_docs,
            "iw_budget_s": p["iw_budget_s"],
            "iw_k": k,
            "throughput_seconds": round(throughput_s, 1),
        },
        "table": {
            "columns": [
                "throughput",
                "Ray tokens/s",
                "loop tokens/s",
                "ratio",
                "ceiling",
                "target",
                "met",
                "load before (Ray / loop)",
            ],
            "rows": rows,
        },
        "tables": [
            {
                "title": f"Quality at the same budget ({steps} steps x 2 workers x batch {BATCH}); a fixed sample of "
                f"{docs} val documents (IW-NLL: {iw_docs} of them, K={k}); nats per document",
                "columns": [
                    "model",
                    "steps",
                    f"IW-NLL (K={k}, {iw_docs} docs)",
                    "IW ppl",
                    "ELBO NLL",
                    "ELBO ppl",
                    "rec NLL",
                    "KL",
                    "MI",
                    "AU",
                    "distinct greedy decodes of 8 z",
                    "train s",
                    "eval s",
                ],
                "rows": qrows,
            }
        ],
        "notes": notes,
        "throughput": {"loop_1t": loop1, "loop_2t": loop2, "ray_1w": ray1, "ray_2w": ray2},
        "quality": q,
    }


if __name__ == "__main__":
    sys.exit(main())
