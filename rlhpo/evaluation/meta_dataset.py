"""Build the warm start's meta-dataset, on the META-TRAINING families only:
``python -m rlhpo.evaluation.meta_dataset`` appends to ``rlhpo/recommend/data/meta_dataset.jsonl``
(here, beside the searches it runs, so that :mod:`rlhpo.recommend` imports no evaluation).

For each of ``--n-per-family`` tasks (task seeds 0 .. n-1) of every family that
``rlhpo.tasks.resolve_families("meta_train")`` names when the script runs, it records:

- the task's meta-features (:mod:`rlhpo.recommend.meta_features`, probe included, with its cost);
- the best starting lr, batch size and weight decay found by Optuna's TPE
  (:func:`rlhpo.evaluation.search.optuna_search`, ``--trials`` trials) with warm-up + cosine
  (:class:`rlhpo.evaluation.baselines.Cosine`) as the one schedule searched;
- the validation loss the best values reach on a fresh run seed (the task seed; trials train on
  it + 10000, and it seeds TPE, so each task's random start-up trials differ), and that of
  warm-up + cosine from the task's sensible start (:meth:`rlhpo.tasks.Task.with_start`) on it.

Resumable: each finished task is appended as one JSON line; a rerun skips the (family, seed)
keys already there (so a rerun after new meta-training families land adds just their tasks).
Tasks run in parallel with joblib (``--n-jobs``). The recipe (the exact command, families,
counts, build time) is written beside the data as ``meta_dataset.recipe.json``. Held-out families
(dev, final, near) are refused.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

from rlhpo.recommend.models import DATA_DIR
from rlhpo.tasks import HELD_OUT_FAMILIES, resolve_families

OUT = DATA_DIR / "meta_dataset.jsonl"


def _finite(x: float) -> Optional[float]:
    return float(x) if math.isfinite(x) else None


def build_row(family: str, task_seed: int, trials: int, budget_scale: float, n_intervals: int) -> dict[str, Any]:
    """One task's row of the meta-dataset (run in a worker process)."""
    import torch

    from rlhpo.evaluation.baselines import Cosine
    from rlhpo.evaluation.runner import run_task
    from rlhpo.evaluation.search import optuna_search
    from rlhpo.recommend.meta_features import task_meta_features
    from rlhpo.tasks import make_family

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    task = make_family(family, budget_scale).sample(task_seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. the quadratic model's layer kind: recorded in the row
        feats = task_meta_features(task, probe=True)
    # the task seed seeds TPE (its random start-up trials differ per task) and the final run
    tuned = optuna_search(task, task_seed, trials, n_intervals, schedules={"cosine": Cosine})
    sensible = run_task(task.with_start("sensible"), Cosine(), task_seed, n_intervals, test_split=False)
    return dict(
        family=family, task_seed=task_seed, task=task.name, budget_examples=task.budget_examples,
        best_lr=tuned.info["tuned_lr"], best_batch_size=tuned.info["tuned_batch_size"],
        best_weight_decay=tuned.info["tuned_weight_decay"],
        best_val_loss=_finite(tuned.final_val_loss), sensible_cosine_val_loss=_finite(sensible.final_val_loss),
        search_examples=tuned.compute_examples, wall_s=round(time.perf_counter() - t0, 2),
        notes="; ".join(feats.notes), **feats.as_row(),
    )


def done_keys(path: Path) -> set[tuple[str, int]]:
    if not path.exists():
        return set()
    keys = set()
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            keys.add((row["family"], int(row["task_seed"])))
    return keys


def build(
    families: Sequence[str] = ("meta_train",), n_per_family: int = 30, trials: int = 12, budget_scale: float = 0.5,
    n_intervals: int = 4, n_jobs: int = 2, out: Path = OUT,
) -> int:
    """Append the missing rows to ``out``; return how many were added."""
    from joblib import Parallel, delayed

    names = resolve_families(list(families))
    held = sorted(set(names) & set(HELD_OUT_FAMILIES))
    if held:
        raise SystemExit(f"error: held-out families {held} must never build the meta-dataset; use meta_train families")
    done = done_keys(out)
    todo = [(f, s) for s in range(n_per_family) for f in names if (f, s) not in done]
    print(f"[rlhpo] meta-dataset: {len(done)} task(s) already in {out}, {len(todo)} to build ({names})", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    jobs = (delayed(build_row)(f, s, trials, budget_scale, n_intervals) for f, s in todo)
    added = 0
    with out.open("a") as fh:
        for row in Parallel(n_jobs=n_jobs, backend="loky", return_as="generator_unordered")(jobs):
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            added += 1
            if added % 10 == 0:
                print(f"[rlhpo] {added}/{len(todo)} tasks", flush=True)
    return added


def write_recipe(out: Path, command: str, settings: dict, seconds: float) -> None:
    """The sidecar ``<name>.recipe.json``: the command, settings, families and sizes."""
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    path = out.with_name(out.stem + ".recipe.json")
    old = json.loads(path.read_text()) if path.exists() else {}
    recipe = dict(
        command=command, settings=settings, rows=len(rows),
        families=sorted({r["family"] for r in rows}),
        cpu_seconds_rows=round(sum(r["wall_s"] for r in rows), 1),
        build_wall_seconds=round(old.get("build_wall_seconds", 0.0) + seconds, 1),
        note="META-TRAINING families only; resumable: rerun the command to add missing tasks",
    )
    path.write_text(json.dumps(recipe, indent=1) + "\n")


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", nargs="+", default=["meta_train"], help="meta-training families or the group")
    p.add_argument("--n-per-family", type=int, default=30, help="task seeds 0 .. n-1 per family")
    p.add_argument("--trials", type=int, default=12, help="Optuna trials per task")
    p.add_argument("--budget-scale", type=float, default=0.5)
    p.add_argument("--n-intervals", type=int, default=4, help="validations per run (only the history depends on it)")
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)
    settings = dict(families=a.families, n_per_family=a.n_per_family, trials=a.trials, budget_scale=a.budget_scale,
                    n_intervals=a.n_intervals, schedule="cosine (5% warm-up)", search="optuna TPE")
    t0 = time.perf_counter()
    build(a.families, a.n_per_family, a.trials, a.budget_scale, a.n_intervals, a.n_jobs, a.out)
    command = (f"python -m rlhpo.evaluation.meta_dataset --families {' '.join(a.families)} --n-per-family {a.n_per_family} "
               f"--trials {a.trials} --budget-scale {a.budget_scale} --n-intervals {a.n_intervals}")
    write_recipe(a.out, command, settings, time.perf_counter() - t0)
    print(a.out.with_name(a.out.stem + ".recipe.json").read_text())


if __name__ == "__main__":
    main()
