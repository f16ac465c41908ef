"""Exactly-once output and resume, for every job.

A job's output root holds `_vaelm_run.json` (what is being written there: job, identity hash of the
spec, input fingerprint). Work is split into units with stable names. A unit's files are written to
deterministic paths (atomic per file), then the driver writes the unit's commit marker
`_work/<stage>/<unit>.json`; only marked units count. A rerun of the same spec skips marked units and
overwrites the rest; `_SUCCESS` is written last. A different spec at the same root is refused unless
the user passes --overwrite.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass
from typing import Any, Literal

from vaelm import storage
from vaelm.errors import OutputExistsError
from vaelm.storage import Location

log = logging.getLogger("vaelm")

RUN_FILE = "_vaelm_run.json"
SUCCESS = "_SUCCESS"
WORK = "_work"
FAULT_ENV = "VAELM_FAULT_EXIT_AFTER_COMMITS"

State = Literal["fresh", "resume", "done"]


def claim_output(root: Location, *, job: str, identity: str, fingerprint: str, overwrite: bool) -> State:
    """Decide whether this run starts fresh, resumes, or has nothing to do; refuse foreign outputs."""
    storage.check_writable(root)
    run_file = root.join(RUN_FILE)
    previous = storage.read_json(run_file) if storage.exists(run_file) else None
    mine = {"job": job, "identity": identity, "fingerprint": fingerprint}
    if previous is not None and all(previous.get(k) == v for k, v in mine.items()):
        return "done" if storage.exists(root.join(SUCCESS)) else "resume"
    if previous is not None or _has_files(root):
        if not overwrite:
            raise OutputExistsError(_refusal(root, previous, mine))
        log.warning("--overwrite: deleting %s", root.uri)
        storage.delete_tree(root)
    storage.write_json(run_file, {**mine, "started_at": now()})
    return "fresh"


def _has_files(root: Location) -> bool:
    return bool(storage.list_files(root, suffix=""))


def _refusal(root: Location, previous: dict[str, Any] | None, mine: dict[str, str]) -> str:
    if previous is None:
        return (
            f"output {root.uri} already holds files that vaelm did not write; choose an empty output "
            "or pass --overwrite to delete them"
        )
    what = [k for k in ("job", "identity", "fingerprint") if previous.get(k) != mine[k]]
    reason = {"job": "another job", "identity": "a different spec", "fingerprint": "different input files"}
    why = ", ".join(reason[k] for k in what)
    return (
        f"output {root.uri} holds the results of {why} (job={previous.get('job')}, "
        f"spec={previous.get('identity')}, started {previous.get('started_at')}); this run is "
        f"job={mine['job']}, spec={mine['identity']}. Choose another output or pass --overwrite to replace it"
    )


@dataclass
class Ledger:
    """Commit markers of one stage: `_work/<stage>/<unit>.json` holding the unit's statistics."""

    root: Location
    stage: str

    @property
    def dir(self) -> Location:
        return self.root.join(WORK, self.stage)

    def committed(self) -> dict[str, dict[str, Any]]:
        entries = storage.list_files(self.dir, suffix=".json")
        return {e.uri.rsplit("/", 1)[-1].removesuffix(".json"): _read(e.uri, self.dir) for e in entries}

    def commit(self, unit: str, stats: dict[str, Any]) -> None:
        storage.write_json(self.dir.join(f"{unit}.json"), stats)
        _maybe_inject_fault()


def _read(uri: str, base: Location) -> dict[str, Any]:
    name = uri.rsplit("/", 1)[-1]
    value = storage.read_json(base.join(name))
    return value if isinstance(value, dict) else {}


_commits_in_process = 0


def _maybe_inject_fault() -> None:
    """Fault injection for tests: $VAELM_FAULT_EXIT_AFTER_COMMITS=N kills this process (exit 137,
    no clean-up, like SIGKILL) right after its Nth commit marker."""
    global _commits_in_process
    limit = os.environ.get(FAULT_ENV)
    _commits_in_process += 1
    if limit and _commits_in_process >= int(limit):
        log.error("fault injection: exiting after %d commits", _commits_in_process)
        os._exit(137)


def mark_success(root: Location) -> None:
    storage.write_bytes(root.join(SUCCESS), now().encode())


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
