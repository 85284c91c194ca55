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

from rlhpo.evaluation.config import METHODS, REPLAY_SEED_OFFSET
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


def _speedup(baseline: Optional[RunResult], controller: RunResult) -> float:
    """Examples ``baseline`` needs to reach the controller's final validation loss, divided by the
    controller's examples: inf if it never does, NaN if there is nothing to compare."""
    if baseline is None or controller.diverged or not math.isfinite(controller.final_val_loss) or controller.examples <= 0:
        return float("nan")
    needed = baseline.examples_to_reach(controller.final_val_loss)
    return float("inf") if needed is None else needed / controller.examples


def _run_row(r: RunRecord, index: dict[tuple, RunResult]) -> dict[str, Any]:
    """One run's row of runs.csv; ``index`` finds the constant and cosine runs to compare with."""
    res, j = r.result, r.job
    hist = res.history
    row: dict[str, Any] = dict(
        task=res.task,
        family=res.family,
        task_seed=j.task.seed,
        method=j.method,
        group=j.group,
        seed=j.seed,
        test_loss=res.test_loss,
        test_metric=res.test_metric,
        metric=r.metric_name,
        best_val_loss=res.best_val_loss,
        final_val_loss=res.final_val_loss,
        examples=res.examples,
        compute_examples=res.compute_examples,
        diverged=res.diverged,
    )
    for key in ("lr", "batch_size", "weight_decay"):
        row[f"{key}_start"] = hist[0][key] if hist else float("nan")
        row[f"{key}_end"] = hist[-1][key] if hist else float("nan")
    ref = index.get((res.task, "constant", j.seed, j.group))
    with np.errstate(invalid="ignore", divide="ignore"):
        row["norm_test_loss"] = float(np.float64(res.test_loss) / ref.test_loss) if ref is not None else float("nan")
    if j.method == "controller" and j.group == "main":
        row["speedup_vs_cosine"] = _speedup(index.get((res.task, "cosine", j.seed, "main")), res)
        row["speedup_vs_constant"] = _speedup(index.get((res.task, "constant", j.seed, "main")), res)
    else:
        row["speedup_vs_cosine"] = row["speedup_vs_constant"] = float("nan")
    row["wall_s"] = round(r.wall_s, 2)
    return row


