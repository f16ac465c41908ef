"""`vaelm preprocess`: a Parquet corpus -> a tokenized, deduplicated, split dataset (DESIGN.md contract).

Steps, each over units of the input on a pool of Ray actors, each unit committed when done:
  1. clean     decode, normalise, filter (rejects with reasons); dedup keys written sharded by key range
  2. dedup     one actor per key range finds equal keys; the driver joins groups (union-find); the
               lowest input position of a group survives
  3. tokenizer train byte-level BPE on a deterministic sample of surviving documents (or load one)
  4. tokenize  drop duplicates, tokenize, split train/val by hash of id, write shards
  5. finish    reconcile counts, write stats.json, manifest.json, then _SUCCESS
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vaelm import __version__, storage
from vaelm.config.loader import identity_hash, public_dict
from vaelm.config.preprocess import PreprocessSpec
from vaelm.errors import InputError
from vaelm.pipeline import preprocess_steps as steps
from vaelm.pipeline.actors import run_units
from vaelm.pipeline.cluster import cluster_cpus, ensure_ray, pool_size
from vaelm.pipeline.commit import WORK, Ledger, claim_output, mark_success, now
from vaelm.pipeline.progress import say
from vaelm.pipeline.units import InputPlan, Unit, plan_input
from vaelm.storage import Location
from vaelm.text.dedup import UnionFind

REMOVED_SCHEMA = pa.schema([("order", pa.int64()), ("kind", pa.string()), ("survivor_id", pa.string())])


def run_preprocess(spec: PreprocessSpec, *, overwrite: bool = False) -> dict[str, Any]:
    spec = spec.model_copy(update={"storage": spec.storage.resolved()})
    root = storage.open_location(spec.output, spec.storage)
    plan = plan_input(spec.input, spec.storage)
    say(f"preprocess: {len(plan.files)} files, {plan.rows} rows, {len(plan.units)} units -> {root.uri}")
    state = claim_output(
        root, job="preprocess", identity=identity_hash(spec), fingerprint=plan.fingerprint, overwrite=overwrite
    )
    if state == "done":
        say(f"{root.uri} is already complete for this spec and input: nothing to do")
        return {**summarize(storage.read_json(root.join("stats.json")), root), "status": "already complete"}
    ensure_ray(spec.ray)
    data = spec.model_dump()
    n_shards = _dedup_shards(root, spec, plan)
    clean = run_units(
        steps.CleanStep,
        (data,),
        init_kwargs={"n_shards": n_shards},
        ledger=Ledger(root, "clean"),
        units=plan.units,
        ray_cfg=spec.ray,
        label="1/4 clean+filter",
    )
    removed, dup_stats = _dedup(root, spec, plan, n_shards)
    tokenizer_json = _tokenizer(root, spec, plan, removed, clean)
    by_unit = _removed_by_unit(removed)
    tok = run_units(
        steps.TokenizeStep,
        (data,),
        ledger=Ledger(root, "tokenize"),
        units=plan.units,
        ray_cfg=spec.ray,
        label="4/4 tokenize+split",
        extra_args=lambda u: (by_unit.get(u.index, removed.slice(0, 0)),),
    )
    stats = _finish(root, spec, plan, clean, dup_stats, tok, tokenizer_json)
    return {**summarize(stats, root), "status": "resumed and completed" if state == "resume" else "completed"}


def _dedup_shards(root: Location, spec: PreprocessSpec, plan: InputPlan) -> int:
    """The number of key ranges; fixed at the first run (recorded) so a resume reuses it."""
    path = root.join(WORK, "plan.json")
    if storage.exists(path):
        return int(storage.read_json(path)["dedup_shards"])
    # about 2M keys (id + exact + one per LSH band, per document) per key range bounds an actor's memory
    keys = plan.rows * (12 if spec.dedup.near else 2)
    n = spec.dedup.num_shards or max(2, int(cluster_cpus()), math.ceil(keys / 2_000_000))
    storage.write_json(path, {"dedup_shards": n, "units": len(plan.units)})
    return n


# -- 2. dedup ----------------------------------------------------------------------------------------


def _dedup(root: Location, spec: PreprocessSpec, plan: InputPlan, n_shards: int) -> tuple[pa.Table, dict[str, int]]:
    ledger = Ledger(root, "dedup")
    path = root.join(WORK, "dedup", "removed.parquet")
    committed = ledger.committed()
    if "all" in committed:
        say("2/4 dedup: already committed")
        return storage.read_table(path), committed["all"]
    pairs = _shard_pairs(root, spec, n_shards)
    removed = _resolve_groups(root, pairs)
    stats = {k: int(pc.sum(pc.equal(removed.column("kind"), k)).as_py() or 0) for k in ("exact", "near", "id")}
    storage.write_table(path, removed)
    ledger.commit("all", stats)
    say(f"2/4 dedup: {stats['exact']} exact, {stats['near']} near duplicates, {stats['id']} repeated ids")
    return removed, stats


def _shard_pairs(root: Location, spec: PreprocessSpec, n_shards: int) -> dict[str, np.ndarray]:
    import ray
    from ray.util import ActorPool

    remote = ray.remote(num_cpus=spec.ray.actor_cpus, max_restarts=3, max_task_retries=3)(steps.DedupShard)
    size = pool_size(spec.ray, work_items=n_shards)
    actors = [remote.remote(spec.output, spec.storage.model_dump()) for _ in range(size)]
    try:
        results = list(ActorPool(actors).map_unordered(lambda a, s: a.__call__.remote(s), list(range(n_shards))))
    finally:
        for actor in actors:
            ray.kill(actor)  # type: ignore[arg-type]
    empty = np.zeros((0, 2), dtype=np.int64)
    return {k: np.concatenate([r.get(k, empty) for r in results] or [empty]) for k in ("exact", "band", "id")}


def _resolve_groups(root: Location, pairs: dict[str, np.ndarray]) -> pa.Table:
    """Union-find over exact and band collisions (documents with a repeated id left out first)."""
    id_removed = {int(a): int(b) for a, b in pairs["id"]}
    edges = np.unique(np.concatenate([pairs["exact"], pairs["band"]]), axis=0)  # a copy repeats its pair per band
    if id_removed:
        gone = np.fromiter(id_removed, dtype=np.int64)
        edges = edges[~(np.isin(edges[:, 0], gone) | np.isin(edges[:, 1], gone))]
    uf = UnionFind()
    for a, b in edges.tolist():
        uf.union(a, b)
    dup = {node: uf.find(node) for node in list(uf.parent) if uf.find(node) != node}
    info = _doc_info(root, {*dup, *dup.values(), *id_removed.values()})
    rows = [(o, "exact" if info[o][1] == info[s][1] else "near", info[s][0]) for o, s in sorted(dup.items())]
    rows += [(o, "id", info[s][0]) for o, s in sorted(id_removed.items())]
    return pa.table(
        {"order": [r[0] for r in rows], "kind": [r[1] for r in rows], "survivor_id": [r[2] for r in rows]},
        schema=REMOVED_SCHEMA,
    )


def _doc_info(root: Location, orders: set[int]) -> dict[int, tuple[str, int]]:
    """order -> (id, exact_key) for the given documents, read from their units' clean shards."""
    info: dict[int, tuple[str, int]] = {}
    for unit in sorted({steps.unit_of(o) for o in orders}):
        table = storage.read_table(steps.clean_path(root, f"part-{unit:05d}"), columns=["order", "id", "exact_key"])
        for o, i, k in zip(*(table.column(c).to_pylist() for c in ("order", "id", "exact_key")), strict=True):
            if o in orders:
                info[o] = (i, k)
    return info


