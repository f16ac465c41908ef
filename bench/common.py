"""Shared pieces of the benchmarks: machine facts, result files, timing, per-process peak memory.

A benchmark function returns a dict with "metrics", "baseline", "ratio" (and optionally "table",
"notes" and anything else worth keeping); `bench.run` adds name, command, date and machine and writes
bench/results/<name>.json (see bench/run.py).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
WORK = REPO / "out" / "bench"
"""Scratch data of the benchmarks (corpora, outputs): under out/, which git ignores."""


def machine() -> dict[str, Any]:
    """What QUALITY.md asks every figure to name: CPUs, memory, GPU (or none)."""
    return {
        "cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": _gpu(),
        "python": sys.version.split()[0],
    }


def _gpu() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return ", ".join(line.strip() for line in out.splitlines() if line.strip()) or None


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def load_average() -> list[float]:
    """1, 5, 15 minute load averages: how busy the shared machine was."""
    return [round(x, 2) for x in os.getloadavg()]


def write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


# -- peak memory per process --------------------------------------------------------------------------


@dataclass
class ProcPeak:
    pid: int
    label: str
    kind: str
    """'driver' (the process started), 'worker' (a ray:: worker process), or 'system' (raylet, gcs, agents)."""
    peak_rss: int = 0
    cpu_s: float = 0.0
    """User + system CPU seconds, as last seen (a process that lives less than a sample is missed)."""


@dataclass
class MemorySampler:
    """Samples the RSS of a process and all its descendants every `interval_s` seconds, in a thread.

    For a Ray driver that started a local cluster, the descendants are the GCS, the raylet, the agents and
    every worker process (ray::IDLE, ray::StepActor, ...), so the peaks cover the whole Ray run.
    """

    root_pid: int
    interval_s: float = 0.5
    procs: dict[int, ProcPeak] = field(default_factory=dict)
    peak_total_rss: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> MemorySampler:
        self._thread = threading.Thread(target=self._loop, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        try:
            root = psutil.Process(self.root_pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            self.sample(root)
            self._stop.wait(self.interval_s)

    def sample(self, root: psutil.Process) -> None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        total = 0
        for proc in procs:
            try:
                rss = proc.memory_info().rss
                peak = self.procs.get(proc.pid)
                if peak is None:
                    peak = self.procs[proc.pid] = ProcPeak(proc.pid, *_label(proc, root.pid))
                elif peak.kind == "worker":  # a worker's title changes: ray::IDLE -> ray::StepActor.run
                    label = _label(proc, root.pid)[0]
                    if label.startswith("ray::") and label != "ray::IDLE":
                        peak.label = label
                peak.peak_rss = max(peak.peak_rss, rss)
                times = proc.cpu_times()
                peak.cpu_s = max(peak.cpu_s, times.user + times.system)
                total += rss
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        self.peak_total_rss = max(self.peak_total_rss, total)
        self.samples += 1

    def summary(self) -> dict[str, Any]:
        """Peak RSS in MiB: the driver's, the largest single worker's and system process's, the largest of all."""
        mib = 2**20

        def largest(kind: str | None) -> dict[str, Any] | None:
            found = [p for p in self.procs.values() if kind is None or p.kind == kind]
            if not found:
                return None
            top = max(found, key=lambda p: p.peak_rss)
            return {"mb": round(top.peak_rss / mib, 1), "process": top.label}

        workers = [p for p in self.procs.values() if p.kind == "worker"]
        return {
            "driver_mb": round(self.procs[self.root_pid].peak_rss / mib, 1) if self.root_pid in self.procs else None,
            "largest_worker": largest("worker"),
            "largest_system": largest("system"),
            "largest_process": largest(None),
            "worker_processes": len(workers),
            "processes_seen": len(self.procs),
            "peak_sum_mb": round(self.peak_total_rss / mib, 1),
            "cpu_seconds": {
                kind: round(sum(p.cpu_s for p in self.procs.values() if p.kind == kind), 1)
                for kind in ("driver", "worker", "system")
            },
            "samples": self.samples,
        }


def _label(proc: psutil.Process, root_pid: int) -> tuple[str, str]:
    try:
        cmd = proc.cmdline()
        name = proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "?", "system"
    title = cmd[0] if cmd else name
    if proc.pid == root_pid:
        return "driver", "driver"
    if title.startswith("ray::"):
        return title.split()[0][:60], "worker"
    if "default_worker.py" in " ".join(cmd):
        return "ray::(starting worker)", "worker"
    base = os.path.basename(title)
    if base.startswith("python") and len(cmd) > 1:
        script = next((c for c in cmd[1:] if c.endswith(".py")), cmd[1])
        base = os.path.basename(script)
    return base[:60], "system"


def run_sampled(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout_s: float,
    log_path: Path | None = None,
    interval_s: float = 0.5,
) -> tuple[int, float, dict[str, Any]]:
    """Run `cmd` in a subprocess while sampling its process tree's memory.

    Returns (exit code, wall seconds, MemorySampler.summary()). Output goes to `log_path` (or is dropped).
    """
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        started = time.monotonic()
        proc = subprocess.Popen(list(cmd), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        with MemorySampler(proc.pid, interval_s=interval_s) as sampler:
            try:
                code = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                kill_tree(proc.pid)
                proc.wait()
                code = -9
        return code, time.monotonic() - started, sampler.summary()
    finally:
        if log_path:
            log.close()  # type: ignore[union-attr]


def kill_tree(pid: int) -> None:
    """Kill a process we started and every descendant of it, by pid (a timed-out Ray driver and its cluster)."""
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(procs, timeout=10)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
