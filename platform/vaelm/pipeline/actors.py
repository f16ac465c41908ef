"""Run a step over units on a pool of Ray actors, committing each unit as it finishes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import ray

from vaelm.config.common import RayConfig
from vaelm.pipeline.cluster import pool_size
from vaelm.pipeline.commit import Ledger
from vaelm.pipeline.progress import Progress, say
from vaelm.pipeline.units import Unit


class StepActor:
    """Holds one step object (its expensive set-up done once) and applies it to units."""

    def __init__(self, step_cls: type, *args: Any, **kwargs: Any) -> None:
        self.step = step_cls(*args, **kwargs)

    def run(self, unit: Unit, *args: Any) -> tuple[str, dict[str, Any]]:
        return unit.name, self.step(unit, *args)


def run_units(
    step_cls: type,
    init_args: tuple[Any, ...],
    *,
    ledger: Ledger,
    units: Sequence[Unit],
    ray_cfg: RayConfig,
    label: str,
    extra_args: Callable[[Unit], tuple[Any, ...]] = lambda _u: (),
    init_kwargs: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Apply `step_cls(*init_args)` to every uncommitted unit; returns the stats of all units.

    Actors restart (and their unit is retried) if their process dies; a unit is committed only after
    its step returned, so a crash at any point leaves nothing half-counted. A unit whose actor was lost
    with its node is run again (see `_schedule`): a unit rewrites the same files, so that is safe.
    """
    done = ledger.committed()
    todo = [u for u in units if u.name not in done]
    if not todo:
        say(f"{label}: all {len(units)} units already committed")
        return {u.name: done[u.name] for u in units}
    if done:
        say(f"{label}: resuming, {len(done)} of {len(units)} units already committed")
    remote = ray.remote(
        num_cpus=ray_cfg.actor_cpus, num_gpus=ray_cfg.num_gpus_per_actor, max_restarts=3, max_task_retries=3
    )(StepActor)

    def spawn() -> Any:
        return remote.remote(step_cls, *init_args, **(init_kwargs or {}))

    actors = [spawn() for _ in range(pool_size(ray_cfg, work_items=len(todo)))]
    progress = Progress(label, len(todo))
    pending: dict[ray.ObjectRef, Any] = {}
    try:
        for name, stats in _schedule(actors, todo, extra_args, pending, spawn=spawn, label=label):
            ledger.commit(name, stats)
            done[name] = stats
            progress.advance(items=int(stats.get("rows_in", stats.get("documents", 0)) or 0))
    finally:
        for actor in actors:
            ray.kill(actor)
        _drain(pending)
    return {u.name: done[u.name] for u in units}


UNIT_ATTEMPTS = 5
"""Runs of one unit whose actor was lost (beyond Ray's own max_task_retries) before the job fails."""
RETRY_DELAY_S = 2.0
"""Rest of an actor that lost a unit before it gets another, doubled for each loss in a row (2, 4, 8, 16 s).
A node killed outright is declared dead by the GCS only after its health checks fail (some seconds); until
then Ray retries a task against the dead address at once and soon reports the actor unavailable. The rest
gives Ray time to restart the actor elsewhere instead of burning units on it."""
ACTOR_REPLACEMENTS = 3
"""Actors that Ray reports dead (their restarts spent) replaced by new ones, per run_units call."""


def _schedule(
    actors: list[Any],
    todo: list[Unit],
    extra_args: Callable[[Unit], tuple[Any, ...]],
    pending: dict[ray.ObjectRef, Any],
    *,
    spawn: Callable[[], Any],
    label: str,
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Keep every actor busy with one unit; yield (unit name, stats) as units finish, in any order.

    A unit whose actor is lost (RayActorError: its process or node died and Ray's task retries are spent)
    goes back to the front of the queue, at most UNIT_ATTEMPTS times; a live actor may take it at once. The
    actor rests (RETRY_DELAY_S, doubling) before its next unit: if only unavailable (ActorUnavailableError)
    Ray is restarting it; if reported dead, it is replaced by a new one. `actors` is updated in place, so
    that the caller kills every actor it started.
    """
    queue, idle = list(todo), list(range(len(actors)))
    resting: dict[int, float] = {}  # actor index -> when it may take a unit again
    strikes = [0] * len(actors)  # units lost in a row, per actor
    attempts: dict[str, int] = {}
    replaced = 0
    while queue or pending:
        now = time.monotonic()
        idle += [i for i, until in resting.items() if until <= now]
        resting = {i: until for i, until in resting.items() if until > now}
        while idle and queue:
            index, unit = idle.pop(), queue.pop(0)
            pending[actors[index].run.remote(unit, *extra_args(unit))] = (index, unit)
        wait_s = max(min(resting.values()) - now, 0.0) if resting else None
        if not pending:
            time.sleep(wait_s or 0.0)
            continue
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=wait_s)
        if not ready:
            continue
        index, unit = pending.pop(ready[0])
        try:
            result = ray.get(ready[0])
        except ray.exceptions.RayActorError as err:
            attempts[unit.name] = attempts.get(unit.name, 0) + 1
            if attempts[unit.name] >= UNIT_ATTEMPTS:
                raise
            if not isinstance(err, ray.exceptions.ActorUnavailableError):
                if replaced >= ACTOR_REPLACEMENTS:
                    raise
                ray.kill(actors[index])
                actors[index], replaced, strikes[index] = spawn(), replaced + 1, 0
            strikes[index] += 1
            rest = RETRY_DELAY_S * 2 ** (strikes[index] - 1)
            say(f"{label}: {unit.name} lost with its actor ({type(err).__name__}); queued again, actor rests {rest:g}s")
            queue.insert(0, unit)
            resting[index] = time.monotonic() + rest
            continue
        strikes[index] = 0
        idle.append(index)
        yield result


def _drain(pending: dict[ray.ObjectRef, Any]) -> None:
    """Collect the results still in flight after a failure (their actors are dead by now), so that Ray does
    not print them later as unhandled errors with stack frames."""
    for ref in pending:
        with contextlib.suppress(Exception):
            ray.get(ref, timeout=10)
