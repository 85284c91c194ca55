"""Overhead of the environment over a plain PyTorch loop training the same task.

Runs, side by side and interleaved, (a) the environment driving a task for a whole episode with
a fixed action, and (b) a plain PyTorch loop training the same model with the same optimizer,
batch size and number of examples (no features, no validation, no policy). Reports the median
wall time of each and the overhead ratio.

    python -m rlhpo.bench.env_overhead [--family all|digits_mlp|...] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable, Optional

import numpy as np
import torch

import rlhpo
from rlhpo.tasks import FAMILIES, Task, make_family
from rlhpo.training.session import make_optimizer


def plain_loop(
    task: Task, seed: int, validate_every: int = 0, controller_factory: Optional[Callable[[Any], Any]] = None
) -> float:
    """What a user writes without rlhpo: shuffle, slice, forward, backward, step; with
    ``validate_every`` > 0, also a validation loss every that many examples (as the env does
    once per control interval for its reward); with ``controller_factory(optimizer)``, a
    :class:`rlhpo.Controller` told of every step (its README usage)."""
    torch.manual_seed(seed)
    model = task.model_fn()
    hp = task.default_hparams
    opt = make_optimizer(task.optimizer, model.parameters(), hp)
    controller = controller_factory(opt) if controller_factory is not None else None
    g = torch.Generator().manual_seed(seed)
    x, y = task.train.x, task.train.y
    n, seen = len(x), 0
    perm, pos = torch.randperm(n, generator=g), 0
    next_val = validate_every
    xv, yv = task.val.x[: task.eval_max_examples], task.val.y[: task.eval_max_examples]
    while seen < task.budget_examples:
        if pos >= n:
            perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos : pos + hp.batch_size]
        pos += hp.batch_size
        loss = task.loss_fn(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if controller is not None:
            controller.step(loss)
        seen += len(idx)
        if validate_every and seen >= next_val:
            next_val += validate_every
            with torch.no_grad():
                val = float(task.loss_fn(model(xv), yv))
    return float(loss.detach())


def env_episode(env, task: Task, seed: int) -> float:
    env.reset(seed=seed, options={"task": task})
    zero = np.zeros(env.action_space.shape, dtype=np.float32)
    while True:
        _, _, term, trunc, info = env.step(zero)
        if term or trunc:
            return info["val_loss"]


def measure(task: Task, n_intervals: int, repeats: int) -> dict:
    """Median wall times of the env, the plain loop, and the plain loop validating per interval."""
    env = rlhpo.make_env(n_intervals=n_intervals)
    env_episode(env, task, 0), plain_loop(task, 0)  # warm-up
    every = task.budget_examples // n_intervals
    runs = {
        "env": lambda r: env_episode(env, task, r),
        "plain": lambda r: plain_loop(task, r),
        "plain_val": lambda r: plain_loop(task, r, validate_every=every),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(repeats):  # interleaved, so machine noise hits all three alike
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn(r)
            times[name].append(time.perf_counter() - t0)
    env_t, plain_t, val_t = (statistics.median(times[k]) for k in runs)
    return {
        "task": task.name,
        "examples": task.budget_examples,
        "batch_size": task.default_hparams.batch_size,
        "env_s": env_t,
        "plain_s": plain_t,
        "plain_val_s": val_t,
        "overhead": env_t / plain_t - 1.0,
        "overhead_vs_validating_loop": env_t / val_t - 1.0,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="all", help="a family name, or 'all' for one task of each")
    p.add_argument("--task-seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--n-intervals", type=int, default=20)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    families = list(FAMILIES) if args.family == "all" else [args.family]
    print(f"{args.n_intervals} control intervals per episode, median of {args.repeats} interleaved runs")
    print("| task | examples | batch | env episode (ms) | plain loop (ms) | plain loop + val per interval (ms) | overhead vs plain | overhead vs validating loop |")
    print("|---|---|---|---|---|---|---|---|")
    results = []
    for family in families:
        r = measure(make_family(family).sample(args.task_seed), args.n_intervals, args.repeats)
        results.append(r)
        print(
            f"| {r['task']} | {r['examples']} | {r['batch_size']} | {r['env_s'] * 1e3:.1f} | {r['plain_s'] * 1e3:.1f} | "
            f"{r['plain_val_s'] * 1e3:.1f} | {100 * r['overhead']:+.1f}% | {100 * r['overhead_vs_validating_loop']:+.1f}% |",
            flush=True,
        )
    if len(results) > 1:
        total = {k: sum(r[k] for r in results) for k in ("env_s", "plain_s", "plain_val_s")}
        print(
            f"all tasks together: env {total['env_s']:.2f} s, plain {total['plain_s']:.2f} s "
            f"({100 * (total['env_s'] / total['plain_s'] - 1):+.1f}%), validating loop {total['plain_val_s']:.2f} s "
            f"({100 * (total['env_s'] / total['plain_val_s'] - 1):+.1f}%; target < 5%)"
        )
    return results


if __name__ == "__main__":
    main()
