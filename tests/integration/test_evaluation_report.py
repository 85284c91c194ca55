"""The evaluation's statistics, from a hand-made runs table: the best no-tuning baseline is chosen
by validation (never test), ratios and win rates, bootstrap intervals, time-to-target, profiles."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from rlhpo.evaluation.report import (
    add_comparisons,
    compare,
    controller_table,
    losses_list,
    performance_profile,
    readme_tables,
)


def _row(task: str, seed: int, method: str, test: float, val: float, start: str = "sensible", **kw: object) -> dict:
    row = dict(
        task=task, family=task.split("-")[0], task_seed=int(task.split("-")[1]), start=start, method=method,
        group="main", seed=seed, optimizer="adam", test_loss=test, test_metric=1.0 / test, metric="accuracy",
        best_val_loss=val, final_val_loss=val, examples=100, compute_examples=100, steps=10, wall_s=1.0,
        diverged=False, start_lr=1e-3, start_batch_size=32, start_weight_decay=0.0, tuned_lr=float("nan"),
        to_controller_final_val=float("nan"),
    )
    row.update(kw)
    return row


def _frame() -> pd.DataFrame:
    rows = []
    for t, task in enumerate(["fa-1", "fa-2", "fb-1"]):
        for seed in (0, 1):
            # cosine has the better VALIDATION loss, constant the better TEST loss: cosine is the pick
            rows += [
                _row(task, seed, "constant", test=1.0, val=2.0, to_controller_final_val=0.5),
                _row(task, seed, "cosine", test=1.2, val=1.5, to_controller_final_val=math.inf),
                _row(task, seed, "controller", test=0.6 if task != "fb-1" else 1.8, val=1.0),
                _row(task, seed, "optuna", test=0.5, val=0.9, tuned_lr=1e-2, start="sensible"),
            ]
    return add_comparisons(pd.DataFrame(rows))


def test_best_no_tuning_is_chosen_by_validation_not_test() -> None:
    df = _frame()
    assert (df.best_no_tuning == "cosine").all()
    ctrl = df[df.method == "controller"]
    assert ctrl.ratio_vs_best_no_tuning.to_numpy() == pytest.approx([0.5] * 4 + [1.5] * 2)
    assert df[df.method == "constant"].norm_test_loss.eq(1.0).all()
    # how far the start is from Optuna's lr: log10(1e-3 / 1e-2); a search has no start of its own
    assert df[df.method == "constant"].start_lr_log10_vs_optuna.to_numpy() == pytest.approx([-1.0] * 6)
    assert df[df.method == "optuna"].start_lr_log10_vs_optuna.isna().all()


def test_compare_reports_ratio_and_win_rate_with_bootstrap_intervals_over_tasks() -> None:
    c = compare(_frame(), "controller", "best_no_tuning")
    assert c["n"] == 6 and c["n_wins"] == 4
    med, lo, hi = c["ratio"]
    assert med == pytest.approx(0.5) and lo == pytest.approx(0.5) and hi == pytest.approx(1.5)
    win, lo, hi = c["win"]
    assert win == pytest.approx(2 / 3) and lo == 0.0 and hi == 1.0  # P(three draws of fb) = 1/27 > 2.5%
    assert c["metric_win"] == pytest.approx(2 / 3)
    assert compare(_frame(), "controller", "constant")["n_wins"] == 4


def test_time_to_target_is_a_distribution_with_the_fraction_that_gets_there() -> None:
    table = controller_table(_frame(), "sensible")
    # constant reaches the controller's final val loss in half the budget on every task-seed; cosine never
    assert "| constant | 4/6 |" in table and "| 1.00 | 0.50 / 0.50 / 0.50 |" in table
    assert "| cosine | 4/6 |" in table and "| 0.00 | never / never / never |" in table
    assert "| best no-tuning (by val) | 4/6 |" in table


def test_losses_list_names_the_family_where_the_controller_loses() -> None:
    lines = losses_list(_frame())
    assert any(line.startswith("- sensible start, fb: test loss 1.50x the best no-tuning") for line in lines)
    assert any("against optuna: the controller wins 0 of 6" in line for line in lines)
    assert not any(", fa:" in line for line in lines)


def test_performance_profile_counts_task_seeds_within_a_factor_of_the_best() -> None:
    prof = performance_profile(_frame(), "sensible", np.array([1.0, 1.25, 4.0]))
    assert prof["optuna"].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert prof["controller"].tolist() == pytest.approx([0.0, 4 / 6, 1.0])


def test_tables_are_reproducible_from_the_csv(tmp_path) -> None:
    df = _frame()
    df.to_csv(tmp_path / "runs.csv", index=False)
    assert readme_tables(pd.read_csv(tmp_path / "runs.csv")) == readme_tables(df)


def _v3_frame() -> pd.DataFrame:
    """Runs with time to result and the lr grid: on fa the grid gains 10% over the calibrated
    default and the controller half of it; on fb 1% (below the 3% that counts for capture)."""
    rows = []
    for task in ["fa-1", "fa-2", "fb-1"]:
        fa = task.startswith("fa")
        for seed in (0, 1):
            ttr = lambda steps, total=100: dict(  # noqa: E731
                steps_to_target=steps, examples_to_target=steps * 10.0, seconds_to_target=steps / 10,
                speedup_steps=total / steps, speedup_examples=total / steps, speedup_seconds=total / steps,
            )
            never = dict(steps_to_target=math.inf, examples_to_target=math.inf, seconds_to_target=math.inf,
                         speedup_steps=0.0, speedup_examples=0.0, speedup_seconds=0.0)
            rows += [
                _row(task, seed, "calibrated", test=1.0, val=1.0, **ttr(100)),
                _row(task, seed, "lr_grid", test=0.9 if fa else 0.99, val=0.9, lr_factor=4.0 if fa else 1.0,
                     compute_examples=700, **ttr(50)),
                _row(task, seed, "controller", test=0.95 if fa else 1.02, val=0.95, **(ttr(80) if fa else never)),
                _row(task, seed, "prior_only", test=1.0, val=1.0, **ttr(100 if fa else 125)),
            ]
    return add_comparisons(pd.DataFrame(rows))


def test_headroom_and_capture_per_task_seed() -> None:
    df = _v3_frame()
    grid = df[df.method == "lr_grid"]
    assert grid.headroom.to_numpy() == pytest.approx([0.1] * 4 + [0.01] * 2)
    ctrl = df[df.method == "controller"]
    assert ctrl.capture.iloc[:4].to_numpy() == pytest.approx([0.5] * 4) and ctrl.capture.iloc[4:].isna().all()
    assert (df[df.method == "calibrated"].capture.iloc[:4] == 0).all()


def test_time_to_result_headroom_and_bar_lines_in_the_report() -> None:
    text = readme_tables(_v3_frame())
    # the controller reaches the target on fa (speedup 100/80 = 1.25), never on fb (0)
    assert "| controller | 4/6 (67%) | 1.25 [0.00, 1.25] | 1.25 | 1.25 | 80 |" in text
    assert "| lr_grid | 6/6 (100%) | 2.00 [2.00, 2.00] |" in text
    assert "| controller | 1.25 [1.25, 1.25] (4/4) | 0.00 [0.00, 0.00] (0/2) |" in text  # per family: fa, fb
    assert "above 3% on 4" in text and "Factors picked: x1 2, x4 4." in text
    assert "| controller | 4 | 0.50 [0.50, 0.50] |" in text and "| prior_only | 4 | 0.00 [0.00, 0.00] |" in text
    bar = [line for line in text.splitlines() if line.startswith("- controller vs ")]
    assert bar[0].startswith("- controller vs prior_only: final test loss, controller wins 4/6 task-seeds")
    assert "speedup in steps, controller 1.25 [0.00, 1.25] against 1.00 [0.80, 1.00]" in bar[0]
    assert bar[0].endswith("first to the target on 4/6.")
    assert bar[1].startswith("- controller vs calibrated:") and "first to the target on 4/6." in bar[1]


def test_runs_without_time_to_result_keep_the_tables_they_had() -> None:
    old = _v3_frame().drop(columns=["steps_to_target", "examples_to_target", "seconds_to_target", "speedup_steps",
                                    "speedup_examples", "speedup_seconds", "headroom", "capture"])
    text = readme_tables(old)
    assert "Time to result" not in text and "Headroom" not in text and "bar lines" not in text


def test_report_cli_on_a_missing_csv_is_one_line(tmp_path):
    """``python -m rlhpo.evaluation.report missing.csv`` says so in one line (issue 32: a 24-line traceback)."""
    from rlhpo.evaluation.report import main

    with pytest.raises(SystemExit) as err:
        main([str(tmp_path / "missing.csv")])
    message = str(err.value.code)  # what Python prints to stderr, with exit code 1
    assert message.startswith(f"[rlhpo] error: {tmp_path / 'missing.csv'}: no such file; give the runs.csv") and "\n" not in message
