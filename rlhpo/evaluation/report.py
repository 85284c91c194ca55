"""What ``python -m rlhpo.evaluate`` writes from its runs: the tables (runs.csv, histories.csv),
the markdown summary with its verdict, and the plots.

Every function reads runs as :class:`~rlhpo.evaluation.jobs.JobResult` objects (seen here through
the :class:`RunRecord` protocol, so that this module does not import the jobs that import it).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence

import numpy as np
import pandas as pd

from rlhpo.evaluation.config import METHODS, NO_TUNING, REPLAY_SEED_OFFSET, START_FREE_METHODS, STARTS
from rlhpo.evaluation.runner import RunResult


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
    """What the report reads of a run (a :class:`~rlhpo.evaluation.jobs.JobResult`)."""

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


# -- tables ----------------------------------------------------------------------------------


def _to_target(baseline: Optional[RunResult], controller: Optional[RunResult]) -> float:
    """Examples ``baseline`` needs to reach the controller's final validation loss, divided by the
    controller's examples (the budget): inf if it never does, NaN if there is nothing to compare."""
    if baseline is None or controller is None or controller.diverged or controller.examples <= 0:
        return float("nan")
    if not math.isfinite(controller.final_val_loss):
        return float("nan")
    needed = baseline.examples_to_reach(controller.final_val_loss)
    return float("inf") if needed is None else needed / controller.examples


def _starts_of(r: RunRecord, starts: Sequence[str]) -> list[str]:
    start = getattr(r.job.task, "start", "random")
    return list(starts) if start == "any" else [start]


def _run_row(r: RunRecord, start: str, controllers: dict[tuple, RunResult]) -> dict[str, Any]:
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
    )
    for key in ("lr", "batch_size", "weight_decay"):
        row[f"{key}_first"] = hist[0][key] if hist else float("nan")
        row[f"{key}_last"] = hist[-1][key] if hist else float("nan")
    ctrl = controllers.get((res.task, start, j.seed, j.group))
    row["to_controller_final_val"] = _to_target(res, ctrl) if j.method != "controller" else float("nan")
    return row


def runs_frame(results: Sequence[RunRecord], starts: Sequence[str] = ("sensible", "random")) -> pd.DataFrame:
    """One row per run and start regime (a search method, which has no start, is listed under
    every regime), with the comparison columns of :func:`add_comparisons`."""
    controllers = {
        (r.result.task, s, r.job.seed, r.job.group): r.result
        for r in results
        if r.job.method == "controller"
        for s in _starts_of(r, starts)
    }
    df = pd.DataFrame([_run_row(r, s, controllers) for r in results for s in _starts_of(r, starts)])
    if df.empty:
        return df
    order = {m: i for i, m in enumerate(METHODS)}
    srt = {s: i for i, s in enumerate(STARTS)}
    df = df.sort_values(
        ["start", "family", "task", "group", "seed", "method"],
        key=lambda c: c.map(order) if c.name == "method" else (c.map(srt) if c.name == "start" else c),
    ).reset_index(drop=True)
    return add_comparisons(df)


def _ratio(a: Any, b: Any) -> Any:
    """a / b for positive losses; NaN where either is not positive or both are inf."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = a / b
    return np.where((a > 0) & (b > 0) & ~(np.isinf(a) & np.isinf(b)), r, np.nan)


def add_comparisons(df: pd.DataFrame) -> pd.DataFrame:
    """Add the comparison columns, per task, run seed, start and group:

    - ``norm_test_loss``: test loss / constant's;
    - ``best_no_tuning``: the no-tuning baseline (``NO_TUNING``) with the lowest final VALIDATION
      loss (diverged: worst), and ``ratio_vs_best_no_tuning``: test loss / that baseline's;
    - ``start_lr_log10_vs_optuna``: log10(start lr / the lr Optuna found on the task), how far
      the start is from the searched optimum.
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


# -- statistics ------------------------------------------------------------------------------

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


