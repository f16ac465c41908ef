"""A worker node killed during `vaelm preprocess`, `vaelm classify` and `vaelm train` on a 3-node local Ray
cluster (head + 2 workers, each its own `ray start` session, started by deploy/local/start-ray-cluster.sh).

Each test waits until a worker node hosts the job's work (a `StepActor`, or a Ray Train worker), proves it
through Ray's state API (actor -> node id -> the node's own resource, `worker1`/`worker2`) and through the
OS (the actor's process is in that node's session), then SIGKILLs that node's whole process group. The job
completes (actor restarted elsewhere and its unit retried; Ray Train restarts the worker group from the
last checkpoint) or a rerun finishes it; ids reconcile; the trained model matches an undisturbed run.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.integration.test_preprocess import corpus_with_duplicates, spec_for
from tests.support.artifacts import write_artifact
from tests.support.corpus import make_docs, write_corpus
from tests.support.datasets import dataset_ids, ids_in, write_spec
from tests.support.raycluster import (
    Placement,
    actors_by_node,
    cluster_env,
    kill_node,
    local_cluster,
    node_groups,
    processes_in_session,
    ray_list,
    session_of,
    wait_until,
)

pytestmark = [pytest.mark.faults]

STEP_ACTOR = "StepActor"  # vaelm.pipeline.actors: one per unit worker of preprocess and the bulk jobs
TRAIN_WORKER = "RayTrainWorker"  # Ray Train V2's worker actor: one per training worker


@contextlib.contextmanager
def three_nodes(tmp_path: Path, **overrides: str) -> Iterator[dict[str, str]]:
    """Head (1 CPU) + worker1 + worker2 (1 CPU each, unless overridden); yields the environment for jobs."""
    env = cluster_env(
        tmp_path,
        VAELM_RAY_WORKERS="2",
        VAELM_RAY_HEAD_CPUS="1",
        VAELM_RAY_MEMORY_MB="1536",
        VAELM_RAY_OBJECT_STORE_MB="128",
        **overrides,
    )
    with local_cluster(env, timeout=300):
        yield env


def job_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "RAY_ADDRESS": env["VAELM_RAY_GCS_ADDRESS"], "PYTHONUNBUFFERED": "1"}


def vaelm(*args: str) -> list[str]:
    return [sys.executable, "-m", "vaelm.cli", *args]


def kill_worker_node_hosting(
    env: dict[str, str], class_name: str, job: subprocess.Popen[str], ready: Callable[[], bool], *, timeout: float
) -> Placement:
    """Wait until `ready()` and a worker node hosts a live `class_name` actor, prove where it runs, SIGKILL
    that node's process group. Returns the actor's placement at the kill."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert job.poll() is None, f"the job ended before the kill (exit {job.returncode}): nothing to interrupt"
        if ready():
            for actor in (p for p in actors_by_node(env, class_name) if p.node.startswith("worker")):
                group = node_groups(env)[actor.node]
                if session_of(actor.pid) != group:
                    continue  # the process is gone already (or moved): look again
                kill_node(env, actor.node)
                print(f"killed {actor.node} (session {group}), which hosted {class_name} pid {actor.pid}")
                return actor
        time.sleep(0.2)
    raise AssertionError(f"no {class_name} ran on a worker node within {timeout:.0f} s")


def assert_node_gone(env: dict[str, str], victim: Placement) -> None:
    """Every process of the killed node's session has exited (worker processes follow their raylet)."""
    group = node_groups(env)[victim.node]
    wait_until(lambda: not processes_in_session(group), timeout=60, what=f"the processes of {victim.node} to exit")


def finish_or_rerun(job: subprocess.Popen[str], cmd: list[str], env: dict[str, str], *, timeout: float) -> str:
    """Wait for the interrupted job; if it failed (cleanly: an error, not a crash trace), rerun it. Returns
    how it ended, for the report."""
    killed_at = time.monotonic()
    stdout, stderr = job.communicate(timeout=timeout)
    took = time.monotonic() - killed_at
    lines = (stdout + stderr).splitlines()
    for line in [x for x in lines if "lost with its actor" in x] + [x for x in lines if "resumed from step" in x][:1]:
        print(f"  job: {line.strip()[-200:]}")
    if job.returncode == 0:
        print(f"the job completed {took:.1f} s after the kill, without a rerun")
        return stdout + stderr
    print(f"the job failed {took:.1f} s after the kill (exit {job.returncode}); rerunning it. It said:")
    print("\n".join(stderr.splitlines()[-15:]))
    assert "Traceback" not in stderr, stderr[-3000:]
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    return rerun.stdout + rerun.stderr


