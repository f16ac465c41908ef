"""Run a step over units on a pool of Ray actors, committing each unit as it finishes."""

from __future__ import annotations

import contextlib
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
    its step returned, so a crash at any point leaves nothing half-counted.
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
    actors = [
        remote.remote(step_cls, *init_args, **(init_kwargs or {}))
        for _ in range(pool_size(ray_cfg, work_items=len(todo)))
    ]
    progress = Progress(label, len(todo))
    pending: dict[ray.ObjectRef, Any] = {}
    try:
        for name, stats in _schedule(actors, todo, extra_args, pending):
            ledger.commit(name, stats)
            done[name] = stats
            progress.advance(items=int(stats.get("rows_in", stats.get("documents", 0)) or 0))
    finally:
        for actor in actors:
            ray.kill(actor)  # type: ignore[arg-type]
        _drain(pending)
    return {u.name: done[u.name] for u in units}


def _schedule(
    actors: list[Any],
    todo: list[Unit],
    extra_args: Callable[[Unit], tuple[Any, ...]],
    pending: dict[ray.ObjectRef, Any],
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Keep every actor busy with one unit; yield (unit name, stats) as units finish, in any order."""
    queue, idle = list(todo), list(actors)
    while queue or pending:
        while idle and queue:
            actor, unit = idle.pop(), queue.pop(0)
            pending[actor.run.remote(unit, *extra_args(unit))] = actor
        [ref], _ = ray.wait(list(pending), num_returns=1)
        idle.append(pending.pop(ref))
        yield ray.get(ref)


def _drain(pending: dict[ray.ObjectRef, Any]) -> None:
    """Collect the results still in flight after a failure (their actors are dead by now), so that Ray does
    not print them later as unhandled errors with stack frames."""
    for ref in pending:
        with contextlib.suppress(Exception):
            ray.get(ref, timeout=10)
