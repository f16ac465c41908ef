"""The sections of the run report (vaelm.report): each reads its inputs from RunFiles and returns HTML.

A section raises NotRun when its input is missing; report.py turns that into a visible note.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vaelm import plots, storage
from vaelm.report import RUN_LAYOUT, NotRun, RunFiles, esc, fmt, image, note, table

NEWS_GROUP = "no label (news)"
MAX_POINTS = 4000


# -- headline numbers (also printed at the end of the demo, so both say the same) ---------------------


def headline(files: RunFiles) -> list[tuple[str, str]]:
    """(label, formatted value) of the run's key numbers; "not run" where the stage is missing."""
    out: list[tuple[str, str]] = []
    for label, get in _HEADLINE:
        try:
            out.append((label, get(files)))
        except NotRun:
            out.append((label, "not run"))
    return out


def _docs(files: RunFiles) -> str:
    c = files.json("preprocess", "stats.json")["counts"]
    return f"{c['rows_in']:,} in, {c['train_documents'] + c['val_documents']:,} kept"


def _model_metric(key: str, digits: int) -> Callable[[RunFiles], str]:
    def get(files: RunFiles) -> str:
        files.require("train")
        metrics = files.json("train", "metrics.json")
        if key == "au":
            latent = files.json("train", "config.json").get("model", {}).get("latent_dim", "?")
            return f"{metrics['au']} of {latent}"
        return fmt(metrics.get(key), digits)

    return get


def _accuracy(files: RunFiles) -> str:
    acc, _, n = accuracy_f1(confusion(files)[0])
    return f"{100 * acc:.1f}% of {n:,}"


_HEADLINE: list[tuple[str, Callable[[RunFiles], str]]] = [
    ("documents", _docs),
    ("KL (nats/doc)", _model_metric("kl", 2)),
    ("active units", _model_metric("au", 0)),
    ("val perplexity", _model_metric("ppl", 2)),
    ("test accuracy", _accuracy),
]


def accuracy_f1(matrix: np.ndarray) -> tuple[float, float, int]:
    """(accuracy, macro-F1, documents) from a confusion matrix (rows true, columns predicted)."""
    total = int(matrix.sum())
    if total == 0:
        raise NotRun("the classified documents carry no true labels (input_label column)")
    f1s = []
    for k in range(len(matrix)):
        tp, fp, fn = matrix[k, k], matrix[:, k].sum() - matrix[k, k], matrix[k, :].sum() - matrix[k, k]
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.trace(matrix) / total), float(np.mean(f1s)), total


