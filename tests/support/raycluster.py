"""A multi-node Ray cluster on this machine, through deploy/local/start-ray-cluster.sh (free ports, own state dir)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# -- which node hosts what, and killing one ---------------------------------------------------------------
#
# A node is known to Ray by its node id and to this machine by the process group (= session) that
# start-ray-cluster.sh gave its `ray start --block`. The two are joined by the resource each worker node
# offers ({"worker1": 1}, {"worker2": 1}; the head offers none): `ray list actors` names an actor's node id,
# `ray list nodes` that node's resources. Ray puts each worker process in a process group of its own (so an
# actor's pgid never matches its node's), but in its node's session: `getsid(actor pid)` cross-checks.


def ray_list(kind: str, env: dict[str, str], *, detail: bool = False) -> list[dict[str, Any]]:
    """What `ray list <kind> --format json` prints ('actors', 'nodes'), straight from the head's state API
    over HTTP: the CLI takes seconds to start on a busy 2-core machine, a request some milliseconds."""
    query = urllib.parse.urlencode({"limit": 10000, "detail": str(detail).lower(), "timeout": 30})
    request = urllib.request.Request(f"{env['RAY_ADDRESS'].rstrip('/')}/api/v0/{kind}?{query}")
    token = env.get("RAY_AUTH_TOKEN") or (
        Path(env["RAY_AUTH_TOKEN_PATH"]).read_text().strip() if env.get("RAY_AUTH_TOKEN_PATH") else ""
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=60) as answer:
        body = json.loads(answer.read())
    assert body.get("result"), f"state API {kind}: {body.get('msg')}"
    return body["data"]["result"]["result"]


def node_name(node: dict[str, Any]) -> str:
    """'head', or the worker's own resource name ('worker1') as start-ray-cluster.sh gave it."""
    if node.get("is_head_node"):
        return "head"
    names = [r for r in node.get("resources_total", {}) if re.fullmatch(r"worker\d+", r)]
    return names[0] if len(names) == 1 else f"unknown:{node.get('node_id')}"


def alive_nodes(env: dict[str, str]) -> dict[str, str]:
    """node id -> node name, of the nodes the GCS counts as alive."""
    return {n["node_id"]: node_name(n) for n in ray_list("nodes", env) if n.get("state") == "ALIVE"}


@dataclass(frozen=True)
class Placement:
    node: str  # 'head', 'worker1', ...
    node_id: str
    actor_id: str
    class_name: str
    pid: int


def actors_by_node(env: dict[str, str], class_name: str) -> list[Placement]:
    """The live actors of `class_name` and the node each runs on."""
    nodes = alive_nodes(env)
    return [
        Placement(nodes.get(a["node_id"], "?"), a["node_id"], a["actor_id"], a["class_name"], int(a.get("pid") or 0))
        for a in ray_list("actors", env)
        if a.get("class_name") == class_name and a.get("state") == "ALIVE" and a.get("node_id")
    ]


def node_groups(env: dict[str, str]) -> dict[str, int]:
    """Node name -> process group (= session) id of its `ray start`, the newest per name (a node started
    again with `start-ray-cluster.sh --worker N` adds a line to the pid file)."""
    pids = Path(env["VAELM_RAY_DIR"]) / "pids"
    return {name: int(pgid) for pgid, name in (line.split() for line in pids.read_text().splitlines() if line)}


def session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def processes_in_session(sid: int) -> list[int]:
    """Pids of this machine's processes in session `sid` (a node's `ray start` and everything it started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and session_of(int(entry.name)) == sid:
            found.append(int(entry.name))
    return found


def kill_node(env: dict[str, str], name: str) -> int:
    """SIGKILL the whole process group of node `name` (its `ray start`, raylet, agents), as a machine that
    dies would; returns the group id. Its worker processes (groups of their own) exit once their raylet is gone."""
    pgid = node_groups(env)[name]
    os.killpg(pgid, signal.SIGKILL)
    return pgid


def wait_until(check: Callable[[], bool], *, timeout: float, what: str, every: float = 0.5) -> float:
    """Poll `check` until true; returns the seconds it took, fails the test after `timeout`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
    return time.monotonic() - started
