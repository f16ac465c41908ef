"""Report sections on the bulk jobs' outputs (generated text, classification) and the run's provenance."""

from __future__ import annotations

import platform
from collections.abc import Callable
from typing import Any

from vaelm import __version__, plots, storage
from vaelm.model.artifact import model_id
from vaelm.pipeline.batch_io import ARTIFACT_FILES
from vaelm.pipeline.commit import RUN_FILE
from vaelm.report import DEMO_FILE, RUN_LAYOUT, RunFiles, esc, fmt, image, note, table
from vaelm.report_sections import _clip, accuracy_f1, confusion, lookup_texts

MAX_SAMPLES = 20
MAX_PAIRS = 4


def samples_section(files: RunFiles) -> str:
    data = files.table("generate", columns=["id", "generated", "generated_tokens"]).slice(0, MAX_SAMPLES)
    spec = files.json("generate", "manifest.json")["spec"]["generate"]
    rows = [list(r) for r in _rows(data, ["id", "generated_tokens", "generated"])]
    return note(f"Sampled from the prior z ~ N(0, I): {_decoding(spec)}.") + table(
        ["id", "tokens", "text"], rows, cls="texts"
    )


def _rows(data: Any, columns: list[str]) -> list[tuple[Any, ...]]:
    return list(zip(*(data.column(c).to_pylist() for c in columns), strict=True))


def _decoding(g: dict[str, Any]) -> str:
    if g.get("strategy") == "sample":
        return f"sampling, temperature {g.get('temperature')}, top-k {g.get('top_k')}, top-p {g.get('top_p')}"
    if g.get("strategy") == "beam":
        return f"beam search, width {g.get('beam_width')}"
    return "greedy decoding"


def interpolations_section(files: RunFiles) -> str:
    data = files.table("interpolate", columns=["id_a", "id_b", "step", "t", "generated"])
    spec = files.json("interpolate", "manifest.json")["spec"]["generate"]
    rows = sorted(_rows(data, ["id_a", "id_b", "step", "t", "generated"]))
    pairs = list(dict.fromkeys((a, b) for a, b, *_ in rows))[:MAX_PAIRS]
    sources = lookup_texts(files, "interpolate", [x for pair in pairs for x in pair])
    parts = [
        note(
            f"{spec.get('interpolation')} paths between the latent codes mu(x) of document pairs, "
            f"{spec.get('steps')} points each, {_decoding(spec)}."
        )
    ]
    for a, b in pairs:
        body = [["source A", a, _clip(sources.get(a))]]
        body += [[f"t = {t:.2f}", f"step {s}", text] for x, y, s, t, text in rows if (x, y) == (a, b)]
        body.append(["source B", b, _clip(sources.get(b))])
        parts.append(f"<h3>{esc(a)} → {esc(b)}</h3>" + table(["", "", "text"], body, cls="texts"))
    return "".join(parts)


def classification_section(files: RunFiles) -> str:
    matrix, labels = confusion(files)
    acc, f1, n = accuracy_f1(matrix)
    parts = [
        note(f"Held-out test documents: accuracy {100 * acc:.1f}%, macro-F1 {f1:.3f} over {n:,} documents."),
        image(plots.confusion_png(matrix.tolist(), labels), "confusion matrix"),
    ]
    clf = (files.optional_json("train_classifier", "metrics.json") or {}).get("classifier")
    if clf:
        rows = [
            ["labels", ", ".join(clf["labels"])],
            ["training labels", fmt(clf["train_labels"])],
            ["encoder", "frozen (head on mu)" if clf.get("freeze_encoder") else "fine-tuned"],
            ["validation accuracy", f"{100 * clf['val_accuracy']:.1f}% of {clf['val_documents']:,}"],
            ["validation macro-F1", fmt(clf["val_macro_f1"])],
        ]
        parts.append("<h3>The classifier</h3>" + table(["", ""], rows, cls="kv"))
    return "".join(parts)


# -- provenance ----------------------------------------------------------------------------------------


def provenance_section(files: RunFiles) -> str:
    record = _demo_record(files)
    rows = [
        ["demo spec hash", record.get("spec_hash", "-")],
        ["started", record.get("started_at", "-")],
        ["finished", record.get("finished_at", "-")],
        ["VAE model id", _model_id(files, "train")],
        ["classifier model id", _model_id(files, "train_classifier")],
    ]
    recorded = record.get("versions") or versions()
    rows += [[f"{name} version", v] for name, v in recorded.items()]
    stages = [[stage, *_run_file(files, stage)] for stage in RUN_LAYOUT if stage != "corpus"]
    return (
        table(["", ""], rows, cls="kv")
        + "<h3>Jobs</h3>"
        + table(["stage", "status", "job", "spec hash", "started"], stages)
        + note(
            "A spec hash identifies what a job computes: rerunning the same spec on the same input "
            "is a no-op, and a different spec is refused at the same output."
        )
    )


def _run_file(files: RunFiles, stage: str) -> list[str]:
    run = files.optional_json(stage, RUN_FILE) or {}
    return [files.status(stage), run.get("job", "-"), run.get("identity", "-"), run.get("started_at", "-")]


def _model_id(files: RunFiles, stage: str) -> str:
    if files.status(stage) != "complete":
        return "not run"
    loc = files.loc(stage)
    blobs = {n: storage.read_bytes(loc.join(n)) for n in ARTIFACT_FILES if storage.exists(loc.join(n))}
    return model_id(blobs)


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"vaelm": __version__, "python": platform.python_version()}
    for name in ("ray", "torch", "pyarrow", "tokenizers"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def _demo_record(files: RunFiles) -> dict[str, Any]:
    loc = files.root.join(DEMO_FILE)
    record = storage.read_json(loc) if storage.exists(loc) else {}
    return record if isinstance(record, dict) else {}


SECTIONS: list[tuple[str, str, Callable[[RunFiles], str]]] = [
    ("samples", "Generated samples", samples_section),
    ("interpolations", "Interpolations", interpolations_section),
    ("classification", "Classification", classification_section),
    ("provenance", "Provenance", provenance_section),
]