def runs_frame(results: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per run, with the test loss normalised by constant's (same task and seed) and the
    controller's speedups over cosine and constant."""
    index = {(r.result.task, r.job.method, r.job.seed, r.job.group): r.result for r in results}
    df = pd.DataFrame([_run_row(r, index) for r in results])
    order = {m: i for i, m in enumerate(METHODS)}
    return df.sort_values(
        ["family", "task", "group", "seed", "method"], key=lambda c: c.map(order) if c.name == "method" else c
    ).reset_index(drop=True)


def histories_frame(results: Sequence[RunRecord]) -> pd.DataFrame:
    """Every run's per-interval records, long format."""
    rows = [
        dict(task=r.result.task, method=r.job.method, group=r.job.group, seed=r.job.seed, **h)
        for r in results
        for h in r.result.history
    ]
    return pd.DataFrame(rows)


# -- the summary -----------------------------------------------------------------------------


def _fmt(x: Optional[float], digits: int = 3) -> str:
    """A number with ``digits`` decimals; inf is "never" (a target never reached), NaN "n/a"."""
    if x is None or math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "never" if x > 0 else "-inf"
    return f"{x:.{digits}f}"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _win_rate(df: pd.DataFrame, method: str, baseline: str) -> float:
    """Fraction of task-seeds where ``method``'s test loss is below ``baseline``'s."""
    a = df[df.method == method].set_index(["task", "seed"]).test_loss
    b = df[df.method == baseline].set_index(["task", "seed"]).test_loss
    both = a.index.intersection(b.index)
    return float((a[both] < b[both]).mean()) if len(both) else float("nan")


def _median_iqr(values: pd.Series) -> tuple[float, float, float]:
    v = values.dropna().to_numpy(dtype=float)
    if not len(v):
        return float("nan"), float("nan"), float("nan")
    # diverged runs are inf: a huge stand-in keeps the interpolation clear of inf - inf = NaN
    big = 1e300
    q25, q50, q75 = (float(q) if abs(q) < 1e250 else math.copysign(math.inf, q) for q in np.percentile(np.clip(v, -big, big), [25, 50, 75]))
    return q50, q25, q75


_HEADER = [
    "method", "runs", "median norm. test loss", "IQR", "win rate vs constant", "win rate vs cosine",
    "median speedup vs cosine", "median speedup vs constant", "compute (examples)", "diverged",
]

_EXPLANATION = (
    "Normalised test loss = test loss / constant's test loss on the same task and seed (lower is better; "
    "IQR = 25th–75th percentile). Win rate = fraction of task-seeds with a lower test loss than the baseline. "
    "Speedup = examples the baseline needs to reach the controller's final validation loss / the controller's "
    "examples (\"never\": it does not get there). Compute counts every example trained, search trials included."
)


def _method_rows(main: pd.DataFrame) -> tuple[list[list[str]], dict[str, float]]:
    """The summary table's row per method, and each method's median normalised test loss."""
    rows, medians = [], {}
    for method in [m for m in METHODS if m in set(main.method)]:
        d = main[main.method == method]
        med, q25, q75 = _median_iqr(d.norm_test_loss)
        medians[method] = med
        speed = [
            _fmt(_median_iqr(d[col])[0], 2) if method == "controller" else "—"
            for col in ("speedup_vs_cosine", "speedup_vs_constant")
        ]
        rows.append([
            method,
            str(len(d)),
            _fmt(med),
            f"{_fmt(q25)}–{_fmt(q75)}",
            "—" if method == "constant" else _fmt(_win_rate(main, method, "constant"), 2),
            "—" if method == "cosine" else _fmt(_win_rate(main, method, "cosine"), 2),
            *speed,
            f"{int(d.compute_examples.sum()):,}",
            str(int(d.diverged.sum())),
        ])
    return rows, medians


def summarize(df: pd.DataFrame, skipped: Optional[dict[str, str]] = None) -> str:
    """The markdown summary: a table per method, the verdict sentence, the replay ablation."""
    main = df[df.group == "main"]
    rows, medians = _method_rows(main)
    n_tasks, n_seeds = main.task.nunique(), main.seed.nunique()
    text = [
        "# Evaluation summary",
        "",
        f"{n_tasks} task(s) x {n_seeds} seed(s), families: {', '.join(sorted(set(main.family)))}. " + _EXPLANATION,
        "",
        _markdown(_HEADER, rows),
        "",
        _verdict(medians),
    ]
    text += _family_section(main)
    text += _replay_section(df)
    if skipped:
        text += ["", "Skipped methods:", ""] + [f"- {m}: {why}" for m, why in skipped.items()]
    return "\n".join(text) + "\n"


def _family_section(main: pd.DataFrame) -> list[str]:
    """Median normalised test loss per family and method: where the controller wins and loses."""
    methods = [m for m in METHODS if m in set(main.method)]
    families = sorted(set(main.family))
    rows = [
        [fam] + [_fmt(_median_iqr(main[(main.family == fam) & (main.method == m)].norm_test_loss)[0]) for m in methods]
        for fam in families
    ]
    return ["", "## Per family (median normalised test loss)", "", _markdown(["family", *methods], rows)]


def _verdict(medians: dict[str, float]) -> str:
    """A plain sentence: does the controller lose to cosine or to constant on median?"""
    ctrl = medians.get("controller")
    if ctrl is None or math.isnan(ctrl):
        return "The controller was not evaluated, so there is no verdict on it."
    lost, held = [], []
    for base in ("cosine", "constant"):
        ref = medians.get(base)
        if ref is None or math.isnan(ref):
            continue
        (lost if ctrl > ref else held).append(f"{base} ({_fmt(ctrl)} vs {_fmt(ref)})")
    if not lost and not held:
        return "Neither cosine nor constant was evaluated, so the controller has no baseline to lose to."
    if lost:
        s = f"On median normalised test loss the controller LOSES to {' and to '.join(lost)}"
        return s + (f", and does not lose to {held[0]}." if held else ".")
    return f"On median normalised test loss the controller does not lose to {' or to '.join(held)}."


def _replay_section(df: pd.DataFrame) -> list[str]:
    rep = df[df.group == "replay"]
    ctrl = rep[rep.method == "controller"].set_index(["task", "seed"]).test_loss
    replay = rep[rep.method == "replay"].set_index(["task", "seed"]).test_loss
    both = ctrl.index.intersection(replay.index)
    if not len(both):
        return []
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (replay[both] / ctrl[both]).replace([np.inf, -np.inf], np.nan)
    wins = int((ctrl[both] < replay[both]).sum())
    return [
        "",
        "## Schedule-replay ablation",
        "",
        f"The controller's per-interval hyperparameters, replayed open-loop on fresh seeds (seed + {REPLAY_SEED_OFFSET}), "
        f"against the closed-loop controller on the same fresh seeds: median test-loss ratio replay / controller = "
        f"{_fmt(float(ratio.median()) if ratio.notna().any() else float('nan'))}; the closed-loop controller is better on "
        f"{wins} of {len(both)} task-seeds.",
    ]


# -- plots -----------------------------------------------------------------------------------


def plot(results: Sequence[RunRecord], plot_dir: Path) -> None:
    """Validation loss vs examples of every method per task (first seed), and the controller's
    hyperparameter trajectories per task (all seeds)."""
    import matplotlib

    matplotlib.use("Agg")

    plot_dir.mkdir(parents=True, exist_ok=True)
    main = [r for r in results if r.job.group == "main"]
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
