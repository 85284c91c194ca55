"""Choosing the divergence rule by measurement: the ``factor`` rule and the collapse (``jump``) rule.

Trains tasks of the given families from their sampled (wide) starts, and from those starts with
the learning rate x100, under the constant and the cosine schedule with no guard, and records
the validation loss after every control interval. Each candidate rule is the guard's own
(:class:`rlhpo.control.guard.Guard` with nothing to restore, reviewing the recorded curve), and
for each it reports:

* false alarms: intervals flagged in runs that end within 10% of their best validation loss,
  i.e. runs a rollback could only have hurt;
* catches: runs that blew up (a non-finite loss, or a final validation loss more than 2x their
  best) and runs that collapsed (finite, ending more than 25% above their best) that were flagged.

The last two tables replay the shipped rule with the progress floor (``min_lost``: a divergence
must also have lost that share of the run's progress) on the validation curves, and on the
interval-mean *training* loss curves: what a Controller without a validation source judges.

    python -m bench.divergence_rule [--families meta_train dev near] [--tasks 6] [--cache FILE]

``--cache`` keeps the recorded curves in a JSON file (read instead of training when it exists).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

import torch

from rlhpo.control.guard import Guard, GuardConfig
from rlhpo.evaluation.baselines import Constant, Cosine
from rlhpo.evaluation.runner import train_interval
from rlhpo.tasks import make_family, resolve_families
from rlhpo.training.session import TrainingSession

MIN_LOST = (0.0, 0.1, 0.2, 0.25, 0.5)
FACTORS = (1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0)
#: collapse-rule candidates: (jump, jump_min), each on top of the 2x factor rule
JUMPS = tuple((j, m) for j in (3.0, 4.0, 5.0, 8.0, 20.0) for m in (0.1, 0.2, 0.3))


def curves(
    families: list[str], n_tasks: int, lr_scales: tuple[float, ...], budget_scale: float = 1.0
) -> list[tuple[str, list[float], bool]]:
    """(name, validation losses per interval, ran to the end finite) per run."""
    out = []
    for family in families:
        fam = make_family(family, budget_scale=budget_scale)
        for k in range(n_tasks):
            task = fam.sample(5000 + k)
            for scale in lr_scales:
                hp = task.default_hparams
                t = dataclasses.replace(task, default_hparams=dataclasses.replace(hp, lr=min(hp.lr * scale, 10.0)))
                for schedule in (Constant(), Cosine()):
                    vals, trains = _curves(t, schedule)
                    out.append((f"{t.name} x{scale:g} {schedule.name}", vals, all(math.isfinite(v) for v in vals), trains))
    return out


def _curves(task, schedule, n_intervals: int = 20) -> tuple[list[float], list[float]]:  # type: ignore[no-untyped-def]
    """Validation loss and interval-mean training loss after each interval, training on through
    any blow-up (no guard, no stop)."""
    session = TrainingSession(task, seed=0)
    schedule.start(session, n_intervals)
    vals, trains = [], []
    for k in range(n_intervals):
        if session.done:
            break
        record, stats, _ = train_interval(session, k, n_intervals, schedule._hook("before_step"), schedule._hook("after_step"))
        vals.append(record["val_loss"])
        # an interval shorter than a batch trains nothing: the last training loss stands, as in the Controller
        trains.append(record["train_loss"] if stats.steps or not trains else trains[-1])
    return vals, trains


def flagged(vals: list[float], config: GuardConfig, proxy: bool = False) -> list[int]:
    """Intervals the guard's rule (``config``) flags on a recorded curve (nothing is restored:
    a flagged interval only stays out of the best and the recent window, as in a guarded run).
    ``proxy``: the curve is the interval-mean training loss (the collapse rule sits out, as in the
    Controller without a validation source)."""
    guard = Guard(config, None)
    guard.watch_jumps = not proxy
    return [i for i, v in enumerate(vals) if guard.review(not math.isfinite(v), v).diverged]


def table(healthy: list, blown: list, collapsed: list, rules: list[tuple[str, GuardConfig]], proxy: bool = False) -> list[str]:
    n_int = sum(len(v) for _, v in healthy)
    lines = [
        "| rule | false alarms (intervals of healthy runs) | runs with a false alarm | blown-up runs caught | collapsed runs caught |",
        "|---|---|---|---|---|",
    ]
    for label, cfg in rules:
        alarms = sum(len(flagged(v, cfg, proxy)) for _, v in healthy)
        runs_alarmed = sum(bool(flagged(v, cfg, proxy)) for _, v in healthy)
        caught = sum(bool(flagged(v, cfg, proxy)) for _, v in blown)
        caught_c = sum(bool(flagged(v, cfg, proxy)) for _, v in collapsed)
        lines.append(
            f"| {label} | {alarms}/{n_int} ({100 * alarms / max(n_int, 1):.2f}%) | {runs_alarmed}/{len(healthy)} "
            f"| {caught}/{len(blown)} | {caught_c}/{len(collapsed)} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=["meta_train", "dev", "near"], help="never final: a development decision")
    p.add_argument("--tasks", type=int, default=6, help="tasks per family")
    p.add_argument("--budget-scale", type=float, default=1.0, help="multiplies every task's example budget")
    p.add_argument("--cache", type=Path, default=None, help="JSON file of recorded curves (read if it exists, else written)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    runs = [tuple(r) for r in json.loads(args.cache.read_text())] if args.cache is not None and args.cache.exists() else []
    if not runs or len(runs[0]) < 4:  # none cached, or cached before the training-loss curves were recorded
        runs = curves(resolve_families(args.families), args.tasks, (1.0, 100.0), args.budget_scale)
        if args.cache is not None:
            args.cache.write_text(json.dumps(runs))
    kinds = {
        "healthy": lambda v, ok: ok and v[-1] <= 1.1 * min(v),
        "blown": lambda v, ok: not ok or v[-1] > 2.0 * min(x for x in v if math.isfinite(x)),
        "collapsed": lambda v, ok: ok and 1.25 * min(v) < v[-1] <= 2.0 * min(v),
    }  # judged on the validation curve, whichever curve a rule reads
    healthy, blown, collapsed = ([(n, v) for n, v, ok, _ in runs if is_(v, ok)] for is_ in kinds.values())
    trains = [[(n, t) for n, v, ok, t in runs if is_(v, ok)] for is_ in kinds.values()]
    print(
        f"{len(runs)} runs ({len(healthy)} ending within 10% of their best, {len(blown)} blown up, "
        f"{len(collapsed)} ending 25%-100% above their best) in {time.perf_counter() - t0:.0f} s"
    )
    off = GuardConfig(jump=None, min_lost=0.0)
    print("\nThe factor rule alone (val > factor x best):\n")
    print("\n".join(table(healthy, blown, collapsed, [(f"factor {f:g}", dataclasses.replace(off, factor=f)) for f in FACTORS])))
    print("\nThe collapse rule on top of factor 2 (val - best > jump x the median interval-to-interval change")
    print("of the last 5 healthy intervals, and val > (1 + jump_min) x best):\n")
    rules = [(f"jump {j:g}, jump_min {m:g}", dataclasses.replace(off, jump=j, jump_min=m)) for j, m in JUMPS]
    print("\n".join(table(healthy, blown, collapsed, rules)))
    shipped = GuardConfig()
    floors = [(f"min_lost {m:g}", dataclasses.replace(shipped, min_lost=m, proxy_factor=2.0)) for m in MIN_LOST]
    print(f"\nThe progress floor on the shipped rule (factor {shipped.factor:g}, jump {shipped.jump:g}, jump_min {shipped.jump_min:g}):")
    print("a divergence must also have lost min_lost x (first healthy loss - best). On the validation curves:\n")
    print("\n".join(table(healthy, blown, collapsed, floors)))
    print("\nThe same on the interval-mean training loss (a Controller without a validation source; the")
    print("collapse rule sits out; healthy / blown up / collapsed as judged on the validation curve; factor 2):\n")
    print("\n".join(table(*trains, floors, proxy=True)))
    print("\nThe factor on the interval-mean training loss (``proxy_factor``), with the shipped floor:\n")
    factors = [(f"proxy_factor {f:g}", dataclasses.replace(shipped, proxy_factor=f)) for f in (2.0, 3.0, 5.0, 10.0, 30.0)]
    print("\n".join(table(*trains, factors, proxy=True)))


if __name__ == "__main__":
    main()