def _pairs(df: pd.DataFrame, method: str, ref: str, col: str = "test_loss") -> tuple[pd.Series, pd.Series]:
    """``method``'s and the reference's values per (task, seed), on the task-seeds both have;
    ref "best_no_tuning" is the per-task-seed best no-tuning baseline (chosen by validation)."""
    a = df[df.method == method].set_index(["task", "seed"])
    if ref == "best_no_tuning":
        b = df[df.method.isin(NO_TUNING)]
        b = b[b.method == b.best_no_tuning].set_index(["task", "seed"])
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
    by_task = lambda s: s.groupby(level="task").median().to_numpy()  # noqa: E731
    mean_task = lambda s: s.groupby(level="task").mean().to_numpy()  # noqa: E731
    return dict(
        n=len(a),
        n_wins=int(wins.sum()),
        ratio=_bootstrap(by_task(ratio), np.nanmedian),
        win=_bootstrap(mean_task(wins), np.mean),
        metric_win=float(mean_task(mwins).mean()) if len(mwins) else float("nan"),
    )


def _fmt(x: Optional[float], digits: int = 3, inf: str = "never") -> str:
    """A number with ``digits`` decimals; inf is ``inf`` ("never": a target never reached; "inf":
    a ratio to a diverged run), NaN "n/a"."""
    if x is None or math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return inf if x > 0 else "-inf"
    return f"{x:.{digits}f}"


def _ci(t: tuple[float, float, float], digits: int = 2) -> str:
    return f"{_fmt(t[0], digits, 'inf')} [{_fmt(t[1], digits, 'inf')}, {_fmt(t[2], digits, 'inf')}]"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


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


def method_table(df: pd.DataFrame, start: str) -> str:
    """Every method against the best no-tuning baseline per task-seed, from ``start``."""
    d = _main(df, start)
    rows = []
    for m in _methods(d):
        x = d[d.method == m]
        c = compare(d, m, "best_no_tuning")
        rows.append([
            m,
            str(len(x)),
            _ci(c["ratio"]) if c["n"] else "n/a",
            _ci(c["win"]) if c["n"] else "n/a",
            _fmt(c.get("metric_win", float("nan")), 2),
            _fmt(float(x.wall_s.median()), 1),
            f"{int(x.steps.median()):,}",
            f"{int(x.compute_examples.sum()):,}",
            str(int(x.diverged.sum())),
        ])
    header = [
        "method", "runs", "test loss / best no-tuning: median [95% CI]", "win rate vs best no-tuning [95% CI]",
        "metric win rate", "median wall s", "median steps", "compute (examples)", "diverged",
    ]
    return _markdown(header, rows)


def controller_table(df: pd.DataFrame, start: str) -> str:
    """The controller against each baseline, and the time-to-target distribution."""
    d = _main(df, start)
    if "controller" not in set(d.method):
        return "The controller was not evaluated."
    rows = []
    refs = [m for m in _methods(d) if m not in ("controller", "replay")] + ["best_no_tuning"]
    for ref in refs:
        c = compare(d, "controller", ref)
        if not c["n"]:
            continue
        if ref == "best_no_tuning":
            b = d[d.method.isin(NO_TUNING) & (d.method == d.best_no_tuning)]
        else:
            b = d[d.method == ref]
        ttt = b.to_controller_final_val.dropna()
        reach = float(np.isfinite(ttt).mean()) if len(ttt) else float("nan")
        q = _quantiles(ttt)
        rows.append([
            "best no-tuning (by val)" if ref == "best_no_tuning" else ref,
            f"{c['n_wins']}/{c['n']}",
            _ci(c["win"]),
            _ci(c["ratio"]),
            _fmt(reach, 2),
            " / ".join(_fmt(v, 2) for v in q),
        ])
    header = [
        "baseline", "controller wins", "controller win rate [95% CI]", "controller / baseline test loss: median [95% CI]",
        "baseline reaches controller's final val loss", "examples it needs / budget: 25% / 50% / 75%",
    ]
    return _markdown(header, rows)


