"""Choosing the divergence rule's factor by measurement.

Trains tasks of the given families from their sampled (wide) starts, and from those starts with
the learning rate x100, under the constant and the cosine schedule with no guard, and records
the validation loss after every control interval. For each candidate factor it reports:

* false alarms: intervals flagged (val > factor x the best so far) in runs that end within 10%
  of their best validation loss, i.e. runs a rollback could only have hurt;
* catches: runs that blew up (a non-finite loss, or a final validation loss more than 2x their
  best) and were flagged at or before the interval where they went wrong.

    python -m rlhpo.bench.divergence_rule [--families meta_train near] [--tasks 6]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time

import torch

from rlhpo.evaluation.baselines import Constant, Cosine
from rlhpo.evaluation.runner import train_interval
from rlhpo.tasks import make_family, resolve_families
from rlhpo.training.session import TrainingSession

FACTORS = (1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0)


def curves(families: list[str], n_tasks: int, lr_scales: tuple[float, ...]) -> list[tuple[str, list[float], bool]]:
    """(name, validation losses per interval, ran to the end finite) per run."""
    out = []
    for family in families:
        fam = make_family(family)
        for k in range(n_tasks):
            task = fam.sample(5000 + k)
            for scale in lr_scales:
                hp = task.default_hparams
                t = dataclasses.replace(task, default_hparams=dataclasses.replace(hp, lr=min(hp.lr * scale, 10.0)))
                for schedule in (Constant(), Cosine()):
                    vals = _val_curve(t, schedule)
                    out.append((f"{t.name} x{scale:g} {schedule.name}", vals, all(math.isfinite(v) for v in vals)))
    return out


def _val_curve(task, schedule, n_intervals: int = 20) -> list[float]:  # type: ignore[no-untyped-def]
    """Validation loss after each interval, training on through any blow-up (no guard, no stop)."""
    session = TrainingSession(task, seed=0)
    schedule.start(session, n_intervals)
    vals = []
    for k in range(n_intervals):
        if session.done:
            break
        record, _, _ = train_interval(session, k, n_intervals, schedule._hook("before_step"), schedule._hook("after_step"))
        vals.append(record["val_loss"])
    return vals


def flagged(vals: list[float], factor: float) -> list[int]:
    """Intervals the rule flags: non-finite, or above factor x the best so far."""
    best, hits = math.inf, []
    for i, v in enumerate(vals):
        if not math.isfinite(v) or (math.isfinite(best) and v > factor * best):
            hits.append(i)
        elif math.isfinite(v):
            best = min(best, v)
    return hits


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=["meta_train", "dev", "near"], help="never final: a development decision")
    p.add_argument("--tasks", type=int, default=6, help="tasks per family")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    runs = curves(resolve_families(args.families), args.tasks, (1.0, 100.0))
    healthy = [(n, v) for n, v, ok in runs if ok and v[-1] <= 1.1 * min(v)]
    blown = [(n, v) for n, v, ok in runs if not ok or v[-1] > 2.0 * min(x for x in v if math.isfinite(x))]
    print(f"{len(runs)} runs ({len(healthy)} ending within 10% of their best, {len(blown)} blown up) in {time.perf_counter() - t0:.0f} s")
    print("| factor | false alarms (intervals of healthy runs) | runs with a false alarm | blown-up runs caught |")
    print("|---|---|---|---|")
    n_int = sum(len(v) for _, v in healthy)
    for f in FACTORS:
        alarms = sum(len(flagged(v, f)) for _, v in healthy)
        runs_alarmed = sum(bool(flagged(v, f)) for _, v in healthy)
        caught = sum(bool(flagged(v, f)) for _, v in blown)
        print(f"| {f:g} | {alarms}/{n_int} ({100 * alarms / max(n_int, 1):.1f}%) | {runs_alarmed}/{len(healthy)} | {caught}/{len(blown)} |")


if __name__ == "__main__":
    main()
