"""A worker node killed during `vaelm preprocess` on a 3-node local Ray cluster (head + 2 workers, each its
own `ray start` process group, started by deploy/local/start-ray-cluster.sh). The job completes (the lost
actors restart on a surviving node, their units retried) or a rerun finishes it; ids reconcile."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_preprocess import corpus_with_duplicates, spec_for
from tests.support.datasets import dataset_ids, write_spec
from tests.support.raycluster import cluster_env, local_cluster

pytestmark = [pytest.mark.faults, pytest.mark.timeout(480)]


def ray_list(kind: str, env: dict[str, str]) -> list[dict[str, object]]:
    done = subprocess.run(
        ["ray", "list", kind, "--address", env["RAY_ADDRESS"], "--format", "json", "--limit", "1000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"ray list {kind}: {done.stderr[-2000:]}"
    text = done.stdout[done.stdout.find("[") :] if "[" in done.stdout else "[]"  # warnings may come first
    return json.loads(text)  # type: ignore[no-any-return]


def node_with_actor(env: dict[str, str], pgids: dict[str, int]) -> str | None:
    """The worker node (worker1/worker2) whose process group holds a live StepActor now, if any."""
    for actor in ray_list("actors", env):
        if actor.get("class_name") == "StepActor" and actor.get("state") == "ALIVE":
            try:
                pgid = os.getpgid(int(actor.get("pid") or 0))  # type: ignore[call-overload]
            except (OSError, ValueError):
                continue
            for name, group in pgids.items():
                if group == pgid and name != "head":
                    return name
    return None


def test_worker_node_killed_during_preprocess_then_ids_reconcile(tmp_path: Path) -> None:
    ids, _ = corpus_with_duplicates(tmp_path / "in")
    out = tmp_path / "out"
    spec = spec_for(str(tmp_path / "in"), str(out), ray={"max_actors": 2})  # 3 CPUs: a free one for a restart
    spec["input"]["rows_per_unit"] = 10
    path = write_spec(tmp_path / "s.yaml", spec)
    env = cluster_env(
        tmp_path,
        VAELM_RAY_WORKERS="2",
        VAELM_RAY_HEAD_CPUS="1",
        VAELM_RAY_MEMORY_MB="1536",
        VAELM_RAY_OBJECT_STORE_MB="128",
    )
    with local_cluster(env, timeout=300):
        job_env = {**env, "RAY_ADDRESS": env["VAELM_RAY_GCS_ADDRESS"]}
        cmd = [sys.executable, "-m", "vaelm.cli", "preprocess", str(path)]
        job = subprocess.Popen(cmd, env=job_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        pgids = {n: int(p) for p, n in (line.split() for line in (tmp_path / "ray" / "pids").read_text().splitlines())}
        deadline = time.monotonic() + 240
        victim = None
        while time.monotonic() < deadline and job.poll() is None and victim is None:
            victim = node_with_actor(env, pgids)  # a worker node that runs a StepActor right now
            if victim is None and list((out / "_work" / "clean").glob("*.json")):
                break  # units are being committed: kill now, even if no actor was seen on a worker
        assert job.poll() is None, "the job ended before the kill: nothing to interrupt"
        hosts_actor = victim is not None
        victim = victim or "worker1"
        os.killpg(pgids[victim], signal.SIGKILL)
        killed_at = time.monotonic()
        stdout, stderr = job.communicate(timeout=300)
        took = time.monotonic() - killed_at
        print(f"killed {victim} (hosted an actor: {hosts_actor}); first run exit {job.returncode} {took:.1f}s later")
        if job.returncode != 0:
            assert "Traceback" not in stderr, stderr[-3000:]
            assert not (out / "_SUCCESS").exists()
            rerun = subprocess.run(cmd, env=job_env, capture_output=True, text=True, timeout=300)
            assert rerun.returncode == 0, rerun.stderr[-3000:]
        else:
            assert "completed" in stdout
        train, val, rejects = dataset_ids(str(out))
        assert sorted(train + val + rejects) == sorted(ids), "each input id exactly once"