def family_table(df: pd.DataFrame, start: str) -> str:
    """Per family: the controller against the best no-tuning baseline, and how far the start is
    from Optuna's optimum."""
    d = _main(df, start)
    rows = []
    for fam in sorted(set(d.family)):
        f = d[d.family == fam]
        c = compare(f, "controller", "best_no_tuning") if "controller" in set(f.method) else dict(n=0)
        dist = f[f.method == "constant"].start_lr_log10_vs_optuna.dropna()
        best = f[f.method.isin(NO_TUNING) & (f.method == f.best_no_tuning)].method.value_counts()
        rows.append([
            fam,
            str(f.task.nunique()),
            _fmt(float(c["ratio"][0]), 3, "inf") if c["n"] else "n/a",
            f"{c['n_wins']}/{c['n']}" if c["n"] else "n/a",
            _fmt(float(dist.median()) if len(dist) else float("nan"), 2),
            ", ".join(f"{m} {k}" for m, k in best.items()),
        ])
    header = [
        "family", "tasks", "controller / best no-tuning (median)", "controller wins",
        "median log10(start lr / Optuna lr)", "best no-tuning picked (runs)",
    ]
    return _markdown(header, rows)


def losses_list(df: pd.DataFrame) -> list[str]:
    """Where the controller loses, one plain line each: families and baselines, per start."""
    out: list[str] = []
    for start in [s for s in STARTS if s in set(df.start)]:
        d = _main(df, start)
        if "controller" not in set(d.method):
            continue
        for fam in sorted(set(d.family)):
            c = compare(d[d.family == fam], "controller", "best_no_tuning")
            if c["n"] and (c["ratio"][0] > 1 or c["n_wins"] * 2 < c["n"]):
                out.append(
                    f"- {start} start, {fam}: test loss {_fmt(c['ratio'][0], 2, 'inf')}x the best no-tuning baseline's "
                    f"(median); the controller wins {c['n_wins']} of {c['n']} task-seeds."
                )
        for ref in [m for m in _methods(d) if m not in ("controller", "replay")]:
            c = compare(d, "controller", ref)
            if c["n"] and c["n_wins"] * 2 < c["n"]:
                out.append(
                    f"- {start} start, against {ref}: the controller wins {c['n_wins']} of {c['n']} task-seeds "
                    f"(median test-loss ratio {_fmt(c['ratio'][0], 2, 'inf')})."
                )
        ctrl, const = d[d.method == "controller"], d[d.method == "constant"]
        if len(ctrl) and len(const) and const.wall_s.median() > 0:
            r = ctrl.wall_s.median() / const.wall_s.median()
            if r > 1.1:
                out.append(f"- {start} start, wall-clock: the controller's median run takes {r:.1f}x constant's at the same example budget.")
        n_div = int(ctrl.diverged.sum())
        if n_div:
            out.append(f"- {start} start: {n_div} controller run(s) diverged.")
    return out or ["- nowhere in these runs."]


def _replay_line(df: pd.DataFrame, start: str) -> str:
    rep = df[(df.group == "replay") & (df.start == start)]
    ctrl = rep[rep.method == "controller"].set_index(["task", "seed"]).test_loss
    replay = rep[rep.method == "replay"].set_index(["task", "seed"]).test_loss
    both = ctrl.index.intersection(replay.index)
    if not len(both):
        return ""
    ratio = pd.Series(_ratio(replay[both], ctrl[both]))
    wins = int((ctrl[both] < replay[both]).sum())
    return (
        f"Schedule-replay ablation ({start} start): the controller's per-interval hyperparameters replayed open-loop on "
        f"fresh seeds (seed + {REPLAY_SEED_OFFSET}): median test-loss ratio replay / closed-loop controller "
        f"{_fmt(float(ratio.median()) if ratio.notna().any() else float('nan'), 3, 'inf')}; the closed loop is better on {wins} of "
        f"{len(both)} task-seeds."
    )


