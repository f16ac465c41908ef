"""`vaelm train` through the real Ray Train path: 2 CPU workers, checkpoints on S3, faults and resume."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.corpus import make_docs, write_corpus
from tests.support.datasets import run_cli, write_spec
from vaelm import storage
from vaelm.cli import main
from vaelm.model.artifact import load_artifact

pytestmark = pytest.mark.timeout(420)

TINY = {"embed_dim": 24, "hidden_dim": 24, "num_layers": 1, "latent_dim": 4}
LOOP = {
    "num_workers": 2,
    "batch_size": 16,
    "epochs": 3,
    "eval_every": 6,
    "val_docs": 40,
    "lr": 0.01,
    "final_iw_samples": 5,
    "final_eval_docs": 40,
}


@pytest.fixture(scope="module")
def shared_dataset(ray_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One small preprocessed dataset for the module (tests that change it work on a copy)."""
    tmp = tmp_path_factory.mktemp("train-data")
    write_corpus(tmp / "corpus", make_docs(360, seed=7), files=2)
    spec = {
        "job": "preprocess",
        "input": {"paths": [str(tmp / "corpus")]},
        "output": str(tmp / "dataset"),
        "tokenizer": {"vocab_size": 300, "min_frequency": 1},
        "tokenize": {"max_tokens": 40, "val_fraction": 0.15},
    }
    assert main(["preprocess", str(write_spec(tmp / "pre.yaml", spec))]) == 0
    return tmp / "dataset"


def copy_dataset(src: Path, dest: str) -> str:
    """Copy a local dataset to a local folder or an s3:// prefix."""
    root = storage.open_location(dest)
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        storage.write_bytes(root.join(str(path.relative_to(src))), path.read_bytes())
    return dest


def train_spec(dataset: str, output: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "job": "train",
        "dataset": dataset,
        "output": output,
        "model": dict(TINY),
        "loss": {"anneal_steps": 10, "cycles": 2},
        "train": dict(LOOP),
    }
    spec.update(extra)
    return spec


def history(output: str) -> list[dict[str, Any]]:
    raw = storage.read_bytes(storage.open_location(output).join("training", "metrics.jsonl")).decode()
    return [json.loads(line) for line in raw.splitlines()]


def test_two_worker_training_on_s3_writes_artifact_and_loss_falls(
    shared_dataset: Path, s3_bucket: str, tmp_path: Path
) -> None:
    dataset = copy_dataset(shared_dataset, f"{s3_bucket}/dataset")
    out = f"{s3_bucket}/model"
    spec = write_spec(tmp_path / "t.yaml", train_spec(dataset, out, run_dir=f"{s3_bucket}/runs"))
    assert main(["train", str(spec)]) == 0

    root = storage.open_location(out)
    files = {
        n: storage.read_bytes(root.join(n))
        for n in ("config.json", "model.safetensors", "tokenizer.json", "metrics.json")
    }
    artifact = load_artifact(files)
    assert artifact.config.latent_dim == 4 and artifact.provenance["workers"] == 2
    assert storage.list_files(storage.open_location(f"{s3_bucket}/runs"), suffix="model.pt"), "checkpoints on S3"
    rows = history(out)
    assert len(rows) >= 3 and [r["step"] for r in rows] == sorted(r["step"] for r in rows)
    assert rows[-1]["rec_nll"] < rows[0]["rec_nll"] * 0.9, "validation reconstruction must fall"
    metrics = json.loads(files["metrics.json"])
    for key in ("elbo_nll", "kl", "ppl", "iw_nll", "mi", "au", "collapsed"):
        assert key in metrics
    assert storage.exists(root.join("training", "curves.png"))


def test_bag_of_words_head_and_mean_pooling_train_through_ray_train(shared_dataset: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "model")
    model = {**TINY, "encoder_pooling": "mean", "bow_head": True}
    loop = {**LOOP, "epochs": 2, "final_iw_samples": 0}
    spec = train_spec(str(shared_dataset), out, model=model, loss={"free_bits": 0.5, "bow_weight": 3.0}, train=loop)
    assert main(["train", str(write_spec(tmp_path / "t.yaml", spec))]) == 0

    files = {n: (Path(out) / n).read_bytes() for n in ("config.json", "model.safetensors", "tokenizer.json")}
    artifact = load_artifact(files)
    assert artifact.config.encoder_pooling == "mean" and artifact.model.bow is not None
    rows = history(out)
    assert all("bow_nll" in r for r in rows), rows[0]
    assert rows[-1]["bow_nll"] < rows[0]["bow_nll"], [r["bow_nll"] for r in rows]  # the bag of words is learnt
    assert "bow_nll" in json.loads((Path(out) / "metrics.json").read_text())


