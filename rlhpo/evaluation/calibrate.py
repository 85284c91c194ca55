"""Calibrate the no-tuning defaults once, on the META-TRAINING families only:
``python -m rlhpo.evaluation.calibrate`` writes ``conf/evaluate/calibrated.yaml``.

- ``calibrated``: for each optimizer kind (sgd, adam, adamw), the one (lr, weight decay) of warm-up
  + cosine (:class:`~rlhpo.evaluation.baselines.Calibrated`) that does best across the
  meta-training tasks, in the spirit of AlgoPerf's calibrated NAdamW baseline: every task is
  trained with that kind from its usual batch size, every grid point is scored by its final
  VALIDATION loss divided by the best grid point's on the same task, and the grid point with the
  lowest median ratio wins (diverged runs count as infinitely bad).
- ``hypergradient_beta``: the hypergradient learning rate chosen the same way, from the sensible
  start of each task's own optimizer.

The held-out families are never trained here, so ``python -m rlhpo.evaluate`` uses defaults chosen
without seeing them. Run once; the output is committed.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from rlhpo.tasks import META_TRAIN_FAMILIES, Task, make_family

#: the grids searched (lr x weight decay per optimizer kind; hypergradient beta)
LR_GRID: dict[str, tuple[float, ...]] = {
    "adam": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
    "adamw": (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2),
    "sgd": (3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0),
}
WD_GRID: dict[str, tuple[float, ...]] = {"adam": (0.0, 1e-4), "adamw": (1e-2, 1e-1), "sgd": (0.0, 5e-4)}
BETA_GRID: tuple[float, ...] = (0.002, 0.005, 0.01, 0.02, 0.05)

OUT = Path(__file__).resolve().parents[2] / "conf" / "evaluate" / "calibrated.yaml"


def _score(val_losses: dict[Any, list[float]]) -> dict[Any, float]:
    """Median over tasks of each grid point's final validation loss / the task's best (lower is
    better); tasks whose best loss is not positive are left out of the ratio."""
    points = list(val_losses)
    table = np.array([val_losses[p] for p in points], dtype=float)  # points x tasks
    table[~np.isfinite(table)] = np.inf
    best = table.min(axis=0)
    keep = np.isfinite(best) & (best > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = table[:, keep] / best[keep]
    return {p: float(np.median(r)) for p, r in zip(points, ratios)}


def _run(args: tuple) -> float:
    import torch

    from rlhpo.evaluation.baselines import Calibrated, Hypergradient
    from rlhpo.evaluation.runner import run_task

    torch.set_num_threads(1)
    family, task_seed, kind, method, value, seed, n_intervals, budget_scale = args
    task: Task = make_family(family, budget_scale).sample(task_seed)
    if kind is not None:
        task = replace(task, optimizer=kind)
    task = task.with_start("sensible")
    if method == "calibrated":
        lr, wd = value
        schedule: Any = Calibrated({task.optimizer: {"lr": lr, "weight_decay": wd}})
    else:
        schedule = Hypergradient(value)
    r = run_task(task, schedule, seed=seed, n_intervals=n_intervals, test_split=False)
    return float("inf") if r.diverged else float(r.final_val_loss)


def calibrate(
    families: Sequence[str] = META_TRAIN_FAMILIES,
    n_tasks: int = 3,
    seeds: int = 1,
    n_intervals: int = 20,
    budget_scale: float = 1.0,
    n_jobs: int = 2,
) -> dict:
    """Run the grids on the meta-training tasks (task seeds 0 .. n_tasks-1); return the config."""
    from joblib import Parallel, delayed

    tasks = [(f, t, s) for f in families for t in range(n_tasks) for s in range(seeds)]
    jobs: list[tuple] = []
    for kind, lrs in LR_GRID.items():
        for lr in lrs:
            for wd in WD_GRID[kind]:
                jobs += [(f, t, kind, "calibrated", (lr, wd), s, n_intervals, budget_scale) for f, t, s in tasks]
    jobs += [(f, t, None, "hypergradient", b, s, n_intervals, budget_scale) for b in BETA_GRID for f, t, s in tasks]
    losses = Parallel(n_jobs=n_jobs, backend="loky")(delayed(_run)(j) for j in jobs)
    by_point: dict[Any, list[float]] = {}
    for j, loss in zip(jobs, losses):
        by_point.setdefault((j[2], j[3], j[4]), []).append(loss)
    out: dict = {"calibrated": {}, "scores": {}}
    for kind in LR_GRID:
        points = {p: v for p, v in by_point.items() if p[0] == kind and p[1] == "calibrated"}
        scores = _score(points)
        best = min(scores, key=lambda p: (scores[p], p[2]))
        out["calibrated"][kind] = {"lr": best[2][0], "weight_decay": best[2][1]}
        out["scores"][kind] = {f"lr={p[2][0]:g},wd={p[2][1]:g}": round(v, 4) for p, v in scores.items()}
    points = {p: v for p, v in by_point.items() if p[1] == "hypergradient"}
    scores = _score(points)
    best = min(scores, key=lambda p: (scores[p], p[2]))
    out["hypergradient_beta"] = best[2]
    out["scores"]["hypergradient"] = {f"beta={p[2]:g}": round(v, 4) for p, v in scores.items()}
    out["tasks"] = len(tasks)
    return out


def write_yaml(result: dict, path: Path, command: str) -> None:
    lines = [
        "# @package _global_",
        f"# Generated by `{command}` on the META-TRAINING families only",
        f"# ({result['tasks']} task-seeds; never on held-out tasks). Do not edit by hand: rerun it.",
        "# calibrated: warm-up + cosine at one (lr, weight decay) per optimizer kind (the calibrated baseline)",
        "# hypergradient_beta: the hypergradient learning rate, chosen the same way",
        "# score = median over tasks of final validation loss / the task's best grid point (lower is better)",
        "calibrated:",
    ]
    for kind, d in result["calibrated"].items():
        lines.append(f"  {kind}: {{lr: {d['lr']!r}, weight_decay: {d['weight_decay']!r}}}")
    lines.append(f"hypergradient_beta: {result['hypergradient_beta']!r}")
    for kind, scores in result["scores"].items():
        lines.append(f"# scores {kind}: " + ", ".join(f"{k}: {v}" for k, v in scores.items()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-tasks", type=int, default=3, help="task seeds per meta-training family")
    p.add_argument("--seeds", type=int, default=1, help="run seeds per task")
    p.add_argument("--budget-scale", type=float, default=1.0)
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)
    result = calibrate(n_tasks=a.n_tasks, seeds=a.seeds, budget_scale=a.budget_scale, n_jobs=a.n_jobs)
    command = "python -m rlhpo.evaluation.calibrate"
    if (a.n_tasks, a.seeds, a.budget_scale) != (3, 1, 1.0):
        command += f" --n-tasks {a.n_tasks} --seeds {a.seeds} --budget-scale {a.budget_scale}"
    write_yaml(result, a.out, command)
    print(a.out.read_text())


if __name__ == "__main__":
    main()
