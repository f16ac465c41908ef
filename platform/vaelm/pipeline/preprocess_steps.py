"""The per-unit steps of `vaelm preprocess`, run inside Ray actors (see preprocess.py).

Each step reads one unit, applies the pure functions of vaelm.text row by row, and writes its files
to deterministic names under the output root. The driver commits a unit only after its step returns.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from vaelm import storage
from vaelm.config.preprocess import PreprocessSpec
from vaelm.pipeline.units import Unit, read_unit
from vaelm.storage import Location
from vaelm.text.dedup import MinHasher, exact_key, id_key
from vaelm.text.filters import build_filters, drop_reason
from vaelm.text.normalize import decode_text, normalize

KIND_EXACT, KIND_BAND, KIND_ID = 0, 1, 2
REJECT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("row", pa.int64()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("excerpt", pa.string()),
    ]
)


def clean_path(root: Location, unit_name: str) -> Location:
    return root.join("_work", "clean", f"{unit_name}.parquet")


def keys_path(root: Location, shard: int, unit_name: str) -> Location:
    return root.join("_work", "keys", f"shard-{shard:04d}", f"{unit_name}.parquet")


def order_of(unit_index: int, row: int) -> int:
    """A document's place in the input: unit and row. The lowest order of a duplicate group survives."""
    return (unit_index << 32) | row


def unit_of(order: int) -> int:
    return order >> 32


@dataclass
class Rejects:
    """Rows dropped by a step, with their reasons (REJECT_SCHEMA)."""

    stage: str
    excerpt_chars: int
    rows: dict[str, list[Any]] = field(default_factory=lambda: {n: [] for n in REJECT_SCHEMA.names})

    def add(self, *, doc_id: str | None, source: str, row: int, reason: str, text: str | None) -> None:
        values = (doc_id, source, row, self.stage, reason, (text or "")[: self.excerpt_chars])
        for name, value in zip(REJECT_SCHEMA.names, values, strict=True):
            self.rows[name].append(value)

    def counts(self) -> dict[str, int]:
        return dict(Counter(r.split(":", 1)[0] for r in self.rows["reason"]))

    def table(self) -> pa.Table:
        return pa.table(self.rows, schema=REJECT_SCHEMA)


class CleanStep:
    """Step 1: decode, normalise, filter; write kept rows and their dedup keys, sharded by key range."""

    def __init__(self, spec_data: dict[str, Any], *, n_shards: int) -> None:
        self.spec = PreprocessSpec.model_validate(spec_data)
        self.root = storage.open_location(self.spec.output, self.spec.storage)
        self.filters = build_filters(self.spec.filters)
        self.hasher = MinHasher.from_config(self.spec.dedup) if self.spec.dedup.near else None
        self.n_shards = n_shards

    def __call__(self, unit: Unit) -> dict[str, Any]:
        table = read_unit(unit, self.spec.input, self.spec.storage)
        rejects = Rejects("clean", self.spec.excerpt_chars)
        kept_rows, replaced = self._clean(table, unit, rejects)
        kept = table.take(pa.array(kept_rows, pa.int64())).drop_columns(["text"])
        texts = [self._texts[i] for i in kept_rows]
        orders = [order_of(unit.index, i) for i in kept_rows]
        kept = kept.append_column("text", pa.array(texts, pa.string()))
        kept = kept.append_column("order", pa.array(orders, pa.int64()))
        kept = kept.append_column("row", pa.array([unit.first_row + i for i in kept_rows], pa.int64()))
        kept = kept.append_column("exact_key", pa.array([exact_key(t) for t in texts], pa.uint64()))
        storage.write_table(clean_path(self.root, unit.name), kept)
        storage.write_table(self.root.join("rejects", f"clean-{unit.name}.parquet"), rejects.table())
        self._write_keys(unit, kept)
        return {
            "rows_in": table.num_rows,
            "kept": kept.num_rows,
            "rejected": rejects.counts(),
            "utf8_replaced": replaced,
        }

    def _clean(self, table: pa.Table, unit: Unit, rejects: Rejects) -> tuple[list[int], int]:
        raws = table.column("text").to_pylist()
        ids = table.column("id").to_pylist()
        self._texts: dict[int, str] = {}
        kept: list[int] = []
        replaced = 0
        for i, (raw, doc_id) in enumerate(zip(raws, ids, strict=True)):
            text, reason, fixed = self._clean_one(raw, doc_id)
            replaced += fixed
            if reason is not None:
                rejects.add(doc_id=doc_id, source=unit.source, row=unit.first_row + i, reason=reason, text=text)
            else:
                self._texts[i] = text or ""
                kept.append(i)
        return kept, replaced

    def _clean_one(self, raw: bytes | None, doc_id: str | None) -> tuple[str | None, str | None, bool]:
        if doc_id is None or doc_id == "":
            return _lossy(raw), "null_id", False
        if raw is None:
            return None, "null_text", False
        decoded = decode_text(raw, policy=self.spec.normalize.invalid_utf8)
        if decoded.text is None:
            return _lossy(raw), decoded.reason, False
        text = normalize(decoded.text, self.spec.normalize)
        return text, drop_reason(text, self.filters), decoded.replaced

    def _write_keys(self, unit: Unit, kept: pa.Table) -> None:
        orders = kept.column("order").to_numpy()
        parts = [(KIND_ID, [id_key(i) for i in kept.column("id").to_pylist()], orders)]
        if self.spec.dedup.exact:
            parts.append((KIND_EXACT, kept.column("exact_key").to_pylist(), orders))
        if self.hasher is not None:
            bands = [self.hasher.band_keys(self.hasher.signature(t)) for t in kept.column("text").to_pylist()]
            per_doc = len(bands[0]) if bands else 0
            parts.append((KIND_BAND, [k for b in bands for k in b], np.repeat(orders, per_doc)))
        keys = np.concatenate([np.asarray(k, dtype=np.uint64) for _, k, _ in parts])
        kinds = np.concatenate([np.full(len(k), kind, dtype=np.int8) for kind, k, _ in parts])
        all_orders = np.concatenate([np.asarray(o, dtype=np.int64) for _, _, o in parts])
        shard = ((keys >> np.uint64(32)) * np.uint64(self.n_shards)) >> np.uint64(32)
        for s in range(self.n_shards):
            mask = shard == s
            table = pa.table({"key": keys[mask], "kind": kinds[mask], "order": all_orders[mask]})
            storage.write_table(keys_path(self.root, s, unit.name), table)