def _removed_by_unit(removed: pa.Table) -> dict[int, pa.Table]:
    units = pc.shift_right(removed.column("order"), 32)
    return {int(u): removed.filter(pc.equal(units, u)) for u in pc.unique(units).to_pylist()}


# -- 3. tokenizer ------------------------------------------------------------------------------------


def _tokenizer(
    root: Location, spec: PreprocessSpec, plan: InputPlan, removed: pa.Table, clean: dict[str, dict[str, Any]]
) -> str:
    from vaelm.text.tokenizer import (
        check_special_tokens,
        tokenizer_from_json,
        tokenizer_to_json,
        train_tokenizer,
    )

    path = steps.tokenizer_path(root)
    if "all" in Ledger(root, "tokenizer").committed():
        return storage.read_bytes(path).decode()
    if spec.tokenizer.path:
        given = storage.read_bytes(storage.open_location(spec.tokenizer.path, spec.storage)).decode()
        tok = tokenizer_from_json(given, where=spec.tokenizer.path)
        check_special_tokens(tok, where=spec.tokenizer.path)
    else:
        kept = sum(s["kept"] for s in clean.values()) - removed.num_rows
        if kept <= 0:
            raise InputError(
                f"no documents are left after filtering and dedup ({_reasons(clean)}); loosen "
                "filters in the spec or check input.text_column"
            )
        fraction = min(1.0, spec.tokenizer.sample_docs / kept)
        texts = _sample(root, plan.units, _removed_by_unit(removed), fraction=fraction)
        say(f"3/4 tokenizer: training byte-level BPE (vocab {spec.tokenizer.vocab_size}) on {len(texts)} documents")
        tok = train_tokenizer(texts, vocab_size=spec.tokenizer.vocab_size, min_frequency=spec.tokenizer.min_frequency)
    text = tokenizer_to_json(tok)
    storage.write_bytes(path, text.encode())
    Ledger(root, "tokenizer").commit("all", {"vocab_size": tok.get_vocab_size(), "given": spec.tokenizer.path})
    return text


