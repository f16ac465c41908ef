"""The KL weight beta as a function of the optimizer step."""

from __future__ import annotations

from vaelm.config.model import LossConfig


def beta_at(step: int, cfg: LossConfig) -> float:
    """beta for optimizer step `step` (0-based).

    none: beta_max throughout. linear (Bowman et al. 2016): 0 -> beta_max over anneal_steps.
    cyclical (Fu et al. 2019): `cycles` cycles of anneal_steps steps; in each, beta rises linearly from
    0 to beta_max over the first cycle_ratio of the cycle and holds beta_max for the rest; after the
    last cycle beta stays at beta_max.
    """
    if step < 0:
        raise ValueError(f"step={step}: must not be negative")
    if cfg.kl_anneal == "none":
        return cfg.beta_max
    if cfg.kl_anneal == "linear":
        return cfg.beta_max * min(1.0, step / cfg.anneal_steps)
    if step >= cfg.cycles * cfg.anneal_steps:
        return cfg.beta_max
    tau = (step % cfg.anneal_steps) / cfg.anneal_steps  # position in the cycle, [0, 1)
    return cfg.beta_max * min(1.0, tau / cfg.cycle_ratio)