EXPLANATION = (
    "Scoring: every method is scored on its FINAL weights (no method keeps its best-validation "
    "weights), test split read once after training. \"Best no-tuning\" = per task-seed, whichever of "
    + ", ".join(NO_TUNING)
    + " has the lowest final VALIDATION loss (never chosen by test). Ratios are test loss / the reference's "
    "(below 1: better); medians are over tasks of each task's median over seeds; win rate = fraction of "
    "task-seeds with a lower test loss; metric win rate = the same on the task's metric (accuracy, R², "
    "higher is better). 95% intervals: bootstrap over tasks (2000 resamples, seed 0). Optuna and PBT "
    "search their own values and ignore the start: one search per task-seed, listed under both starts; "
    "their wall time and compute include every trial. \"examples it needs / budget\": examples the baseline "
    "needed to first reach the controller's final validation loss, over the budget (quantiles over task-seeds; "
    "never = not within the budget)."
)


def readme_tables(df: pd.DataFrame) -> str:
    """The README's result tables, generated from runs.csv alone (a test checks the README holds
    exactly this text): sensible start first, then random start, per family, where the
    controller loses."""
    text: list[str] = []
    n_tasks = df[df.group == "main"].task.nunique()
    n_seeds = df[df.group == "main"].seed.nunique()
    fams = ", ".join(sorted(set(df.family)))
    for i, start in enumerate([s for s in STARTS if s in set(df.start)]):
        title = "Sensible start (each optimizer's usual default)" if start == "sensible" else "Random start (the families' sampled start)"
        text += [
            f"#### {'Headline: ' if i == 0 else ''}{title}: {n_tasks} tasks ({fams}) x {n_seeds} seeds",
            "",
            method_table(df, start),
            "",
            "The controller against each baseline:",
            "",
            controller_table(df, start),
            "",
            "Per family:",
            "",
            family_table(df, start),
            "",
        ]
        line = _replay_line(df, start)
        if line:
            text += [line, ""]
    text += ["#### Where the controller loses", ""] + losses_list(df)
    return "\n".join(text) + "\n"


def summarize(df: pd.DataFrame, skipped: Optional[dict[str, str]] = None) -> str:
    """The markdown summary: the README's tables (:func:`readme_tables`) with their explanation."""
    if df.empty:
        return "# Evaluation summary\n\nNo runs.\n"
    text = ["# Evaluation summary", "", EXPLANATION, "", readme_tables(df)]
    if skipped:
        text += ["", "Skipped methods:", ""] + [f"- {m}: {why}" for m, why in skipped.items()]
    return "\n".join(text) + "\n"


# -- plots -----------------------------------------------------------------------------------


def plot(results: Sequence[RunRecord], plot_dir: Path) -> None:
    """Validation loss vs examples of every method per task (first seed), and the controller's
    hyperparameter trajectories per task (all seeds)."""
    import matplotlib

    matplotlib.use("Agg")

    plot_dir.mkdir(parents=True, exist_ok=True)
    main = [r for r in results if r.job.group == "main" and getattr(r.job.task, "start", "random") in ("sensible", "any")]
    if not any(getattr(r.job.task, "start", "") == "sensible" for r in main):  # no sensible start: the random one
        main = [r for r in results if r.job.group == "main" and getattr(r.job.task, "start", "random") in ("random", "any")]
    order = {m: i for i, m in enumerate(METHODS)}
    for task in sorted({r.result.task for r in main}):
        runs = sorted((r for r in main if r.result.task == task), key=lambda r: (order[r.job.method], r.job.seed))
        _plot_val_loss(task, runs, plot_dir)
        ctrl = [r for r in runs if r.job.method == "controller"]
        if ctrl:
            _plot_controller_hparams(task, ctrl, plot_dir)


