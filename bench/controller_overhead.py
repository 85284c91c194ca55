"""Overhead of the controller in a user's own PyTorch loop.

Runs, interleaved in one process, the same plain loop (same model, optimizer, batches and
examples) (a) with fixed hyperparameters and (b) with :class:`rlhpo.Controller` attached,
and reports the median wall times and their ratio. The controller's decisions change the
hyperparameters, so (b) uses a controller whose decisions are computed but whose batch-size
changes are off, keeping the number of optimizer steps equal.

    python -m bench.controller_overhead [--family char_lm] [--policy batch] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.env_overhead import plain_loop
from rlhpo.controller import Controller
from rlhpo.policy.artifact import DEFAULT_POLICY, load_artifact
from rlhpo.tasks import make_family


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="char_lm")
    p.add_argument("--task-seed", type=int, default=0)
    p.add_argument("--policy", default=DEFAULT_POLICY, help="the shipped default (the batch rule measures the gradient noise)")
    p.add_argument("--repeats", type=int, default=15)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    task = make_family(args.family).sample(args.task_seed)
    artifact = load_artifact(args.policy)

    def with_controller(seed: int) -> None:
        def attach(opt: torch.optim.Optimizer) -> Controller:
            return Controller(
                opt, task.budget_examples, policy=artifact, batch_size=task.default_hparams.batch_size, control_batch_size=False
            )

        plain_loop(task, seed, controller_factory=attach)

    runs = {"fixed": lambda r: plain_loop(task, r), "controller": with_controller}
    for fn in runs.values():
        fn(0)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(args.repeats):  # interleaved, so machine noise hits both alike
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn(r)
            times[name].append(time.perf_counter() - t0)
    fixed, ctl = (statistics.median(times[k]) for k in runs)
    # noise on a shared machine only adds time: the fastest of each is the cleaner comparison
    best_fixed, best_ctl = min(times["fixed"]), min(times["controller"])
    result = {
        "task": task.name,
        "fixed_s": fixed,
        "controller_s": ctl,
        "overhead": ctl / fixed - 1.0,
        "overhead_of_fastest": best_ctl / best_fixed - 1.0,
    }
    print(
        f"task {task.name}: {task.budget_examples} examples, batch {task.default_hparams.batch_size}, "
        f"{artifact.spec.n_intervals} intervals, median of {args.repeats}\n"
        f"  loop with fixed hyperparameters : {fixed * 1e3:8.1f} ms\n"
        f"  same loop with the controller   : {ctl * 1e3:8.1f} ms\n"
        f"  overhead (medians)              : {100 * result['overhead']:+.1f}%  (target < 2%)\n"
        f"  overhead (fastest of each)      : {100 * result['overhead_of_fastest']:+.1f}%"
    )
    return result


if __name__ == "__main__":
    main()
