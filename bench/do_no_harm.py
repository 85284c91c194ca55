"""Do no harm, measured: runs under the controller never end with non-finite weights or far worse
than their best point.

Trains held-out tasks under the shipped controller (through the evaluation runner, the guard on)
from the sensible start, the task's sampled (wide) start, and a deliberately bad start (the
sampled lr x100) on every family, and counts the runs that end with non-finite weights or with a
final validation loss above ``tolerance`` x the best validation loss of the run. The same runs
without the guard are reported beside them.

    python -m bench.do_no_harm [--families held_out meta_train] [--tasks 2] [--seeds 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import torch

from rlhpo.evaluation.runner import ControllerSchedule, RunResult, run_task
from rlhpo.policy.artifact import load_artifact
from rlhpo.tasks import Task, make_family, resolve_families

STARTS = ("sensible", "random", "lr_x100")


def _start(task: Task, start: str) -> Task:
    if start == "lr_x100":
        hp = task.default_hparams
        return dataclasses.replace(task, default_hparams=dataclasses.replace(hp, lr=hp.lr * 100))
    return task.with_start(start)


def harmed(r: RunResult, tolerance: float) -> bool:
    """Non-finite weights, a diverged report, or a final validation loss above tolerance x the best."""
    if r.diverged or not r.weights_finite or not math.isfinite(r.final_val_loss):
        return True
    best = min([h["val_loss"] for h in r.history if math.isfinite(h["val_loss"])] + [r.final_val_loss])
    return r.final_val_loss - best > (tolerance - 1.0) * max(abs(best), 1e-12)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=["held_out", "meta_train"])
    p.add_argument("--tasks", type=int, default=2, help="tasks per family")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--policy", default="default")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    art = load_artifact(args.policy)
    guarded_cfg = art.spec.guard
    tolerance = guarded_cfg.factor
    unguarded = art.with_guard(enabled=False)
    counts = {(s, g): [0, 0, 0] for s in STARTS for g in ("guard", "no guard")}  # runs, harmed, rollbacks
    t0 = time.perf_counter()
    for family in resolve_families(args.families):
        fam = make_family(family)
        for k in range(args.tasks):
            base = fam.sample(3000 + k)
            for start in STARTS:
                task = _start(base, start)
                for seed in range(args.seeds):
                    for label, artifact in (("guard", art), ("no guard", unguarded)):
                        schedule = ControllerSchedule(artifact)
                        r = run_task(task, schedule, seed=seed)
                        c = counts[(start, label)]
                        c[0] += 1
                        c[1] += harmed(r, tolerance)
                        c[2] += sum(bool(h.get("rolled_back")) for h in schedule.controller.history)
    print(f"policy {args.policy}; families {args.families}, {args.tasks} tasks x {args.seeds} seeds each; "
          f"tolerance {tolerance:g} x the run's best validation loss; {time.perf_counter() - t0:.0f} s")
    print("| start | guard | runs | ended non-finite or > tolerance x best | rollbacks |")
    print("|---|---|---|---|---|")
    for (start, label), (n, bad, rb) in counts.items():
        print(f"| {start} | {label} | {n} | {bad} | {rb} |")
    return int(any(counts[(s, "guard")][1] for s in STARTS))


if __name__ == "__main__":
    raise SystemExit(main())
