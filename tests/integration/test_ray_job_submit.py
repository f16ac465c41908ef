"""`ray job submit` with the real CLI against a real Ray head started with `ray start --head`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.support.corpus import make_docs, write_corpus
from tests.support.datasets import dataset_ids
from tests.support.s3server import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def cluster_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}  # not the test session's cluster
    env.update(
        {
            "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
            "PYTHON": sys.executable,
            "VAELM_RAY_DIR": str(tmp_path / "ray"),
            "VAELM_RAY_WORKERS": "0",
            "VAELM_RAY_HEAD_CPUS": "2",
            "VAELM_RAY_MEMORY_MB": "3072",
            "VAELM_RAY_PORT": str(free_port()),
            "VAELM_RAY_DASHBOARD_PORT": str(free_port()),
            "VAELM_RAY_AGENT_PORT": str(free_port()),
            "VAELM_RAY_CLIENT_PORT": str(free_port()),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
    )
    return env


def exports(text: str) -> dict[str, str]:
    pairs = (line.removeprefix("export ").split("=", 1) for line in text.splitlines() if line.startswith("export "))
    return {k: v for k, v in pairs}


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
    env = cluster_env(tmp_path)
    start = subprocess.run(
        ["bash", "deploy/local/start-ray-cluster.sh"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    try:
        assert start.returncode == 0, start.stderr[-3000:]
        env.update(exports(start.stdout))
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
    finally:
        subprocess.run(
            ["bash", "deploy/local/stop-ray-cluster.sh"], cwd=REPO_ROOT, env=env, timeout=120, capture_output=True
        )
