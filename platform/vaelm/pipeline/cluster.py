"""ray.init policy and pool sizing: the only place that decides how vaelm joins or starts Ray."""

from __future__ import annotations

import logging
import math
import os

import ray

from vaelm.config.common import RayConfig

log = logging.getLogger("vaelm")


def ensure_ray(cfg: RayConfig) -> None:
    """Join the cluster named by the spec or $RAY_ADDRESS, else start a local Ray sized by the spec."""
    if ray.is_initialized():
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        return
    object_store = cfg.object_store_mb * 1024 * 1024 if cfg.object_store_mb else None
    # "local": always a new local Ray, never silently joining some other cluster on this machine
    ray.init(address="local", num_cpus=cfg.num_cpus, object_store_memory=object_store, include_dashboard=False)


def cluster_cpus() -> float:
    return float(ray.cluster_resources().get("CPU", 1.0))


def pool_size(cfg: RayConfig, *, work_items: int, reserve_cpus: float = 0.0) -> int:
    """How many actors of `cfg.actor_cpus` each fit beside `reserve_cpus` for readers and writers.

    Never more than the work items, never more than `cfg.max_actors`, always at least one.
    """
    fit = math.floor((cluster_cpus() - reserve_cpus) / cfg.actor_cpus + 1e-9)
    size = max(1, min(fit, work_items))
    return min(size, cfg.max_actors) if cfg.max_actors else size
