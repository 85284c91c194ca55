"""The two methods built on the calibrated default (issue 31): seesaw's batch-size ramp (where the
cosine would halve the lr, the lr falls by 1/sqrt(2) and the batch doubles, up to a cap) and the
lr grid around the calibrated lr (the headroom row)."""

from __future__ import annotations

import math

import pytest
from conftest import make_tiny_task

from rlhpo.evaluation.baselines import Calibrated, Seesaw, seesaw_point, seesaw_ramp_examples
from rlhpo.evaluation.runner import run_task
from rlhpo.evaluation.search import LR_GRID_FACTORS, grid_pick, lr_grid_search, scaled_defaults

CAL = {"adam": {"lr": 1e-2, "weight_decay": 0.0}, "adamw": {"lr": 1e-3, "weight_decay": 1e-2}, "sgd": {"lr": 0.05, "weight_decay": 5e-4}}
BUDGET, WARMUP, BATCH = 10_000, 500.0, 10


def cosine(e: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * (e - WARMUP) / (BUDGET - WARMUP)))


def test_ramps_happen_where_the_cosine_halves() -> None:
    points = seesaw_ramp_examples(BUDGET, WARMUP, 3)
    assert [cosine(e) for e in points] == pytest.approx([1 / 2, 1 / 4, 1 / 8])
    assert points[0] == pytest.approx(WARMUP + (BUDGET - WARMUP) / 2)  # the cosine's midpoint
    for k, e in enumerate(points, start=1):
        before, after = seesaw_point(e - 1, BUDGET, WARMUP, BATCH, 3), seesaw_point(e + 1, BUDGET, WARMUP, BATCH, 3)
        assert before[1] == k - 1 and after[1] == k
        # where the cosine has halved the lr once more, Seesaw's lr falls by 1/sqrt(2) only
        assert before[0] == pytest.approx(2 ** (-(k - 1) / 2)) and after[0] == pytest.approx(2 ** (-k / 2), rel=1e-3)
    # between the ramps it stays put (the paper's step form)
    assert seesaw_point(WARMUP + 1, BUDGET, WARMUP, BATCH, 3)[0] == seesaw_point(points[0] - 1, BUDGET, WARMUP, BATCH, 3)[0] == 1.0


def test_warm_up_is_linear_and_never_ramps() -> None:
    assert seesaw_point(0, BUDGET, WARMUP, BATCH, 3) == (pytest.approx(BATCH / WARMUP), 0)
    assert seesaw_point(240, BUDGET, WARMUP, BATCH, 3) == (pytest.approx(250 / WARMUP), 0)  # below 1/2, no ramp
    assert seesaw_point(WARMUP, BUDGET, WARMUP, BATCH, 3) == (pytest.approx(1.0), 0)


def test_past_the_cap_the_lr_follows_the_cosine() -> None:
    third, fourth = seesaw_ramp_examples(BUDGET, WARMUP, 4)[2:]  # the last ramp (cap 8x), where a 4th would be
    for e in (third + 1, fourth + 10, 9_000.0, BUDGET):
        factor, k = seesaw_point(e, BUDGET, WARMUP, BATCH, 3)
        assert k == 3 and factor == pytest.approx(cosine(e) * 2**1.5)
    assert seesaw_point(third + 1, BUDGET, WARMUP, BATCH, 3)[0] == pytest.approx(2**-1.5, rel=1e-3)  # continuous there
    assert seesaw_point(BUDGET, BUDGET, WARMUP, BATCH, 0) == (pytest.approx(0.0), 0)  # no ramp allowed: the plain cosine


def _batch_at(run, examples: float) -> int:
    """The batch size of the interval that starts at ``examples`` (the history records each
    interval's values at its start)."""
    starts = [0] + [h["examples"] for h in run.history[:-1]]
    return next(h["batch_size"] for s, h in zip(starts, run.history) if s >= examples)


def test_a_seesaw_run_ramps_its_batch_up_to_the_cap_in_fewer_steps() -> None:
    task = make_tiny_task(batch_size=4, budget=4_000, n=300)  # 100 training examples: the cap is 8 x 4 = 32
    cal = run_task(task, Calibrated(CAL), seed=0, n_intervals=40)
    run = run_task(task, Seesaw(CAL), seed=0, n_intervals=40)
    assert not run.diverged and run.examples == cal.examples == task.budget_examples
    sizes = [h["batch_size"] for h in run.history]
    assert sizes[0] == 4 and max(sizes) == 32 and sorted(sizes) == sizes and set(sizes) == {4, 8, 16, 32}
    ramps = seesaw_ramp_examples(task.budget_examples, 0.05 * task.budget_examples, 3)
    for k, e in enumerate(ramps, start=1):  # the interval after each ramp point trains at the doubled batch
        assert _batch_at(run, e + 100) == 4 * 2**k
    assert run.steps < 0.75 * cal.steps  # the same examples in fewer optimizer steps
    assert run.history[0]["lr"] == pytest.approx(1e-2 * 4 / 200)  # warm-up from the calibrated adam lr
    # a cap of the training set: 4 x 2**k <= 12 allows one ramp only
    small = run_task(make_tiny_task(batch_size=4, budget=2_000, n=36), Seesaw(CAL), seed=0, n_intervals=20)
    assert max(h["batch_size"] for h in small.history) == 8


def test_the_grid_picks_the_lowest_finite_loss_ties_to_the_factor_nearest_one() -> None:
    assert grid_pick({0.5: 0.9, 1.0: 1.0, 8.0: float("nan")}) == 0.5
    assert grid_pick({0.5: 1.0, 1.0: 1.0, 2.0: float("-inf")}) == 1.0  # non-finite: inf, never picked
    assert grid_pick({0.25: 1.0, 2.0: 1.0, 4.0: 1.0}) == 2.0


def test_lr_grid_picks_the_lowest_final_validation_loss_at_seven_times_the_compute() -> None:
    task = make_tiny_task(batch_size=8, budget=800)
    assert scaled_defaults(CAL, 0.5)["sgd"] == {"lr": 0.025, "weight_decay": 5e-4}
    grid = lr_grid_search(task, CAL, seed=0, n_intervals=4)
    vals = grid.info["grid_val_losses"]
    assert list(vals) == [f"{f:g}" for f in LR_GRID_FACTORS] and len(vals) == 7
    assert grid.final_val_loss == min(vals.values()) == vals[f"{grid.info['lr_factor']:g}"]
    assert grid.info["tuned_lr"] == pytest.approx(1e-2 * grid.info["lr_factor"])
    assert grid.compute_examples == 7 * task.budget_examples and grid.examples == task.budget_examples
    assert grid.method == "lr_grid" and math.isfinite(grid.test_loss)
    # factor 1 is the calibrated run itself, on the same seed
    assert vals["1"] == run_task(task, Calibrated(CAL), seed=0, n_intervals=4).final_val_loss
    with pytest.raises(ValueError, match="factors must be finite numbers > 0"):
        lr_grid_search(task, CAL, factors=(0.5, 0.0))