def confusion(files: RunFiles) -> tuple[np.ndarray, list[str]]:
    """Confusion matrix (rows true, columns predicted) over the rows that have a true label."""
    labels = [str(x) for x in files.json("classify", "manifest.json")["model"]["labels"]]
    data = files.table("classify", columns=None)
    if "input_label" not in data.column_names:
        raise NotRun("classify's output has no input_label column: its input had no label column")
    index = {name: i for i, name in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for true, pred in zip(data.column("input_label").to_pylist(), data.column("label").to_pylist(), strict=True):
        if true is not None and str(true) in index:
            matrix[index[str(true)], index[pred]] += 1
    return matrix, labels


def summary_section(files: RunFiles) -> str:
    cards = "".join(f"<div><b>{esc(v)}</b><span>{esc(k)}</span></div>" for k, v in headline(files))
    rows = [[stage, files.loc(stage).uri, files.status(stage)] for stage in RUN_LAYOUT]
    return f'<div class="headline">{cards}</div>' + table(["stage", "output", "status"], rows)


# -- preprocessing -------------------------------------------------------------------------------------


def funnel_section(files: RunFiles) -> str:
    files.require("preprocess")
    stats = files.json("preprocess", "stats.json")
    c, st = stats["counts"], stats["stages"]
    stages = [
        ("input rows", c["rows_in"]),
        ("after clean + filters", st["clean"]["out"]),
        ("after dedup", st["dedup"]["out"]),
        ("train + val documents", c["train_documents"] + c["val_documents"]),
    ]
    dropped: dict[str, int] = stats.get("dropped", {})
    rows = [[reason, fmt(n), f"{100 * n / max(c['rows_in'], 1):.1f}%"] for reason, n in dropped.items()]
    splits = stats["splits"]
    split_rows = [[k, fmt(v["documents"]), fmt(v["tokens"])] for k, v in splits.items()]
    return (
        image(plots.funnel_png(stages, dropped), "preprocessing funnel")
        + "<h3>Dropped, per reason</h3>"
        + table(["reason", "documents", "of input"], rows or [["(none)", "0", "0%"]])
        + "<h3>Kept, per split</h3>"
        + table(["split", "documents", "tokens"], split_rows)
        + note(
            f"Every input row is kept or rejected with a reason: {fmt(c['rows_in'])} rows in = "
            f"{fmt(c['train_documents'])} train + {fmt(c['val_documents'])} val + {fmt(c['rejected'])} rejected."
        )
    )


# -- training ------------------------------------------------------------------------------------------

FINAL_KEYS = ("elbo_nll", "rec_nll", "kl", "ppl", "iw_nll", "iw_ppl", "mi", "au", "collapsed", "distinct_decodes")


def training_section(files: RunFiles) -> str:
    files.require("train")
    history = files.jsonl("train", "training", "metrics.jsonl")
    metrics = files.json("train", "metrics.json")
    parts = [image(plots.training_curves_png(history), "training curves")] if history else []
    parts.append(note(f"{len(history)} validations; best step {metrics.get('best_step')} of {metrics.get('steps')}."))
    rows = [[k, fmt(metrics[k])] for k in FINAL_KEYS if k in metrics]
    parts.append("<h3>Final validation metrics of the exported model</h3>" + table(["metric", "value"], rows, cls="kv"))
    samples = metrics.get("greedy_samples") or []
    if samples:
        parts.append("<h3>Greedy decodings of different z ~ N(0, I)</h3>")
        parts.append(table(["#", "text"], [[i, s] for i, s in enumerate(samples)], cls="texts"))
    return "".join(parts)


# -- latent space and scores ---------------------------------------------------------------------------


def latent_section(files: RunFiles) -> str:
    data = files.table("embed")
    mu = np.asarray(data.column("embedding").to_pylist(), dtype=np.float64)  # (N, Z)
    step = max(1, len(mu) // MAX_POINTS)
    mu, groups = mu[::step], _groups(data)[::step]
    if len(mu) < 3:
        raise NotRun(f"only {len(mu)} embedded documents; PCA needs at least 3")
    centred = mu - mu.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T  # (N, 2)
    share = (s**2 / max(float((s**2).sum()), 1e-12))[:2]
    png = plots.scatter_png(
        xy,
        groups,
        title="posterior means mu(x), first two principal components",
        xlabel=f"PC1 ({100 * share[0]:.1f}% of variance)",
        ylabel=f"PC2 ({100 * share[1]:.1f}% of variance)",
    )
    return image(png, "latent space") + note(
        f"{len(mu):,} documents of {data.num_rows:,} embedded; PCA of the {mu.shape[1]}-dimensional mu by SVD."
    )


def _groups(data: pa.Table) -> list[str]:
    labels = data.column("label").to_pylist() if "label" in data.column_names else [None] * data.num_rows
    return [NEWS_GROUP if x is None else str(x) for x in labels]


def scores_section(files: RunFiles) -> str:
    data = files.table("score", columns=["id", "nll_per_token", "elbo_nll", "target_tokens"])
    per_token = np.asarray(data.column("nll_per_token").to_pylist(), dtype=np.float64)
    cut = float(np.percentile(per_token, 95))
    png = plots.histogram_png(
        per_token, title="per-token NLL bound of each document", xlabel="nats per token", marker=cut
    )
    order = np.argsort(-per_token)[:12]
    ids = [data.column("id")[int(i)].as_py() for i in order]
    texts = lookup_texts(files, "score", ids)
    rows = [
        [ids[k], fmt(float(per_token[i]), 2), fmt(data.column("elbo_nll")[int(i)].as_py(), 1), _clip(texts.get(ids[k]))]
        for k, i in enumerate(order)
    ]
    return (
        image(png, "score histogram")
        + note(f"{data.num_rows:,} documents scored; the dashed line is the 95th percentile ({cut:.2f} nats/token).")
        + "<h3>Noisiest documents (highest NLL per token)</h3>"
        + table(["id", "nats/token", "ELBO NLL", "text"], rows, cls="texts")
    )


def lookup_texts(files: RunFiles, stage: str, ids: list[str]) -> dict[str, str]:
    """The input texts of `ids`, read from the input files a bulk job's manifest lists."""
    manifest = files.json(stage, "manifest.json")
    cfg = manifest["spec"].get("input") or {}
    id_col, text_col = cfg.get("id_column") or "id", cfg.get("text_column") or "text"
    found: dict[str, str] = {}
    for entry in manifest["input"]["files"]:
        loc = storage.open_location(entry["uri"], _storage_cfg(manifest))
        try:
            t = storage.read_table(loc, columns=[id_col, text_col])
        except Exception:  # an input that moved or changed: the texts are a courtesy, not a must
            continue
        t = t.filter(pc.is_in(t.column(id_col), value_set=pa.array(ids, t.schema.field(id_col).type)))
        found.update(zip(t.column(id_col).to_pylist(), t.column(text_col).to_pylist(), strict=True))
    return found


def _storage_cfg(manifest: dict[str, Any]) -> Any:
    from vaelm.config.common import StorageConfig

    data = {k: v for k, v in (manifest["spec"].get("storage") or {}).items() if k in ("endpoint", "region")}
    return StorageConfig.model_validate(data)


def _clip(text: Any, limit: int = 160) -> str:
    if text is None:
        return "(text not available)"
    value = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return value if len(value) <= limit else value[:limit] + "…"


SECTIONS: list[tuple[str, str, Callable[[RunFiles], str]]] = [
    ("summary", "Summary", summary_section),
    ("funnel", "Preprocessing funnel", funnel_section),
    ("training", "Training curves", training_section),
    ("latent", "Latent space", latent_section),
    ("scores", "Document scores", scores_section),
]
