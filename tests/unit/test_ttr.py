"""Time to result (rlhpo.evaluation.ttr) on synthetic validation curves, and its runs.csv columns:
the calibrated run's final validation loss is the target, its totals the speedup's numerator."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from rlhpo.evaluation.frames import runs_frame
from rlhpo.evaluation.runner import RunResult
from rlhpo.evaluation.ttr import COLUMNS, first_reach, run_totals, speedup, time_to_result, time_to_target


def curve(val_losses: list[float], batch: int = 10, seconds_per_step: float = 0.5) -> list[dict]:
    """History rows of a run validated every 10 steps (``batch`` examples a step)."""
    return [
        dict(interval=k, steps=10 * (k + 1), examples=10 * (k + 1) * batch, seconds=10 * (k + 1) * seconds_per_step, val_loss=v,
             lr=1e-3, batch_size=batch, weight_decay=0.0)
        for k, v in enumerate(val_losses)
    ]


#: the reference (calibrated) run: 50 steps of 10 examples, 25 s, ending at 0.5
REFERENCE = curve([2.0, 1.0, 0.8, 0.6, 0.5])
TOTALS = run_totals(REFERENCE)


def test_the_reference_totals_are_its_last_row() -> None:
    assert TOTALS == dict(steps=50.0, examples=500.0, seconds=25.0)
    assert all(math.isnan(v) for v in run_totals([]).values())


def test_target_reached_at_a_known_step() -> None:
    rows = curve([1.5, 0.7, 0.55, 0.49, 0.45], batch=20, seconds_per_step=1.0)  # first <= 0.5 at the 4th record
    assert first_reach(rows, 0.5) is rows[3]
    out = time_to_result(rows, 0.5, TOTALS)
    assert set(out) == set(COLUMNS)
    assert (out["steps_to_target"], out["examples_to_target"], out["seconds_to_target"]) == (40.0, 800.0, 40.0)
    assert out["speedup_steps"] == pytest.approx(50 / 40)
    assert out["speedup_examples"] == pytest.approx(500 / 800)  # twice the batch: fewer steps, more examples
    assert out["speedup_seconds"] == pytest.approx(25 / 40)
    assert time_to_target(rows, 0.45)["steps"] == 50.0  # equal to the target counts


def test_target_never_reached() -> None:
    rows = curve([1.5, 0.9, 0.7, 0.6, 0.51])
    out = time_to_result(rows, 0.5, TOTALS)
    assert all(math.isinf(out[f"{u}_to_target"]) for u in ("steps", "examples", "seconds"))
    assert out["speedup_steps"] == out["speedup_examples"] == out["speedup_seconds"] == 0.0  # the worst, not left out


def test_target_reached_at_the_first_record() -> None:
    rows = curve([0.4, 0.3, 0.35])
    out = time_to_result(rows, 0.5, TOTALS)
    assert out["steps_to_target"] == 10.0 and out["speedup_steps"] == pytest.approx(5.0)


def test_non_finite_losses_never_reach_and_a_missing_target_or_unit_is_nan() -> None:
    rows = curve([float("nan"), float("inf"), 0.4])
    assert time_to_target(rows, 0.5)["steps"] == 30.0
    assert all(math.isnan(v) for v in time_to_result(rows, float("inf"), TOTALS).values())
    assert all(math.isnan(v) for v in time_to_result(rows, float("nan"), TOTALS).values())
    old = [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # a history from before seconds were recorded
    out = time_to_result(old, 0.5, TOTALS)
    assert out["steps_to_target"] == 30.0 and math.isnan(out["seconds_to_target"]) and math.isnan(out["speedup_seconds"])
    assert speedup(50.0, 0.0) == math.inf and math.isnan(speedup(float("nan"), 10.0))


@dataclass(frozen=True)
class _Spec:
    seed: int = 2000
    start: str = "sensible"


@dataclass
class _Job:
    method: str
    seed: int
    task: _Spec = _Spec()
    group: str = "main"


@dataclass
class _Record:
    job: _Job
    result: RunResult
    metric_name: str = "accuracy"
    wall_s: float = 1.0


def _run(method: str, seed: int, vals: list[float], batch: int = 10, diverged: bool = False) -> _Record:
    hist = curve(vals, batch)
    res = RunResult("t-2000", "t", method, seed, history=hist, test_loss=vals[-1], final_val_loss=math.inf if diverged else vals[-1],
                    examples=hist[-1]["examples"], compute_examples=hist[-1]["examples"], steps=hist[-1]["steps"], diverged=diverged)
    return _Record(_Job(method, seed), res)


def test_runs_csv_columns_measure_every_run_against_the_calibrated_run_of_its_seed() -> None:
    records = [
        _run("calibrated", 0, [2.0, 1.0, 0.8, 0.6, 0.5]),
        _run("constant", 0, [1.0, 0.5, 0.45, 0.4, 0.4]),  # reaches 0.5 at 20 steps: 2.5x
        _run("calibrated", 1, [2.0, 1.0, 0.8, 0.6, 0.3]),
        _run("constant", 1, [1.0, 0.5, 0.45, 0.4, 0.4]),  # never reaches seed 1's 0.3
        _run("calibrated", 2, [2.0, 1.0], diverged=True),
        _run("constant", 2, [1.0, 0.5]),  # no target: the calibrated run diverged
    ]
    df = runs_frame(records, ["sensible"]).set_index(["method", "seed"])
    assert df.loc[("constant", 0), "steps_to_target"] == 20 and df.loc[("constant", 0), "speedup_steps"] == pytest.approx(2.5)
    assert df.loc[("calibrated", 0), "speedup_steps"] == pytest.approx(1.0)  # its own final loss, at its end
    assert math.isinf(df.loc[("constant", 1), "steps_to_target"]) and df.loc[("constant", 1), "speedup_steps"] == 0.0
    assert all(math.isnan(df.loc[("constant", 2), c]) for c in COLUMNS)