def run_through_a_node_kill(
    env: dict[str, str], cmd: list[str], ready: Callable[[], bool], *, kill_timeout: float, finish_timeout: float
) -> Placement:
    """Start the job, kill the worker node hosting one of its StepActors once `ready()`, check the node is
    gone, and let the job complete (or rerun it). Returns the victim's placement."""
    job = subprocess.Popen(cmd, env=job_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = kill_worker_node_hosting(env, STEP_ACTOR, job, ready, timeout=kill_timeout)
    assert_node_gone(env, victim)
    log = finish_or_rerun(job, cmd, job_env(env), timeout=finish_timeout)
    assert "completed" in log
    print(f"the killed node's actor was restarted {restarts_of(env, victim.actor_id)} time(s)")
    return victim


def restarts_of(env: dict[str, str], actor_id: str) -> int:
    """How often Ray restarted this actor (the state API keeps dead actors for a while)."""
    for actor in ray_list("actors", env, detail=True):
        if actor.get("actor_id") == actor_id:
            return int(actor.get("num_restarts") or 0)
    raise AssertionError(f"actor {actor_id} is unknown to the state API")


# -- preprocess ----------------------------------------------------------------------------------------------


@pytest.mark.timeout(480)
def test_worker_node_killed_during_preprocess_then_ids_reconcile(tmp_path: Path) -> None:
    ids, _ = corpus_with_duplicates(tmp_path / "in")
    out = tmp_path / "out"
    spec = spec_for(str(tmp_path / "in"), str(out), ray={"max_actors": 2})  # 3 CPUs: a free one for a restart
    spec["input"]["rows_per_unit"] = 10
    cmd = vaelm("preprocess", str(write_spec(tmp_path / "s.yaml", spec)))
    with three_nodes(tmp_path) as env:
        markers = out / "_work" / "clean"  # per-unit commit markers: the job is under way
        run_through_a_node_kill(env, cmd, lambda: any(markers.glob("*.json")), kill_timeout=240, finish_timeout=300)
    train, val, rejects = dataset_ids(str(out))
    assert sorted(train + val + rejects) == sorted(ids), "each input id exactly once"


# -- classify ------------------------------------------------------------------------------------------------


def classify_input(folder: Path, n: int) -> tuple[list[str], set[str]]:
    """n documents in 10-row row groups, every 25th empty and every 40th null (rejects with a reason)."""
    texts: list[str | None] = list(make_docs(n, seed=31))
    for i in range(0, n, 25):
        texts[i] = ""
    for i in range(7, n, 40):
        texts[i] = None
    ids = [f"c{i:05d}" for i in range(n)]
    folder.mkdir(parents=True)
    half = n // 2
    for k, (lo, hi) in enumerate(((0, half), (half, n))):
        table = pa.table({"id": ids[lo:hi], "text": pa.array(texts[lo:hi], pa.string())})
        pq.write_table(table, folder / f"part-{k}.parquet", row_group_size=10)
    return ids, {i for i, t in zip(ids, texts, strict=True) if not t}


@pytest.mark.timeout(300)
def test_worker_node_killed_during_classify_then_ids_reconcile(tmp_path: Path) -> None:
    model = write_artifact(str(tmp_path / "clf"), labels=["en", "zh"], max_tokens=32)
    ids, bad = classify_input(tmp_path / "in", 8000)
    out = tmp_path / "out"
    spec = {
        "job": "classify",
        "model": model,
        # 800 units: seconds of work are left when the second actor is up (it starts seconds after the first)
        "input": {"paths": [str(tmp_path / "in")], "rows_per_unit": 10},
        "output": str(out),
        "ray": {"max_actors": 2},  # 2 of the 3 CPUs: the actor of a killed node can restart on the third
    }
    cmd = vaelm("classify", str(write_spec(tmp_path / "c.yaml", spec)))
    with three_nodes(tmp_path) as env:
        markers = out / "_work" / "units"  # per-unit commit markers: the job is under way
        run_through_a_node_kill(env, cmd, lambda: any(markers.glob("*.json")), kill_timeout=180, finish_timeout=240)
    data, rejects = ids_in(str(out), "data"), ids_in(str(out), "rejects")
    assert len(data) == len(set(data)) and len(rejects) == len(set(rejects)), "no id twice"
    assert set(rejects) == bad, "exactly the empty and null documents are rejected"
    assert sorted(data) == sorted(set(ids) - bad), "output ids = input ids minus rejects"
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["rows_in"] == len(ids) == counts["documents_out"] + counts["rejected"]
    assert (out / "_SUCCESS").exists()


# -- train ---------------------------------------------------------------------------------------------------

TINY = {"embed_dim": 24, "hidden_dim": 24, "num_layers": 1, "latent_dim": 4}
LOOP: dict[str, Any] = {
    "num_workers": 2,
    "cpus_per_worker": 1,
    "batch_size": 8,
    "epochs": 2,  # 351 training rows / 2 workers / 8 = 21 steps per epoch, 42 in all
    "eval_every": 7,
    "val_docs": 60,
    "lr": 0.01,
    "seed": 0,
    "final_iw_samples": 2,
    "final_eval_docs": 60,
    "max_failures": 3,
}
KILL_AFTER_STEP = 14  # a checkpoint this late or later exists when the node dies: a third or more of the run
TOLERANCE = 0.05
"""Allowed relative difference of the final validation ELBO NLL (metrics.json) between the killed-and-resumed
run and an undisturbed run of the same spec and seed. Neither run is reproducible to the bit: Ray Data hands
each worker other rows in another order from run to run, and again after the restart. Measured on this
machine: 0.02 % and 1.6 % apart (two runs of this test); undisturbed runs alone differed by 1.9 %. A broken
resume is much further off: the test checks that the undisturbed run's own validation loss after only the
steps that a resume from scratch would have trained (21 of 42) lies beyond this tolerance (measured +9 %
and +18 %)."""


def val_loss(model: Path) -> float:
    return float(json.loads((model / "metrics.json").read_text())["elbo_nll"])


def val_history(model: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (model / "training" / "metrics.jsonl").read_text().splitlines()]
    return {int(r["step"]): float(r["val_elbo"]) for r in rows}


@pytest.mark.timeout(600)
def test_worker_node_killed_during_training_then_the_model_matches_an_undisturbed_run(tmp_path: Path) -> None:
    write_corpus(tmp_path / "corpus", make_docs(420, seed=7), files=2)
    dataset = tmp_path / "dataset"
    pre = {
        "job": "preprocess",
        "input": {"paths": [str(tmp_path / "corpus")]},
        "output": str(dataset),
        "tokenizer": {"vocab_size": 300, "min_frequency": 1},
        "tokenize": {"max_tokens": 40, "val_fraction": 0.15},
        "ray": {"max_actors": 2},
    }

    def train_cmd(name: str) -> list[str]:
        spec = {
            "job": "train",
            "dataset": str(dataset),
            "output": str(tmp_path / name),
            "run_dir": str(tmp_path / f"{name}-runs"),
            "model": TINY,
            "loss": {"anneal_steps": 10, "cycles": 2},
            "train": LOOP,
        }
        return vaelm("train", str(write_spec(tmp_path / f"{name}.yaml", spec)))

    # Worker nodes of 2 CPUs: Ray Train packs its 2 one-CPU workers onto one of them (the head has 1 CPU),
    # and when that node dies the head and the other worker still have the 2 + 1 CPUs that the restarted
    # workers and Ray Data's read tasks need, as a cluster with spare capacity would.
    with three_nodes(tmp_path, VAELM_RAY_WORKER_CPUS="2") as env:
        done = subprocess.run(vaelm("preprocess", str(write_spec(tmp_path / "p.yaml", pre))), env=job_env(env))
        assert done.returncode == 0
        started = time.monotonic()
        calm = subprocess.run(train_cmd("calm"), env=job_env(env), capture_output=True, text=True, timeout=240)
        assert calm.returncode == 0, calm.stderr[-3000:]
        print(f"undisturbed run: {time.monotonic() - started:.1f} s")

        cmd = train_cmd("killed")
        job = subprocess.Popen(cmd, env=job_env(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        checkpoints = tmp_path / "killed-runs"

        def checkpointed() -> bool:  # a late enough checkpoint, which Ray Train's poll (every 2 s) has registered
            late = [p for p in checkpoints.rglob("state.json") if json.loads(p.read_text())["step"] >= KILL_AFTER_STEP]
            return bool(late) and time.time() - min(p.stat().st_mtime for p in late) > 4

        victim = kill_worker_node_hosting(env, TRAIN_WORKER, job, checkpointed, timeout=240)
        on_victim = [p for p in actors_by_node(env, TRAIN_WORKER) if p.node == victim.node]
        assert_node_gone(env, victim)
        log = finish_or_rerun(job, cmd, job_env(env), timeout=300)
        print(f"training workers on {victim.node} at the kill: {len(on_victim) or 'its actors were gone already'}")
    resumed = re.search(r"resumed from step (\d+)", log)
    assert resumed, "training restarted from a checkpoint, not from scratch"
    calm_loss, killed_loss = val_loss(tmp_path / "calm"), val_loss(tmp_path / "killed")
    steps = list(val_history(tmp_path / "killed"))
    assert steps == sorted(set(steps)), "one history, no step twice"
    calm_history = val_history(tmp_path / "calm")
    assert steps[-1] == max(calm_history), "as many steps as the undisturbed run"
    gap = abs(killed_loss - calm_loss) / calm_loss
    # what a resume that silently started from scratch would be near: the weights after only the steps left
    short = max(s for s in calm_history if s <= steps[-1] - int(resumed.group(1)))
    short_gap = (calm_history[short] - calm_history[steps[-1]]) / calm_history[steps[-1]]
    print(
        f"final validation ELBO NLL: undisturbed {calm_loss:.3f}, killed and resumed from step {resumed.group(1)} "
        f"{killed_loss:.3f} ({gap:.2%}); the undisturbed run after {short} steps: {short_gap:+.2%}"
    )
    assert short_gap > TOLERANCE, "the tolerance would not catch a resume that restarted from scratch"
    assert gap <= TOLERANCE, (calm_loss, killed_loss)
