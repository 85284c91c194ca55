"""How far from the calibrated default must a controller be able to move the lr (issue 23)?

Controller v3 starts from the calibrated default (warm-up + cosine at one lr and weight decay per
optimizer kind, ``conf/evaluate/calibrated.yaml``) and moves the lr *level* within a trust region
around it. This measures the region: every task-seed trains the calibrated default with its lr
multiplied by each factor of ``--factors`` (the same schedule, seed and batch order), and the
report gives, per family, which factor reaches the lowest final VALIDATION loss, and what an
oracle that picks the best factor per task-seed would gain over factor 1 (the most any
constant-level controller inside that region could gain). Factors far from 1 that never win
stay outside the region; the oracle gain says how much a controller can earn at all.

    python -m bench.trust_region --families dev --out docs/results/trust_region.md

Development split only (``dev``, ``workloads_dev`` at a tenth of their budget): a design
measurement; ``final`` is never read.
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from rlhpo.control.prior import calibrated_hparams
from rlhpo.tasks import make_family, resolve_families

FACTORS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def _run(args: tuple) -> dict:
    import torch

    from rlhpo.evaluation.baselines import Cosine
    from rlhpo.evaluation.runner import run_task

    torch.set_num_threads(1)
    family, task_seed, seed, factor, budget_scale = args
    task = make_family(family, budget_scale).sample(task_seed).with_start("sensible")
    prior = calibrated_hparams(task.optimizer, task.default_hparams)
    hp = replace(prior, lr=prior.lr * factor)
    t = time.perf_counter()
    r = run_task(task, Cosine(hp), seed=seed, test_split=False)
    val = math.inf if r.diverged or not math.isfinite(r.final_val_loss) else float(r.final_val_loss)
    return dict(family=family, task=task.name, seed=seed, factor=factor, val_loss=val, seconds=time.perf_counter() - t)


def measure(families: list[str], n_tasks: int, seeds: int, factors: tuple[float, ...], budget_scale: float, n_jobs: int) -> list[dict]:
    from joblib import Parallel, delayed

    jobs = [
        (fam, 3000 + t, s, f, budget_scale)
        for fam in families
        for t in range(n_tasks)
        for s in range(seeds)
        for f in factors
    ]
    return list(Parallel(n_jobs=n_jobs)(delayed(_run)(j) for j in jobs))


def summarise(rows: list[dict], factors: tuple[float, ...]) -> tuple[str, dict]:
    by_run: dict[tuple, dict[float, float]] = defaultdict(dict)
    fam_of = {}
    for r in rows:
        by_run[(r["task"], r["seed"])][float(r["factor"])] = float(r["val_loss"])
        fam_of[(r["task"], r["seed"])] = r["family"]
    per_family: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for key, losses in by_run.items():
        base = losses.get(1.0, math.inf)
        best_f = min(losses, key=lambda f: losses[f])
        ratio = losses[best_f] / base if base > 0 and math.isfinite(base) else float("nan")
        per_family[fam_of[key]].append((best_f, ratio))
    lines = [
        "| family | task-seeds | best factor: " + " / ".join(f"x{f:g}" for f in factors) + " | oracle / calibrated val loss (median) |",
        "|---|---|---|---|",
    ]
    all_best, all_ratio = [], []
    for fam, items in sorted(per_family.items()):
        counts = [sum(1 for b, _ in items if b == f) for f in factors]
        ratios = [r for _, r in items if math.isfinite(r)]
        all_best += [b for b, _ in items]
        all_ratio += ratios
        lines.append(f"| {fam} | {len(items)} | {' / '.join(map(str, counts))} | {np.median(ratios):.3f} |")
    counts = [sum(1 for b in all_best if b == f) for f in factors]
    lines.append(f"| all | {len(all_best)} | {' / '.join(map(str, counts))} | {np.median(all_ratio):.3f} |")
    logs = np.log2(np.asarray(all_best))
    stats = {
        "within_x2": float(np.mean(np.abs(logs) <= 1)),
        "within_x4": float(np.mean(np.abs(logs) <= 2)),
        "oracle_median": float(np.median(all_ratio)),
    }
    return "\n".join(lines), stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", nargs="+", default=["dev"])
    p.add_argument("--n-tasks", type=int, default=5)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--budget-scale", type=float, default=1.0)
    p.add_argument("--factors", type=float, nargs="+", default=list(FACTORS))
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    families = resolve_families(a.families)
    if any(f in resolve_families(["final", "workloads_final"]) for f in families):
        raise SystemExit("trust_region: a design measurement reads development families only; allowed: dev, meta_train, workloads_dev")
    t0 = time.time()
    factors = tuple(sorted(a.factors))
    rows = measure(families, a.n_tasks, a.seeds, factors, a.budget_scale, a.n_jobs)
    table, stats = summarise(rows, factors)
    cmd = "python -m bench.trust_region " + " ".join(
        ["--families", *a.families, "--n-tasks", str(a.n_tasks), "--seeds", str(a.seeds), "--budget-scale", str(a.budget_scale)]
    )
    text = (
        f"Trust region, `{cmd}`: {time.time() - t0:.0f} s on a shared 2-core CPU.\n\n"
        "Warm-up + cosine at the calibrated default's lr times each factor (weight decay and batch size unchanged); "
        "best factor = lowest final validation loss of the task-seed.\n\n"
        f"{table}\n\n"
        f"Best factor within x2 of the calibrated lr: {stats['within_x2']:.0%}; within x4: {stats['within_x4']:.0%}. "
        f"An oracle choosing the factor per task-seed: median validation loss {stats['oracle_median']:.3f}x the calibrated default's.\n"
    )
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text)
        with open(a.out.with_suffix(".csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
