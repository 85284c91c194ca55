"""bench.lr_fit's scoring: wins by difference (losses that go negative too), the headroom and the
capture relative to |x1|, a start that trains the same runs counted once, and the fit left out
one family at a time."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from bench.lr_fit import _fitted, load, score

FACTORS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def _row(family: str, best: float, base: float, gain: float) -> dict:
    """A task-seed whose grid's best factor is ``best`` (test loss ``base - gain``); others ``base + 0.1 |base|``."""
    grid = {f: (base + 0.1 * abs(base), base + 0.1 * abs(base)) for f in FACTORS}
    grid[1.0] = (base, base)
    grid[best] = (base - gain, base - gain)
    return dict(family=family, task_seed=0, start="sensible", grid=grid, best=best, y=math.log2(best))


def test_wins_are_by_difference_even_for_negative_losses():
    rows = [_row("a", 0.5, -1.0, 0.2), _row("b", 2.0, 2.0, 0.2)]
    s = score(rows, [-1.0, 1.0], clip=2.0)  # both predictions right
    assert (s["wins"], s["losses"], s["n_headroom"], s["capture"]) == (2, 0, 2, 1.0)
    s = score(rows, [1.0, -1.0], clip=2.0)  # both wrong: worse than x1
    assert (s["wins"], s["losses"]) == (0, 2)
    assert s["capture"] < 0
    assert s["median"] == pytest.approx(1.1)  # the ratio over the one task-seed whose loss is positive


def test_predictions_are_clipped_and_rounded_to_the_grid():
    rows = [_row("a", 8.0, 1.0, 0.5)]
    assert score(rows, [3.0], clip=2.0)["wins"] == 0  # clipped to x4, not the best x8
    assert score(rows, [2.8], clip=3.0)["wins"] == 1  # rounded to x8


def test_a_start_that_trains_the_same_runs_counts_once(tmp_path):
    grid = json.dumps({f"{f:g}": [1.0 / f, 1.0] for f in FACTORS})
    path = tmp_path / "c.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["family", "task", "task_seed", "start", "optimizer", "grid", "observations", "seconds"])
        w.writeheader()
        for start in ("sensible", "random"):
            w.writerow(dict(family="a", task="a-0", task_seed=0, start=start, optimizer="adam", grid=grid,
                            observations="[[0.0]]", seconds=1))
    rows = load(str(path))
    assert len(rows) == 1 and rows[0]["best"] == 8.0


def test_the_fit_never_sees_the_family_it_predicts():
    # the label is a family constant that no feature carries: left out, a family gets the others' mean
    rows = []
    for fam, best in (("a", 0.25), ("b", 4.0), ("c", 4.0)):
        for i in range(4):
            r = _row(fam, best, 1.0, 0.1)
            r["obs"] = [[float(i)]]
            rows.append(r)
    train, preds, _, _ = _fitted(rows, [], lambda r: np.array(r["obs"][0]), alpha=1.0)
    by_family = {f: np.mean([p for r, p in zip(train, preds) if r["family"] == f]) for f in "abc"}
    assert by_family["a"] == pytest.approx(2.0)  # the mean of b and c: wrong way, as it should be
    assert by_family["b"] == pytest.approx(0.0)  # the mean of a and c


def test_prodigy_estimates_are_octaves_of_the_calibrated_lr_for_adam_tasks_only(tmp_path):
    from bench.lr_fit import _attach_prodigy, _prodigy_lines
    from rlhpo.control.prior import CALIBRATED

    rows = [dict(_row("a", 0.25, 1.0, 0.2), optimizer="adamw"), dict(_row("b", 4.0, 1.0, 0.2), optimizer="sgd"),
            dict(_row("c", 4.0, 1.0, 0.2), optimizer="adam")]
    lr = CALIBRATED["adamw"]["lr"]
    path = tmp_path / "p.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["family", "task_seed", "start", "d", "final_val_loss", "test_loss"])
        w.writeheader()
        for fam, d in (("a", {"0.1": lr / 8, "1": lr / 4}), ("b", {"1": 1.0}), ("c", {"0.1": lr, "1": lr * 4})):
            w.writerow(dict(family=fam, task_seed=0, start="sensible", d=json.dumps(d), final_val_loss=0.9, test_loss=0.9))
    _attach_prodigy(rows, str(path))
    assert rows[0]["prodigy"] == {0.1: pytest.approx(-3.0), 1.0: pytest.approx(-2.0)}  # an Adam lr, over the calibrated one
    assert "prodigy" not in rows[1] and rows[1]["prodigy_test"] == 0.9  # SGD: no Adam lr to compare; its run still counts
    lines = _prodigy_lines(rows, [], clip=2.0)
    assert len(lines) == 2 and "| 2/2 (worse 0) |" in lines[1]  # after the whole run: the grid's best on both
    assert "| 1/2 (worse 0) |" in lines[0]  # after 0.1 of it: x1/8 (clipped to x1/4: right) and x1 (no move)


def test_probe_outcomes_become_relative_scores_and_greedy_picks(tmp_path):
    from bench.lr_fit import PROBES, _attach_probes

    rows = [dict(_row("a", 0.25, 1.0, 0.2), optimizer="adam"), dict(_row("b", 4.0, 1.0, 0.2), optimizer="sgd")]
    path = tmp_path / "p.csv"
    first = {"1": 2.0, "0.25": 1.0, "0.5": 1.5, "2": 3.0, "4": float("nan")}  # x1/4 lowest; x4 failed
    tie = {f"{f:g}": 1.0 for f in PROBES.factors}  # every branch the same: the level as it is
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["family", "task_seed", "start", "probes"])
        w.writeheader()
        w.writerow(dict(family="a", task_seed=0, start="sensible", probes=json.dumps([first, tie])))
        w.writerow(dict(family="b", task_seed=0, start="sensible", probes=json.dumps([tie])))  # one probe: left out
    _attach_probes(rows, str(path))
    assert rows[0]["probe_picks"] == [-2.0, 0.0]
    assert list(rows[0]["probes"][:4]) == [-0.5, -0.25, 0.5, 1.0] and not rows[0]["probes"][4:].any()
    assert "probes" not in rows[1]


def test_noise_ratios_become_octaves_and_unmeasured_ones_zero(tmp_path):
    from bench.lr_fit import _attach_noise

    rows = [dict(_row("a", 0.5, 1.0, 0.2), optimizer="adam"), dict(_row("b", 2.0, 1.0, 0.2), optimizer="adam")]
    path = tmp_path / "n.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["family", "task_seed", "start", "noise"])
        w.writeheader()
        w.writerow(dict(family="a", task_seed=0, start="sensible", noise=json.dumps([float("nan"), 2.0, 0.5, 8.0, 1.0, 4.0])))
        w.writerow(dict(family="b", task_seed=0, start="sensible", noise=json.dumps([1.0, 2.0])))  # too few decisions
    _attach_noise(rows, str(path))
    assert list(rows[0]["noise"]) == [0.0, 1.0, -1.0, 3.0, 0.0]
    assert "noise" not in rows[1]
