"""`ray job submit` with the real CLI against a real Ray head started with `ray start --head`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.support.corpus import make_docs, write_corpus
from tests.support.datasets import dataset_ids
from tests.support.raycluster import cluster_env, local_cluster

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def submit_job(entry: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`ray job submit`, retried while the head's job agent is still starting (seen on a loaded machine)."""
    deadline = time.monotonic() + 120
    while True:
        submit = subprocess.run(
            [
                "ray",
                "job",
                "submit",
                "--address",
                env["RAY_ADDRESS"],
                "--working-dir",
                ".",
                "--runtime-env",
                "deploy/runtime_env.yaml",
                "--",
                *entry,
            ],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if "No available agent" not in submit.stderr or time.monotonic() > deadline:
            return submit
        time.sleep(3)


def test_preprocess_job_submitted_with_the_ray_cli(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", make_docs(120, seed=9), files=2)
    with local_cluster(cluster_env(tmp_path)) as env:
        out = tmp_path / "dataset"
        entry = [
            sys.executable,
            "-m",
            "vaelm.cli",
            "run",
            "jobs/preprocess.yaml",
            "--set",
            f"input.paths=[{tmp_path / 'corpus'}]",
            "--set",
            f"output={out}",
            "--set",
            "input.label_column=null",
            "--set",
            "input.passthrough_columns=[]",
            "--set",
            "tokenizer.vocab_size=300",
            "--set",
            "tokenizer.min_frequency=1",
        ]
        submit = submit_job(entry, env)
        assert submit.returncode == 0, (submit.stdout + submit.stderr)[-3000:]
        assert "succeeded" in submit.stdout.lower(), submit.stdout[-2000:]
        assert (out / "_SUCCESS").exists()
        train, val, rejects = dataset_ids(str(out))
        assert sorted(train + val + rejects) == sorted(corpus.ids)