def _sample(root: Location, units: list[Unit], removed: dict[int, pa.Table], *, fraction: float) -> list[str]:
    """Surviving documents whose exact key falls in the lowest `fraction` of the key space."""
    limit = pa.scalar(min(int(fraction * 2**64), 2**64 - 1), pa.uint64())
    texts: list[str] = []
    for unit in units:
        table = storage.read_table(steps.clean_path(root, unit.name), columns=["order", "text", "exact_key"])
        table = table.filter(pc.less_equal(table.column("exact_key"), limit))
        if unit.index in removed:
            drop = removed[unit.index].column("order")
            table = table.filter(pc.invert(pc.is_in(table.column("order"), value_set=drop)))
        texts.extend(table.column("text").to_pylist())
    return texts


def _reasons(clean: dict[str, dict[str, Any]]) -> str:
    total: dict[str, int] = {}
    for s in clean.values():
        for reason, n in s["rejected"].items():
            total[reason] = total.get(reason, 0) + n
    return ", ".join(f"{n} {r}" for r, n in sorted(total.items(), key=lambda x: -x[1])) or "no rows at all"


# -- 5. finish ---------------------------------------------------------------------------------------


def _finish(
    root: Location,
    spec: PreprocessSpec,
    plan: InputPlan,
    clean: dict[str, dict[str, Any]],
    dup: dict[str, int],
    tok: dict[str, dict[str, Any]],
    tokenizer_json: str,
) -> dict[str, Any]:
    stats = _stats(plan, clean, dup, tok)
    counts = stats["counts"]
    if counts["rows_in"] != counts["train_documents"] + counts["val_documents"] + counts["rejected"]:
        raise RuntimeError(
            f"counts do not reconcile, the dataset is NOT marked complete: {counts}; "
            "this is a bug, please report it with the output's _work/ folder"
        )
    _remove_orphans(root, plan.units)
    storage.write_json(root.join("stats.json"), stats)
    storage.write_json(root.join("manifest.json"), _manifest(spec, plan, stats, tokenizer_json))
    storage.delete_tree(root.join(WORK))
    mark_success(root)
    return stats