def _plot_val_loss(task: str, runs: list[RunRecord], plot_dir: Path) -> None:
    """Validation loss vs examples of every method on ``task``, its first seed."""
    import matplotlib.pyplot as plt

    first = min(r.job.seed for r in runs)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    positive = True
    for r in runs:
        if r.job.seed != first:
            continue
        pts = [(h["examples"], h["val_loss"]) for h in r.result.history if math.isfinite(h["val_loss"])]
        if pts:
            positive &= all(v > 0 for _, v in pts)
            ax.plot(*zip(*pts), marker=".", label=r.job.method + (" (diverged)" if r.result.diverged else ""))
    if positive:
        ax.set_yscale("log")
    ax.set(xlabel="training examples", ylabel="validation loss", title=f"{task} (seed {first})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plot_dir / f"{safe_name(task)}_val_loss.png", dpi=110)
    plt.close(fig)


def _plot_controller_hparams(task: str, ctrl: list[RunRecord], plot_dir: Path) -> None:
    """The controller's lr / batch size / weight decay on ``task``, every seed."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, key in zip(axes, ("lr", "batch_size", "weight_decay")):
        for r in ctrl:
            h = r.result.history  # the value used during each interval, which ends at "examples"
            xs = [0] + [x["examples"] for x in h]
            ax.step(xs, [x[key] for x in h] + [h[-1][key]], where="post", label=f"seed {r.job.seed}")
        ax.set(xlabel="training examples", ylabel=key, yscale="log")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"controller on {task}")
    fig.tight_layout()
    fig.savefig(plot_dir / f"{safe_name(task)}_controller_hparams.png", dpi=110)
    plt.close(fig)


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


def plot_profiles(df: pd.DataFrame, plot_dir: Path) -> list[Path]:
    """One performance-profile plot per start regime: ``performance_profile_<start>.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    taus = np.exp(np.linspace(0.0, np.log(4.0), 200))
    paths = []
    for start in [s for s in STARTS if s in set(df.start)]:
        prof = performance_profile(df, start, taus)
        if not prof:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for m, rho in prof.items():
            ax.step(taus, rho, where="post", label=m, lw=2.2 if m == "controller" else 1.2, ls="-" if m in NO_TUNING or m == "controller" else "--")
        ax.set(xscale="log", xlabel="tau (test loss within tau x the best method's)", ylabel="fraction of task-seeds",
               title=f"Performance profiles, {start} start", ylim=(0, 1.02))
        ax.set_xticks([1, 1.5, 2, 3, 4], labels=["1", "1.5", "2", "3", "4"])
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        path = plot_dir / f"performance_profile_{start}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


# -- the README ------------------------------------------------------------------------------

#: the README's generated block lies between these lines
README_BEGIN = "<!-- evaluate tables: generated by python -m rlhpo.evaluation.report docs/results/evaluate_runs.csv --readme README.md -->"
README_END = "<!-- end of evaluate tables -->"


def readme_block(df: pd.DataFrame) -> str:
    """The README's generated block, markers included."""
    return f"{README_BEGIN}\n\n{readme_tables(df)}\n{README_END}"


def update_readme(csv: Path, readme: Path) -> None:
    """Replace the README's generated block with the tables from ``csv``."""
    text = readme.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"{readme} has no generated block ({README_BEGIN!r} ... {README_END!r})")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(head + readme_block(pd.read_csv(csv)) + tail)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``python -m rlhpo.evaluation.report runs.csv [--readme README.md] [--plots DIR]``: print the
    tables of a finished evaluation, write them into the README, redraw the profile plots."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("csv", type=Path)
    p.add_argument("--readme", type=Path, default=None)
    p.add_argument("--plots", type=Path, default=None, help="write performance_profile_<start>.png here")
    a = p.parse_args(argv)
    df = pd.read_csv(a.csv)
    if a.readme is not None:
        update_readme(a.csv, a.readme)
    if a.plots is not None:
        plot_profiles(df, a.plots)
    print(readme_tables(df))


if __name__ == "__main__":
    main()
