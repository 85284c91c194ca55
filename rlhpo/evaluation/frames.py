"""The tables of an evaluation's runs: :func:`runs_frame` (runs.csv, with the time-to-result
columns of :mod:`rlhpo.evaluation.ttr` and the comparison columns of :func:`add_comparisons`) and
:func:`histories_frame` (histories.csv).

Every function reads runs as :class:`~rlhpo.evaluation.worker.JobResult` objects (seen here through
the :class:`RunRecord` protocol, so that the report does not import the jobs that import it).
"""

from __future__ import annotations

import math
import re
from typing import Any, Optional, Protocol, Sequence

import numpy as np
import pandas as pd

from rlhpo.evaluation.config import METHODS, NO_TUNING, START_FREE_METHODS, STARTS
from rlhpo.evaluation.runner import RunResult
from rlhpo.evaluation.stats import _ratio, _to_target
from rlhpo.evaluation.ttr import run_totals, time_to_result, unreachable

#: the headroom (1 - lr_grid / calibrated test loss) above which a task-seed counts for capture
HEADROOM_MIN = 0.03


class _TaskRef(Protocol):
    @property
    def seed(self) -> int: ...


class _JobRef(Protocol):
    @property
    def task(self) -> _TaskRef: ...
    @property
    def method(self) -> str: ...
    @property
    def seed(self) -> int: ...
    @property
    def group(self) -> str: ...


class RunRecord(Protocol):
    """What the report reads of a run (a :class:`~rlhpo.evaluation.worker.JobResult`)."""

    @property
    def job(self) -> _JobRef: ...
    @property
    def result(self) -> RunResult: ...
    @property
    def metric_name(self) -> str: ...
    @property
    def wall_s(self) -> float: ...


def safe_name(name: str) -> str:
    """``name`` as a file or folder name (runs of other characters become ``_``)."""
    return re.sub(r"[^\w.-]+", "_", name)


def _starts_of(r: RunRecord, starts: Sequence[str]) -> list[str]:
    start = getattr(r.job.task, "start", "random")
    return list(starts) if start == "any" else [start]


def _time_to_result(res: RunResult, calibrated: Optional[RunResult]) -> dict[str, float]:
    """:mod:`~rlhpo.evaluation.ttr`'s columns of ``res``: the target is ``calibrated``'s final
    validation loss, the speedups relative to its steps, examples and seconds at the end (NaN
    without a calibrated run, or when it diverged)."""
    if calibrated is None or calibrated.diverged or not math.isfinite(calibrated.final_val_loss):
        return unreachable()
    return time_to_result(res.history, calibrated.final_val_loss, run_totals(calibrated.history))


def _run_row(
    r: RunRecord, start: str, controllers: dict[tuple, RunResult], calibrated: Optional[dict[tuple, RunResult]] = None
) -> dict[str, Any]:
    """One run's row of runs.csv (under one start regime)."""
    res, j = r.result, r.job
    hist, info = res.history, res.info
    row: dict[str, Any] = dict(
        task=res.task,
        family=res.family,
        task_seed=j.task.seed,
        start=start,
        method=j.method,
        group=j.group,
        seed=j.seed,
        optimizer=info.get("optimizer", ""),
        test_loss=res.test_loss,
        test_metric=res.test_metric,
        metric=r.metric_name,
        best_val_loss=res.best_val_loss,
        final_val_loss=res.final_val_loss,
        examples=res.examples,
        compute_examples=res.compute_examples,
        steps=res.steps,
        wall_s=round(r.wall_s, 2),
        diverged=res.diverged,
        start_lr=info.get("start_lr", float("nan")),
        start_batch_size=info.get("start_batch_size", float("nan")),
        start_weight_decay=info.get("start_weight_decay", float("nan")),
        tuned_lr=info.get("tuned_lr", float("nan")),
        lr_factor=info.get("lr_factor", float("nan")),
        probe_examples=info.get("probe_examples", 0),  # examples on branches or probes not kept (in the budget)
    )
    for key in ("lr", "batch_size", "weight_decay"):
        row[f"{key}_first"] = hist[0][key] if hist else float("nan")
        row[f"{key}_last"] = hist[-1][key] if hist else float("nan")
    ctrl = controllers.get((res.task, start, j.seed, j.group))
    row["to_controller_final_val"] = _to_target(res, ctrl) if j.method != "controller" else float("nan")
    row.update(_time_to_result(res, (calibrated or {}).get((res.task, start, j.seed, j.group))))
    return row


def _by_run(results: Sequence[RunRecord], method: str, starts: Sequence[str]) -> dict[tuple, RunResult]:
    """``method``'s runs by (task, start, seed, group)."""
    return {
        (r.result.task, s, r.job.seed, r.job.group): r.result
        for r in results
        if r.job.method == method
        for s in _starts_of(r, starts)
    }


