"""The time budget of ``benchmarks/detection_convergence.py``: every detector trains for exactly its minutes."""

from __future__ import annotations

import itertools
import math

import pytest

from benchmarks.detection_convergence import Curve, TrainingClock, budget_factor, value_at


def test_budget_factor_warms_up_then_decays_to_zero_over_the_time() -> None:
    assert budget_factor(0.0, cosine=True) < 0.05  # the first step barely moves the weights
    assert budget_factor(0.025, cosine=True) == pytest.approx(0.52, abs=0.01)  # half-way through the warm-up
    assert budget_factor(0.05, cosine=True) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.05)), rel=1e-3)
    assert budget_factor(0.5, cosine=True) == pytest.approx(0.5)
    assert budget_factor(1.0, cosine=True) == pytest.approx(0.0, abs=1e-12)
    assert budget_factor(1.3, cosine=True) == pytest.approx(0.0, abs=1e-12)  # the step that overshoots
    rates = [budget_factor(f / 100, cosine=True) for f in range(5, 101)]
    assert all(a >= b for a, b in itertools.pairwise(rates))
    assert budget_factor(0.7, cosine=False) == 1.0


def test_training_clock_counts_training_only_and_reports_each_milestone_once(monkeypatch) -> None:
    now = [100.0]
    monkeypatch.setattr("benchmarks.detection_convergence.time.perf_counter", lambda: now[0])
    clock = TrainingClock(minutes=1.0, milestones=[0.25, 0.5, 1.0])  # 15 s, 30 s; the end is not a milestone

    def train(seconds: float) -> None:
        now[0] += seconds
        clock.tick()

    clock.start()
    train(10)
    assert not clock.milestone_reached()
    train(10)  # 20 s: past 15
    assert clock.milestone_reached() and not clock.milestone_reached()
    now[0] += 500  # an evaluation: not training time
    clock.start()
    train(5)
    assert clock.trained == pytest.approx(25)
    train(40)  # one long step passes 30 s and the budget at once
    assert clock.milestone_reached() and clock.spent
    assert not clock.milestone_reached()


def test_a_milestone_column_shows_the_evaluation_made_when_training_passed_it() -> None:
    curve = Curve("x", minutes=[5.02, 10.01, 30.0], map_50=[0.2, 0.5, 0.7], map=[0.1, 0.2, 0.3], steps=9,
                  seconds_per_step=200.0)
    assert [value_at(curve, m) for m in (5, 10, 20, 30)] == [0.2, 0.5, 0.7, 0.7]
    assert value_at(curve, 31) is None
