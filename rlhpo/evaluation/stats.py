"""The evaluation's statistics over a runs table (:func:`~rlhpo.evaluation.frames.runs_frame`):
loss ratios, time-to-target, bootstrap intervals over tasks, medians and win rates
(:func:`compare`), time to the calibrated run's result (:func:`time_to_result_stats`), and
performance profiles."""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import pandas as pd

from rlhpo.evaluation.config import METHODS, NO_TUNING
from rlhpo.evaluation.runner import RunResult


def _to_target(baseline: Optional[RunResult], controller: Optional[RunResult]) -> float:
    """Examples ``baseline`` needs to reach the controller's final validation loss, divided by the
    controller's examples (the budget): inf if it never does, NaN if there is nothing to compare."""
    if baseline is None or controller is None or controller.diverged or controller.examples <= 0:
        return float("nan")
    if not math.isfinite(controller.final_val_loss):
        return float("nan")
    needed = baseline.examples_to_reach(controller.final_val_loss)
    return float("inf") if needed is None else needed / controller.examples


def _ratio(a: Any, b: Any) -> Any:
    """a / b for positive losses; NaN where either is not positive or both are inf."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = a / b
    return np.where((a > 0) & (b > 0) & ~(np.isinf(a) & np.isinf(b)), r, np.nan)


#: resamples of the bootstrap over tasks, and its seed (the tables are reproducible)
N_BOOT, BOOT_SEED = 2000, 0


def _bootstrap(per_task: np.ndarray, stat: Any) -> tuple[float, float, float]:
    """``stat`` of the per-task values and its 95% bootstrap interval, resampling tasks."""
    v = np.asarray(per_task, dtype=float)
    v = v[~np.isnan(v)]
    if not len(v):
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(BOOT_SEED)
    with np.errstate(invalid="ignore"):  # a diverged run's inf ratio: no inf - inf interpolation
        boots = stat(v[rng.integers(0, len(v), size=(N_BOOT, len(v)))], axis=1)
        lo, hi = np.quantile(boots, [0.025, 0.975], method="inverted_cdf")
        point = stat(v)
    return float(point), float(lo), float(hi)


def task_median(values: pd.Series) -> tuple[float, float, float]:
    """The median over tasks of each task's median over seeds of ``values`` (indexed by task and
    seed; NaN left out), with its 95% bootstrap interval over tasks."""
    v = values.dropna()
    if not len(v):
        return float("nan"), float("nan"), float("nan")
    return _bootstrap(v.groupby(level="task").median().to_numpy(), np.nanmedian)


def _pairs(df: pd.DataFrame, method: str, ref: str, col: str = "test_loss") -> tuple[pd.Series, pd.Series]:
    """``method``'s and the reference's values per (task, seed), on the task-seeds both have;
    ref "best_no_tuning" is the per-task-seed best no-tuning baseline (chosen by validation);
    "oracle_no_tuning" the one with the lowest *test* loss (an oracle no user has: the long-run bar)."""
    a = df[df.method == method].set_index(["task", "seed"])
    if ref == "best_no_tuning":
        b = df[df.method.isin(NO_TUNING)]
        b = b[b.method == b.best_no_tuning].set_index(["task", "seed"])
    elif ref == "oracle_no_tuning":
        b = df[df.method.isin(NO_TUNING)].copy()
        b["_test"] = np.where(b.diverged.astype(bool), np.inf, b.test_loss.astype(float))
        b = b.sort_values("_test").groupby(["task", "seed"]).first()
    else:
        b = df[df.method == ref].set_index(["task", "seed"])
    both = a.index.intersection(b.index)
    return a.loc[both, col], b.loc[both, col]


def compare(df: pd.DataFrame, method: str, ref: str) -> dict[str, Any]:
    """``method`` against ``ref`` on one start regime's main runs: median test-loss ratio and
    win rate (each with a 95% bootstrap interval over tasks), metric win rate, the count."""
    a, b = _pairs(df, method, ref)
    ma, mb = _pairs(df, method, ref, "test_metric")
    if not len(a):
        return dict(n=0)
    ratio = pd.Series(_ratio(a, b), index=a.index)
    wins = pd.Series((a.to_numpy() < b.to_numpy()).astype(float), index=a.index)
    mwins = pd.Series((ma.to_numpy() > mb.to_numpy()).astype(float), index=ma.index)
    mean_task = lambda s: s.groupby(level="task").mean().to_numpy()  # noqa: E731
    return dict(
        n=len(a),
        n_wins=int(wins.sum()),
        ratio=task_median(ratio),
        win=_bootstrap(mean_task(wins), np.mean),
        metric_win=float(mean_task(mwins).mean()) if len(mwins) else float("nan"),
    )


def time_to_result_stats(d: pd.DataFrame, method: str) -> dict[str, Any]:
    """``method``'s time to the calibrated run's final validation loss on the task-seeds of ``d``
    that have a target: how many (``n``), how many reach it (``reached``), and the median over
    tasks of ``speedup_<unit>`` (never reached: 0) with 95% bootstrap intervals."""
    x = d[(d.method == method) & d.speedup_steps.notna()].set_index(["task", "seed"])
    out: dict[str, Any] = dict(n=len(x), reached=int(np.isfinite(x.steps_to_target.astype(float)).sum()) if len(x) else 0)
    for unit in ("steps", "examples", "seconds"):
        out[unit] = task_median(x[f"speedup_{unit}"].astype(float)) if len(x) else (math.nan,) * 3
    return out


def _main(df: pd.DataFrame, start: str) -> pd.DataFrame:
    return df[(df.group == "main") & (df.start == start)]


def _methods(d: pd.DataFrame) -> list[str]:
    return [m for m in METHODS if m in set(d.method)]


def _quantiles(v: pd.Series) -> list[float]:
    x = v.dropna().to_numpy(dtype=float)
    if not len(x):
        return [float("nan")] * 3
    x = np.sort(np.where(np.isinf(x), 1e300, x))
    return [float(q) if q < 1e250 else math.inf for q in np.quantile(x, [0.25, 0.5, 0.75], method="lower")]


def performance_profile(df: pd.DataFrame, start: str, taus: np.ndarray) -> dict[str, np.ndarray]:
    """AlgoPerf-style performance profiles: for each method, the fraction of task-seeds on which
    its test loss is within a factor ``tau`` of the best method's on that task-seed.

    Only task-seeds where every method ran and every loss is positive count; a diverged run is
    never within any factor."""
    d = _main(df, start)
    methods = [m for m in _methods(d) if m != "replay"]
    wide = d.pivot_table(index=["task", "seed"], columns="method", values="test_loss", aggfunc="first")[methods]
    wide = wide.dropna()
    wide = wide[(wide > 0).all(axis=1)]
    if wide.empty:
        return {}
    best = wide.replace(np.inf, np.nan).min(axis=1)
    ratio = wide.div(best, axis=0).to_numpy()
    return {m: (ratio[:, i][:, None] <= taus[None, :]).mean(axis=0) for i, m in enumerate(methods)}
