"""KL annealing: beta at given steps for none, linear and cyclical schedules."""

from __future__ import annotations

import pytest

from vaelm.config.model import LossConfig
from vaelm.model.schedule import beta_at


def test_schedule_none_is_constant() -> None:
    cfg = LossConfig(kl_anneal="none", beta_max=0.8)
    assert [beta_at(s, cfg) for s in (0, 10, 10_000)] == [0.8, 0.8, 0.8]


def test_schedule_linear_rises_then_holds() -> None:
    cfg = LossConfig(kl_anneal="linear", anneal_steps=100, beta_max=1.0)
    assert [beta_at(s, cfg) for s in (0, 25, 50, 100, 500)] == pytest.approx([0.0, 0.25, 0.5, 1.0, 1.0])


def test_schedule_cyclical_follows_fu_et_al() -> None:
    cfg = LossConfig(kl_anneal="cyclical", anneal_steps=100, cycles=3, cycle_ratio=0.5, beta_max=1.0)
    steps = [0, 25, 50, 75, 99, 100, 125, 250, 299, 300, 1000]
    expected = [0.0, 0.5, 1.0, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert [beta_at(s, cfg) for s in steps] == pytest.approx(expected)


def test_schedule_cyclical_scales_with_beta_max() -> None:
    cfg = LossConfig(kl_anneal="cyclical", anneal_steps=10, cycles=2, cycle_ratio=1.0, beta_max=0.5)
    assert [beta_at(s, cfg) for s in (0, 5, 10, 15, 20)] == pytest.approx([0.0, 0.25, 0.0, 0.25, 0.5])


def test_schedule_rejects_negative_step() -> None:
    with pytest.raises(ValueError, match="step=-1"):
        beta_at(-1, LossConfig())