def _stats(
    plan: InputPlan, clean: dict[str, dict[str, Any]], dup: dict[str, int], tok: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    dropped: dict[str, int] = {}
    for s in [*clean.values(), *tok.values()]:
        for reason, n in s["rejected"].items():
            dropped[reason] = dropped.get(reason, 0) + n
    kept_clean = sum(s["kept"] for s in clean.values())
    split = {
        k: {m: sum(s[k][m] for s in tok.values()) for m in ("documents", "rows", "tokens")} for k in ("train", "val")
    }
    rows_in = plan.rows
    counts = {
        "rows_in": rows_in,
        "train_documents": split["train"]["documents"],
        "val_documents": split["val"]["documents"],
        "rejected": sum(dropped.values()),
    }
    after_dedup = kept_clean - sum(dup.values())
    return {
        "counts": counts,
        "stages": {
            "clean": {"in": rows_in, "out": kept_clean},
            "dedup": {"in": kept_clean, "out": after_dedup},
            "tokenize": {"in": after_dedup, "out": counts["train_documents"] + counts["val_documents"]},
        },
        "dropped": dict(sorted(dropped.items(), key=lambda x: -x[1])),
        "duplicates": dup,
        "splits": split,
        "utf8_replaced": sum(s.get("utf8_replaced", 0) for s in clean.values()),
        "skipped_files": plan.skipped,
    }


def _manifest(spec: PreprocessSpec, plan: InputPlan, stats: dict[str, Any], tokenizer_json: str) -> dict[str, Any]:
    import hashlib
    import json

    names = [u.name for u in plan.units]
    vocab = len(json.loads(tokenizer_json)["model"]["vocab"])
    return {
        "format": "vaelm.preprocessed/1",
        "vaelm_version": __version__,
        "created_at": now(),
        "spec_hash": identity_hash(spec),
        "spec": public_dict(spec),
        "input": {
            "paths": spec.input.paths,
            "fingerprint": plan.fingerprint,
            "files": [{"uri": f.uri, "size": f.size, "mtime_ns": f.mtime_ns} for f in plan.files],
        },
        "counts": stats["counts"],
        "tokenizer": {
            "path": "tokenizer/tokenizer.json",
            "vocab_size": vocab,
            "sha256": hashlib.sha256(tokenizer_json.encode()).hexdigest(),
        },
        "max_tokens": spec.tokenize.max_tokens,
        "shards": {
            "train": [f"train/{n}.parquet" for n in names],
            "val": [f"val/{n}.parquet" for n in names],
            "rejects": [f"rejects/{s}-{n}.parquet" for s in ("clean", "tokenize") for n in names],
        },
        "columns": [
            "id",
            "chunk",
            "text",
            "input_ids",
            "n_tokens",
            *([] if spec.input.label_column is None else ["label"]),
            *spec.input.passthrough_columns,
        ],
    }


def _remove_orphans(root: Location, units: list[Unit]) -> None:
    """Delete data files that no committed unit wrote (left by an interrupted earlier attempt)."""
    names = {u.name for u in units}
    for folder in ("train", "val", "rejects"):
        for entry in storage.list_files(root.join(folder)):
            stem = entry.uri.rsplit("/", 1)[-1].removesuffix(".parquet").split("-", 1)[-1]
            base = entry.uri.rsplit("/", 1)[-1].removesuffix(".parquet")
            if base not in names and stem not in names:
                storage.delete_file(root.at(entry))


def summarize(stats: dict[str, Any], root: Location) -> dict[str, Any]:
    c = stats["counts"]
    return {
        "output": root.uri,
        "documents_in": c["rows_in"],
        "train_documents": c["train_documents"],
        "val_documents": c["val_documents"],
        "rejected": c["rejected"],
        "dropped_by_reason": stats["dropped"],
        "exact_duplicates": stats["duplicates"].get("exact", 0),
        "near_duplicates": stats["duplicates"].get("near", 0),
        "train_tokens": stats["splits"]["train"]["tokens"],
        "val_tokens": stats["splits"]["val"]["tokens"],
    }