def test_killed_worker_recovers_from_last_checkpoint(shared_dataset: Path, tmp_path: Path) -> None:
    dataset = str(shared_dataset)
    out = str(tmp_path / "model")
    spec = write_spec(tmp_path / "t.yaml", train_spec(dataset, out, run_dir=str(tmp_path / "runs")))
    marker = tmp_path / "fault-fired"
    result = run_cli(
        "train", str(spec), env={"VAELM_FAULT_KILL_TRAIN_STEP": "8", "VAELM_FAULT_MARKER": str(marker)}, timeout=400
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert marker.read_text() == "8", "the fault must have fired"
    log = result.stdout + result.stderr
    assert "resumed from step 6" in log, "training restarted from the checkpoint before the fault"
    shown = re.findall(r'\[vaelm\] train \{"step": (\d+)', log)
    assert shown and len(shown) == len(set(shown)), f"each progress line once in the driver's output: {shown}"
    steps = [r["step"] for r in history(out)]
    assert steps == sorted(set(steps)) and steps[-1] > 8, "one history, no step twice, training went past the fault"


def test_rerun_resumes_from_checkpoints_instead_of_restarting(
    shared_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = str(shared_dataset)
    out, runs = tmp_path / "model", tmp_path / "runs"
    spec = write_spec(tmp_path / "t.yaml", train_spec(dataset, str(out), run_dir=str(runs)))
    assert main(["train", str(spec)]) == 0
    capsys.readouterr()
    assert main(["train", str(spec)]) == 0
    assert "already complete" in capsys.readouterr().out

    last = history(str(out))[-1]["step"]
    for path in sorted(out.rglob("*"), reverse=True):  # the artifact is lost; the checkpoints remain
        path.unlink() if path.is_file() else path.rmdir()
    assert main(["train", str(spec)]) == 0
    captured = capsys.readouterr()
    assert "train: resuming" in captured.err
    assert history(str(out))[-1]["step"] == last, "no step was trained twice"


def test_bad_training_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "half").mkdir()
    spec = write_spec(tmp_path / "a.yaml", train_spec(str(tmp_path / "half"), str(tmp_path / "m")))
    assert main(["train", str(spec)]) == 2
    assert "_SUCCESS" in capsys.readouterr().err

    for override, words in (("model.latent_dim=0", "latent_dim"), ("train.lr=-0.1", "train.lr")):
        assert main(["train", str(spec), "--set", override]) == 2
        assert words in capsys.readouterr().err


def test_tokenizer_mismatch_and_incompatible_checkpoint_are_refused(
    shared_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = copy_dataset(shared_dataset, str(tmp_path / "dataset"))
    loop = {**LOOP, "epochs": 1}
    spec = write_spec(
        tmp_path / "t.yaml",
        train_spec(dataset, str(tmp_path / "m1"), run_dir=str(tmp_path / "runs"), run_name="shared", train=loop),
    )
    assert main(["train", str(spec)]) == 0
    capsys.readouterr()
    bigger = ["--set", "model.hidden_dim=32", "--set", f"output={tmp_path / 'm2'}"]
    assert main(["train", str(spec), *bigger]) == 2
    err = capsys.readouterr().err
    assert "hidden_dim=24" in err and "hidden_dim=32" in err

    tok = Path(dataset) / "tokenizer" / "tokenizer.json"
    tok.write_text(tok.read_text().replace('"<unk>"', '"<UNK>"', 1))
    assert main(["train", str(spec), "--set", f"output={tmp_path / 'm3'}"]) == 2
    assert "does not match the dataset's manifest" in capsys.readouterr().err


def test_documents_are_shuffled_and_validation_samples_every_shard(shared_dataset: Path) -> None:
    """Preprocess writes shards grouped by source, so shard order would train on one source after another
    and validate on the first one only."""
    from vaelm.config.train import LoopConfig, TrainSpec
    from vaelm.pipeline.train import _read, open_dataset, val_sample

    spec = TrainSpec.model_validate(train_spec(str(shared_dataset), "unused"))
    data = open_dataset(str(shared_dataset), spec)

    def order(shuffle: str) -> list[tuple[int, ...]]:
        ds = _read(data, "train", LoopConfig(shuffle=shuffle))  # type: ignore[arg-type]
        return [tuple(row["input_ids"]) for row in ds.iter_rows()]

    in_shards = order("none")
    position = {doc: i for i, doc in reversed(list(enumerate(in_shards)))}
    mixed = order("global")
    assert sorted(mixed) == sorted(in_shards), "a shuffle must keep every document exactly once"
    early = [position[doc] for doc in mixed[: len(mixed) // 4]]
    assert max(early) > len(in_shards) // 2, "the first quarter must reach the later shards"
    # blocks only reorders blocks here (the fixture's 2 files may stay in order); its local shuffle buffer
    # acts in the training loop's iter_batches
    assert sorted(order("blocks")) == sorted(in_shards)

    per_shard = [
        storage.read_table(s, columns=["input_ids"]).column("input_ids").to_pylist() for s in data.shards("val")
    ]
    assert len(per_shard) >= 2, "the fixture should give val/ several shards"
    n = sum(len(rows) for rows in per_shard) // 2
    sample = val_sample(data, n, seed=0)
    assert len(sample) == n and sample == val_sample(data, n, seed=0)
    assert all(any(row in sample for row in rows) for rows in per_shard), "a prefix would miss the later shards"
