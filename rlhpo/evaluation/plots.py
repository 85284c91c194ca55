"""The evaluation's plots: validation loss and the controller's hyperparameters per task
(:func:`plot`), performance profiles per start regime (:func:`plot_profiles`), and the anytime
view, validation loss against optimizer steps per task (:func:`plot_anytime`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from rlhpo.evaluation.config import METHODS, NO_TUNING, STARTS
from rlhpo.evaluation.frames import RunRecord, safe_name
from rlhpo.evaluation.stats import performance_profile


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
            ax.step(taus, rho, where="post", label=m, lw=2.2 if m == "controller" else 1.2,
                    ls="-" if m in NO_TUNING or m == "controller" else "--")
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


#: the methods of the anytime view, in this order (those present are drawn)
ANYTIME_METHODS: tuple[str, ...] = ("calibrated", "lr_grid", "prodigy", "schedulefree", "seesaw", "controller", "controller@rule",
                                    "controller@v3")


def plot_anytime(hist: pd.DataFrame, plot_dir: Path, methods: Sequence[str] = ANYTIME_METHODS) -> list[Path]:
    """The anytime view: per task, the validation loss against optimizer steps of each of
    ``methods`` (every seed of the main runs, one colour per method; ``lr_grid`` is its picked
    run), from a histories table (histories.csv: :func:`~rlhpo.evaluation.frames.histories_frame`),
    from the sensible start if there is one. Writes ``<task>_anytime.png``; returns the paths.

    :raises ValueError: when the table has no ``steps`` (histories written before evaluation v3)
    """
    missing = [c for c in ("task", "start", "method", "group", "seed", "steps", "val_loss") if c not in hist.columns]
    if missing:
        raise ValueError(f"the histories have no {missing} column(s): written before evaluation v3 recorded steps; rerun it")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = hist[(hist.group == "main") & hist.method.isin(methods)]
    starts = [s for s in STARTS if s in set(h.start)]
    h = h[h.start == starts[0]] if starts else h
    plot_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for task in sorted(set(h.task)):
        t = h[h.task == task]
        fig, ax = plt.subplots(figsize=(7, 4.5))
        positive = True
        for i, m in enumerate(m for m in methods if m in set(t.method)):
            for j, (seed, run) in enumerate(t[t.method == m].groupby("seed")):
                run = run[np.isfinite(run.val_loss.astype(float))].sort_values("steps")
                positive &= bool((run.val_loss > 0).all())
                ax.plot(run.steps, run.val_loss, marker=".", color=f"C{i}", alpha=0.85, lw=2.0 if m == "controller" else 1.2,
                        label=m if j == 0 else None)
        if positive:
            ax.set_yscale("log")
        seeds = t.seed.nunique()
        ax.set(xlabel="optimizer steps", ylabel="validation loss",
               title=f"{task}, {starts[0] + ' start, ' if starts else ''}{seeds} seed{'s' if seeds > 1 else ''}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = plot_dir / f"{safe_name(task)}_anytime.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
