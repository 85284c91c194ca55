"""Measuring the guard's optional lr cap relative to the start (``guard.max_lr_ratio``).

Runs the shipped controller on the ``dev`` families (a development decision: never ``final``)
from the sensible and the sampled start, with the cap off and at several ratios, and reports
the median test-loss ratio of each capped run to the uncapped run on the same task, start and
seed (below 1: the cap helps), and how many runs the cap changed at all.

    python -m bench.lr_cap [--tasks 3] [--seeds 2] [--ratios 100 10 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import warnings

import torch

from rlhpo.evaluation.runner import ControllerSchedule, run_task
from rlhpo.policy.artifact import load_artifact
from rlhpo.tasks import make_family, resolve_families


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", nargs="+", default=["dev"])
    p.add_argument("--tasks", type=int, default=3)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--ratios", type=float, nargs="+", default=[100.0, 10.0, 3.0])
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    logging.getLogger("rlhpo").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    art = load_artifact("default")
    capped = {r: art.with_guard(max_lr_ratio=r) for r in args.ratios}
    ratios: dict[tuple[str, float], list[float]] = {}
    for family in resolve_families(args.families):
        for k in range(args.tasks):
            base = make_family(family).sample(4000 + k)
            for start in ("sensible", "random"):
                task = base.with_start(start)
                for seed in range(args.seeds):
                    free = run_task(task, ControllerSchedule(art), seed=seed).test_loss
                    for r, a in capped.items():
                        ratios.setdefault((start, r), []).append(run_task(task, ControllerSchedule(a), seed=seed).test_loss / free)
    print(f"shipped controller on {args.families}, {args.tasks} tasks x {args.seeds} seeds per family; test loss capped / uncapped")
    print("| start | max_lr_ratio | median ratio | capped better | capped worse | unchanged |")
    print("|---|---|---|---|---|---|")
    for (start, r), v in ratios.items():
        print(f"| {start} | {r:g} | {statistics.median(v):.3f} | {sum(x < 0.999 for x in v)} | {sum(x > 1.001 for x in v)} | "
              f"{sum(0.999 <= x <= 1.001 for x in v)} |")


if __name__ == "__main__":
    main()