def _lossy(raw: bytes | None) -> str | None:
    return None if raw is None else raw[:4096].decode("utf-8", errors="replace")


class DedupShard:
    """Step 2: one actor per range of the key space. Finds groups of equal keys in its range only, so
    its memory grows with its share of the keys, not with the corpus."""

    def __init__(self, output: str, storage_data: dict[str, Any]) -> None:
        from vaelm.config.common import StorageConfig

        self.root = storage.open_location(output, StorageConfig.model_validate(storage_data))

    def __call__(self, shard: int) -> dict[str, np.ndarray]:
        files = storage.list_files(self.root.join("_work", "keys", f"shard-{shard:04d}"))
        tables = [storage.read_table(self.root.at(f)) for f in files]
        if not tables:
            return {}
        table = pa.concat_tables(tables)
        return group_pairs(
            table.column("key").to_numpy(), table.column("kind").to_numpy(), table.column("order").to_numpy()
        )


def group_pairs(keys: np.ndarray, kinds: np.ndarray, orders: np.ndarray) -> dict[str, np.ndarray]:
    """For each group of rows sharing (kind, key): pairs (member, first member by order), per kind."""
    idx = np.lexsort((orders, keys, kinds))
    keys, kinds, orders = keys[idx], kinds[idx], orders[idx]
    starts = np.ones(len(keys), dtype=bool)
    starts[1:] = (keys[1:] != keys[:-1]) | (kinds[1:] != kinds[:-1])
    first = orders[np.maximum.accumulate(np.where(starts, np.arange(len(keys)), 0))]
    out: dict[str, np.ndarray] = {}
    for name, kind in (("exact", KIND_EXACT), ("band", KIND_BAND), ("id", KIND_ID)):
        sel = (~starts) & (kinds == kind) & (orders != first)
        out[name] = np.stack([orders[sel], first[sel]], axis=1)
    return out


def split_of(doc_id: str, val_fraction: float) -> str:
    """'val' or 'train', decided by a hash of the id: stable across runs and machines."""
    h = int.from_bytes(hashlib.sha1(doc_id.encode("utf-8", "surrogatepass")).digest()[:8], "big")
    return "val" if h / 2**64 < val_fraction else "train"


DATASET_COLUMNS = ("id", "chunk", "text", "input_ids", "n_tokens")


def tokenizer_path(root: Location) -> Location:
    """Where preprocess writes the dataset's tokenizer (before the tokenize stage reads it)."""
    return root.join("tokenizer", "tokenizer.json")


