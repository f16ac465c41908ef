"""A multi-node Ray cluster on this machine, through deploy/local/start-ray-cluster.sh (free ports, own state dir)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.support.s3server import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def cluster_env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    """The script's environment: free ports, state under tmp_path, none of the test session's RAY_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
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
            **overrides,
        }
    )
    return env


def exports(text: str) -> dict[str, str]:
    pairs = (line.removeprefix("export ").split("=", 1) for line in text.splitlines() if line.startswith("export "))
    return {k: v for k, v in pairs}


@contextlib.contextmanager
def local_cluster(env: dict[str, str], *, timeout: float = 240) -> Iterator[dict[str, str]]:
    """Start the cluster, yield `env` with the script's exports added, and stop exactly what was started."""
    start = subprocess.run(
        ["bash", "deploy/local/start-ray-cluster.sh"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    try:
        assert start.returncode == 0, start.stderr[-3000:]
        env.update(exports(start.stdout))
        yield env
    finally:
        subprocess.run(
            ["bash", "deploy/local/stop-ray-cluster.sh"], cwd=REPO_ROOT, env=env, timeout=120, capture_output=True
        )
