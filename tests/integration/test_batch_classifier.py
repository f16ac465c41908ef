"""`vaelm train-classifier` then `vaelm classify` with the new artifact: Chinese vs English text."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.artifacts import write_artifact
from tests.support.corpus import make_docs
from tests.support.datasets import read_folder, write_spec
from vaelm import storage
from vaelm.cli import main
from vaelm.model.artifact import load_artifact
from vaelm.pipeline.batch_io import read_artifact_files
from vaelm.pipeline.preprocess_steps import REJECT_SCHEMA

pytestmark = pytest.mark.timeout(180)


def labelled(folder: Path, n: int, *, seed: int, prefix: str) -> list[str]:
    docs = make_docs(n, seed=seed)  # every third document is English, the others Chinese
    labels = ["en" if i % 3 == 0 else "zh" for i in range(n)]
    folder.mkdir(parents=True)
    ids = [f"{prefix}{i:04d}" for i in range(n)]
    pq.write_table(pa.table({"id": ids, "text": docs, "label": labels}), folder / "a.parquet", row_group_size=100)
    return labels


def test_classifier_trained_on_the_encoder_separates_chinese_from_english(ray_cluster: str, tmp_path: Path) -> None:
    vae = write_artifact(str(tmp_path / "vae"), max_tokens=48)
    labelled(tmp_path / "train", 240, seed=21, prefix="t")
    truth = labelled(tmp_path / "test", 60, seed=22, prefix="h")
    clf_dir = tmp_path / "clf"
    spec = {
        "job": "train-classifier",
        "model": vae,
        "input": {"paths": [str(tmp_path / "train")], "label_column": "label"},
        "output": str(clf_dir),
        "classifier": {"freeze_encoder": False, "epochs": 6, "batch_size": 16, "lr": 0.01, "val_fraction": 0.2},
    }
    assert main(["run", str(write_spec(tmp_path / "t.yaml", spec))]) == 0

    files = read_artifact_files(str(clf_dir), None)  # type: ignore[arg-type]
    art = load_artifact(files)
    assert art.labels == ["en", "zh"] and art.classifier is not None
    assert {"classifier.safetensors", "labels.json", "model.safetensors", "tokenizer.json"} <= set(files)
    metrics = storage.read_json(storage.open_location(str(clf_dir / "metrics.json")))["classifier"]
    assert metrics["val_accuracy"] >= 0.9, metrics
    assert metrics["train_labels"] + metrics["val_documents"] == 240
    assert (clf_dir / "_SUCCESS").exists()

    out = tmp_path / "classified"
    job = {
        "job": "classify",
        "model": str(clf_dir),
        "input": {"paths": [str(tmp_path / "test")], "label_column": "label", "rows_per_unit": 30},
        "output": str(out),
    }
    assert main(["run", str(write_spec(tmp_path / "c.yaml", job))]) == 0
    data = read_folder(str(out), "data").sort_by("id")
    assert data.column("input_label").to_pylist() == truth
    accuracy = sum(p == t for p, t in zip(data.column("label").to_pylist(), truth, strict=True)) / len(truth)
    assert accuracy >= 0.9


def test_label_fraction_keeps_a_seeded_share_of_the_training_labels(ray_cluster: str, tmp_path: Path) -> None:
    vae = write_artifact(str(tmp_path / "vae"), max_tokens=48)
    labelled(tmp_path / "train", 200, seed=23, prefix="t")
    spec = {
        "job": "train-classifier",
        "model": vae,
        "input": {"paths": [str(tmp_path / "train")], "label_column": "label"},
        "output": str(tmp_path / "clf"),
        "classifier": {"epochs": 3, "label_fraction": 0.1, "val_fraction": 0.2},
    }
    assert main(["run", str(write_spec(tmp_path / "t.yaml", spec))]) == 0
    metrics = storage.read_json(storage.open_location(str(tmp_path / "clf" / "metrics.json")))["classifier"]
    assert metrics["train_labels"] == round(0.1 * metrics["train_pool"])
    assert metrics["freeze_encoder"] is True


def test_bad_rows_go_to_rejects_with_their_reason_and_counts_reconcile(ray_cluster: str, tmp_path: Path) -> None:
    vae = write_artifact(str(tmp_path / "vae"), max_tokens=48)
    docs = make_docs(40, seed=24)
    texts: list[bytes | None] = [d.encode() for d in docs]
    labels: list[str | None] = ["en" if i % 3 == 0 else "zh" for i in range(40)]
    texts += [None, b" ", b"\xe8\xbf\x99\xff\xfe", docs[0].encode(), docs[1].encode(), docs[2].encode()]
    labels += ["en", "zh", "zh", None, "", "fr"]
    ids = [f"r{i:03d}" for i in range(len(texts))]
    (tmp_path / "train").mkdir()
    table = pa.table({"id": ids, "text": pa.array(texts, pa.binary()), "label": labels})
    pq.write_table(table, tmp_path / "train" / "a.parquet", row_group_size=20)
    out = tmp_path / "clf"
    spec = {
        "job": "train-classifier",
        "model": vae,
        "input": {"paths": [str(tmp_path / "train")], "label_column": "label", "rows_per_unit": 20},
        "output": str(out),
        "classifier": {"epochs": 2, "labels": ["en", "zh"]},
    }
    assert main(["run", str(write_spec(tmp_path / "t.yaml", spec))]) == 0

    rejects = read_folder(str(out), "rejects")
    assert rejects.schema == REJECT_SCHEMA, "the same rejects/ schema as the other bulk jobs"
    assert len(list((out / "rejects").glob("*.parquet"))) == 3, "one file per unit"
    reasons = dict(zip(rejects.column("id").to_pylist(), rejects.column("reason").to_pylist(), strict=True))
    assert reasons == {
        "r040": "null_text",
        "r041": "empty",
        "r042": "invalid_utf8:byte_3",
        "r043": "null_label",
        "r044": "null_label",
        "r045": "unknown_label",
    }
    assert set(rejects.column("stage").to_pylist()) == {"train-classifier"}
    metrics = storage.read_json(storage.open_location(str(out / "metrics.json")))["classifier"]
    assert metrics["rows_in"] == 46 == metrics["labelled_documents"] + metrics["rejected_total"]
    assert metrics["rejected"] == {"null_text": 1, "empty": 1, "invalid_utf8": 1, "null_label": 2, "unknown_label": 1}
