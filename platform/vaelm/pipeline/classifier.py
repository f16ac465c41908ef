"""`vaelm train-classifier`: labelled Parquet + a VAE artifact -> a new artifact with a classifier.

One process, plain PyTorch (labelled sets are small; the VAE is what needed the cluster). Rows with no
usable text, no label or a label outside classifier.labels go to rejects/<unit>.parquet with their
reason (as in the other bulk jobs; rows in = documents used + rejects); the rest are split
train/validation by a hash of the id,
the training labels optionally thinned (label_fraction / max_labels, the label-scarce protocol), the
head (or head + encoder) trained, and validation accuracy and macro-F1 reported. The output is a copy
of the VAE artifact plus classifier.safetensors and labels.json, then _SUCCESS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from vaelm import __version__, storage
from vaelm.config.batch import TrainClassifierSpec
from vaelm.config.loader import identity_hash
from vaelm.errors import InputError
from vaelm.model import classify_train as ct
from vaelm.model.artifact import Artifact, artifact_files
from vaelm.model.classifier import LatentClassifier
from vaelm.model.infer import encode_docs
from vaelm.pipeline.batch_io import check_rows, load_model, read_artifact_files
from vaelm.pipeline.commit import claim_output, mark_success, now
from vaelm.pipeline.preprocess_steps import Rejects, split_of
from vaelm.pipeline.progress import say
from vaelm.pipeline.units import plan_input, read_unit
from vaelm.text.tokenizer import tokenizer_from_json


@dataclass
class Labelled:
    ids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    rows_in: int = 0
    rejected: dict[str, int] = field(default_factory=dict)


def run_train_classifier(spec: TrainClassifierSpec, *, overwrite: bool = False) -> dict[str, Any]:
    spec = spec.model_copy(update={"storage": spec.storage.resolved()})
    files = read_artifact_files(spec.model, spec.storage)
    art = load_model(files, uri=spec.model)
    if art.model.encoder is None:
        raise InputError(f"model artifact {spec.model} has no encoder (mode: lm); a classifier needs a VAE")
    plan = plan_input(spec.input, spec.storage)
    root = storage.open_location(spec.output, spec.storage)
    state = claim_output(
        root,
        job="train-classifier",
        identity=identity_hash(spec),
        fingerprint=f"{plan.fingerprint}+model:{art.model_id}",
        overwrite=overwrite,
    )
    if state == "done":
        say(f"{root.uri} already holds the classifier of this spec: nothing to do")
        return {**summarize(storage.read_json(root.join("metrics.json"))["classifier"]), "status": "already complete"}
    data = Labelled()
    for unit in plan.units:
        rejects = _read(unit, spec, data)
        storage.write_table(root.join("rejects", f"{unit.name}.parquet"), rejects.table())
    if data.rows_in != len(data.ids) + sum(data.rejected.values()):
        raise RuntimeError(f"counts do not reconcile: {data.rows_in} rows read, {len(data.ids)} used, {data.rejected}")
    metrics, clf, names = train(spec, art, data)
    _export(root, spec, art, clf, names, metrics)
    return {**summarize(metrics), "output": root.uri, "status": "completed"}


def _read(unit: Any, spec: TrainClassifierSpec, data: Labelled) -> Rejects:
    """Add the unit's usable (id, text, label) rows to `data`; returns its rejected rows with their reasons."""
    table = read_unit(unit, spec.input, spec.storage)
    rejects = Rejects("train-classifier", spec.run.excerpt_chars)
    keep, texts = check_rows(table, unit, spec.run, rejects)
    labels = table.column("label").to_pylist()
    ids = table.column("id").to_pylist()
    known = set(spec.classifier.labels) if spec.classifier.labels else None
    data.rows_in += table.num_rows
    for i, text in zip(keep, texts, strict=True):
        label = None if labels[i] is None else str(labels[i])
        reason = "null_label" if not label else "unknown_label" if known is not None and label not in known else None
        if reason is not None:
            rejects.add(doc_id=ids[i], source=unit.source, row=unit.first_row + i, reason=reason, text=text)
            continue
        data.ids.append(ids[i])
        data.texts.append(text)
        data.labels.append(label)  # type: ignore[arg-type]
    for reason, n in rejects.counts().items():
        data.rejected[reason] = data.rejected.get(reason, 0) + n
    return rejects