def runs_frame(results: Sequence[RunRecord], starts: Sequence[str] = ("sensible", "random")) -> pd.DataFrame:
    """One row per run and start regime (a search method, which has no start, is listed under
    every regime), with the time to the calibrated run's final validation loss (:mod:`~rlhpo.evaluation.ttr`)
    and the comparison columns of :func:`add_comparisons`."""
    controllers, calibrated = _by_run(results, "controller", starts), _by_run(results, "calibrated", starts)
    df = pd.DataFrame([_run_row(r, s, controllers, calibrated) for r in results for s in _starts_of(r, starts)])
    if df.empty:
        return df
    order = {m: i for i, m in enumerate(METHODS)}
    srt = {s: i for i, s in enumerate(STARTS)}
    df = df.sort_values(
        ["start", "family", "task", "group", "seed", "method"],
        key=lambda c: c.map(order) if c.name == "method" else (c.map(srt) if c.name == "start" else c),
    ).reset_index(drop=True)
    return add_comparisons(df)


def add_comparisons(df: pd.DataFrame) -> pd.DataFrame:
    """Add the comparison columns, per task, run seed, start and group:

    - ``norm_test_loss``: test loss / constant's;
    - ``best_no_tuning``: the no-tuning baseline (``NO_TUNING``) with the lowest final VALIDATION
      loss (diverged: worst), and ``ratio_vs_best_no_tuning``: test loss / that baseline's;
    - ``start_lr_log10_vs_optuna``: log10(start lr / the lr Optuna found on the task), how far
      the start is from the searched optimum;
    - ``headroom``: 1 - lr_grid's test loss / calibrated's (what the best of the 7 lrs gains over
      the calibrated default), and ``capture``: (calibrated - test loss) / (calibrated - lr_grid),
      the share of that gain a run gets, where the headroom exceeds :data:`HEADROOM_MIN` (NaN
      elsewhere, and both NaN without an ``lr_grid`` and a ``calibrated`` run).
    """
    df = df.copy()
    keys = ["task", "seed", "start", "group"]
    const = df[df.method == "constant"].set_index(keys).test_loss
    idx = pd.MultiIndex.from_frame(df[keys])
    df["norm_test_loss"] = _ratio(df.test_loss, const.reindex(idx).to_numpy())
    nt = df[df.method.isin(NO_TUNING)].copy()
    nt["_val"] = np.where(nt.diverged.astype(bool), np.inf, nt.final_val_loss.astype(float))
    nt["_val"] = nt["_val"].fillna(np.inf)
    nt["_rank"] = nt.method.map({m: i for i, m in enumerate(NO_TUNING)})
    best = nt.sort_values(keys + ["_val", "_rank"]).groupby(keys, sort=False).first()
    df["best_no_tuning"] = best.method.reindex(idx).to_numpy()
    df["ratio_vs_best_no_tuning"] = _ratio(df.test_loss, best.test_loss.reindex(idx).to_numpy())
    # Optuna's lr on the task (its first searched seed): the start's distance is a property of the task
    opt = df[(df.method == "optuna") & (df.group == "main")].sort_values("seed").groupby("task").tuned_lr.first()
    with np.errstate(invalid="ignore", divide="ignore"):
        df["start_lr_log10_vs_optuna"] = np.log10(df.start_lr.astype(float).to_numpy() / opt.reindex(df.task).to_numpy())
    # a search method has no start of its own
    df.loc[df.method.isin(START_FREE_METHODS), "start_lr_log10_vs_optuna"] = np.nan
    cal = df[df.method == "calibrated"].set_index(keys).test_loss.reindex(idx).to_numpy(dtype=float)
    grid = df[df.method == "lr_grid"].set_index(keys).test_loss.reindex(idx).to_numpy(dtype=float)
    df["headroom"] = 1.0 - _ratio(grid, cal)
    with np.errstate(invalid="ignore", divide="ignore"):
        capture = (cal - df.test_loss.to_numpy(dtype=float)) / (cal - grid)
    df["capture"] = np.where(df.headroom.to_numpy() > HEADROOM_MIN, capture, np.nan)
    return df


def histories_frame(results: Sequence[RunRecord]) -> pd.DataFrame:
    """Every run's per-interval records, long format."""
    rows = [
        dict(
            task=r.result.task, start=getattr(r.job.task, "start", "random"), method=r.job.method,
            group=r.job.group, seed=r.job.seed, **h,
        )
        for r in results
        for h in r.result.history
    ]
    return pd.DataFrame(rows)