class TokenizeStep:
    """Step 4: drop the unit's duplicates (to rejects), tokenize the rest (tokenizer loaded once per
    actor), split train/val by a hash of the id, write train/ and val/ shards."""

    def __init__(self, spec_data: dict[str, Any]) -> None:
        from vaelm.text.tokenizer import tokenizer_from_json

        self.spec = PreprocessSpec.model_validate(spec_data)
        self.root = storage.open_location(self.spec.output, self.spec.storage)
        # read from the output (committed before this stage), not passed through Ray's object store
        self.tok = tokenizer_from_json(storage.read_bytes(tokenizer_path(self.root)).decode())

    def __call__(self, unit: Unit, removed: pa.Table) -> dict[str, Any]:
        clean = storage.read_table(clean_path(self.root, unit.name))
        rejects = Rejects("tokenize", self.spec.excerpt_chars)
        clean = self._drop_duplicates(clean, removed, unit, rejects)
        rows = self._tokenize(clean, unit, rejects)
        stats: dict[str, Any] = {"rejected": rejects.counts(), "documents": clean.num_rows}
        for split in ("train", "val"):
            table = pa.table(rows[split], schema=self._schema(clean))
            storage.write_table(self.root.join(split, f"{unit.name}.parquet"), table)
            stats[split] = {
                "documents": len(set(rows[split]["id"])),
                "rows": table.num_rows,
                "tokens": int(sum(rows[split]["n_tokens"])),
            }
        storage.write_table(self.root.join("rejects", f"tokenize-{unit.name}.parquet"), rejects.table())
        return stats

    def _drop_duplicates(self, clean: pa.Table, removed: pa.Table, unit: Unit, rejects: Rejects) -> pa.Table:
        if removed.num_rows == 0:
            return clean
        reason = {
            o: f"duplicate_{'id' if k == 'id' else 'of'}:{s}"
            for o, k, s in zip(
                removed.column("order").to_pylist(),
                removed.column("kind").to_pylist(),
                removed.column("survivor_id").to_pylist(),
                strict=True,
            )
        }
        orders = clean.column("order").to_pylist()
        keep = [o not in reason for o in orders]
        for o, doc_id, row, text in zip(
            orders,
            clean.column("id").to_pylist(),
            clean.column("row").to_pylist(),
            clean.column("text").to_pylist(),
            strict=True,
        ):
            if o in reason:
                rejects.add(doc_id=doc_id, source=unit.source, row=row, reason=reason[o], text=text)
        return clean.filter(pa.array(keep))

    def _tokenize(self, clean: pa.Table, unit: Unit, rejects: Rejects) -> dict[str, dict[str, list[Any]]]:
        from vaelm.text.tokenizer import decode, encode_batch

        cfg = self.spec.tokenize
        extra = [c for c in clean.column_names if c not in ("id", "text", "order", "row", "exact_key")]
        rows: dict[str, dict[str, list[Any]]] = {
            s: {c: [] for c in (*DATASET_COLUMNS, *extra)} for s in ("train", "val")
        }
        texts = clean.column("text").to_pylist()
        for start in range(0, len(texts), cfg.batch_size):
            batch = clean.slice(start, cfg.batch_size)
            encoded = encode_batch(
                self.tok,
                texts[start : start + cfg.batch_size],
                max_tokens=cfg.max_tokens,
                long_documents=cfg.long_documents,
                min_tokens=cfg.min_tokens,
            )
            cols = {c: batch.column(c).to_pylist() for c in ("id", "text", "row", *extra)}
            for i, enc in enumerate(encoded):
                rec = {c: values[i] for c, values in cols.items()}
                if enc.reason:
                    rejects.add(
                        doc_id=rec["id"], source=unit.source, row=rec["row"], reason=enc.reason, text=rec["text"]
                    )
                    continue
                out = rows[split_of(rec["id"], cfg.val_fraction)]
                for k, ids in enumerate(enc.chunks):
                    text = rec["text"] if len(enc.chunks) == 1 else decode(self.tok, ids)
                    values = {"id": rec["id"], "chunk": k, "text": text, "input_ids": ids, "n_tokens": len(ids)}
                    for c in out:
                        out[c].append(values[c] if c in values else rec[c])
        return rows

    @staticmethod
    def _schema(clean: pa.Table) -> pa.Schema:
        base = [
            ("id", pa.string()),
            ("chunk", pa.int32()),
            ("text", pa.string()),
            ("input_ids", pa.list_(pa.int32())),
            ("n_tokens", pa.int32()),
        ]
        extra = [
            clean.schema.field(c) for c in clean.column_names if c not in ("id", "text", "order", "row", "exact_key")
        ]
        return pa.schema([*base, *extra])