def label_names(spec: TrainClassifierSpec, found: list[str]) -> list[str]:
    names = spec.classifier.labels or sorted(set(found))
    unknown = sorted(set(found) - set(names))
    if unknown:
        raise InputError(f"labels {unknown[:10]} are not in classifier.labels {names}; add them or fix the data")
    if len(names) < 2:
        raise InputError(f"the label column holds {len(names)} distinct label(s) {names}; a classifier needs 2 or more")
    return names


def train(
    spec: TrainClassifierSpec, art: Artifact, data: Labelled
) -> tuple[dict[str, Any], LatentClassifier, list[str]]:
    cfg = spec.classifier
    names = label_names(spec, data.labels)
    index = {n: i for i, n in enumerate(names)}
    tok = tokenizer_from_json(art.tokenizer_json)
    max_tokens = min(spec.run.max_tokens or art.config.max_tokens, art.config.max_tokens)
    rows = encode_docs(tok, data.texts, max_tokens=max_tokens).rows
    y = [index[label] for label in data.labels]
    val = [i for i, d in enumerate(data.ids) if split_of(d, cfg.val_fraction) == "val"]
    pool = [i for i, d in enumerate(data.ids) if split_of(d, cfg.val_fraction) == "train"]
    chosen = [
        pool[k] for k in ct.subsample(len(pool), fraction=cfg.label_fraction, max_labels=cfg.max_labels, seed=cfg.seed)
    ]
    say(f"train-classifier: {len(chosen)} training labels of {len(pool)}, {len(val)} validation, labels {names}")
    torch.manual_seed(cfg.seed)
    clf = LatentClassifier.from_vae(
        art.model,
        num_labels=len(names),
        hidden_dim=cfg.hidden_dim,
        dropout=cfg.dropout,
        freeze_encoder=cfg.freeze_encoder,
    )
    params = ct.FitParams(
        epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=cfg.weight_decay, seed=cfg.seed
    )
    losses = ct.fit(clf, [rows[i] for i in chosen], [y[i] for i in chosen], params=params)
    pred = ct.predict_proba(clf, [rows[i] for i in val]).argmax(dim=1).tolist()
    acc, f1 = ct.accuracy_macro_f1(pred, [y[i] for i in val], len(names))
    metrics = {
        "labels": names,
        "rows_in": data.rows_in,
        "rejected": data.rejected,
        "labelled_documents": len(data.ids),
        "rejected_total": sum(data.rejected.values()),
        "train_labels": len(chosen),
        "train_pool": len(pool),
        "val_documents": len(val),
        "val_accuracy": acc,
        "val_macro_f1": f1,
        "train_loss": losses,
        "freeze_encoder": cfg.freeze_encoder,
        "label_fraction": cfg.label_fraction,
    }
    return metrics, clf, names


def _export(
    root: Any,
    spec: TrainClassifierSpec,
    art: Artifact,
    clf: LatentClassifier,
    names: list[str],
    metrics: dict[str, Any],
) -> None:
    provenance = {
        **art.provenance,
        "base_model": spec.model,
        "base_model_id": art.model_id,
        "classifier_spec_hash": identity_hash(spec),
        "classifier_created_at": now(),
        "vaelm_version": __version__,
    }
    files = artifact_files(
        model=art.model,
        model_config=art.config,
        tokenizer_json=art.tokenizer_json,
        metrics={**art.metrics, "classifier": metrics},
        provenance=provenance,
        classifier=clf,
        labels=names,
    )
    for name, blob in files.items():
        storage.write_bytes(root.join(name), blob)
    mark_success(root)


def summarize(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "labels": metrics["labels"],
        "rows_in": metrics["rows_in"],
        "train_labels": metrics["train_labels"],
        "val_documents": metrics["val_documents"],
        "val_accuracy": round(metrics["val_accuracy"], 4),
        "val_macro_f1": round(metrics["val_macro_f1"], 4),
        "rejected": metrics["rejected"],
    }
