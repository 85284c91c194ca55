"""Overhead of the environment over a plain PyTorch loop training the same task.

Runs, side by side and interleaved, with ``n_intervals`` control intervals per episode:

* **env episode**: :class:`rlhpo.envs.HyperparamControlEnv` driving the task for a whole
  episode with a zero action (the hyperparameters stay the task's defaults). Per episode it
  builds a :class:`~rlhpo.training.session.TrainingSession` (task checks, model, optimizer,
  batch sampler); per optimizer step it records the loss and, on the last two steps of each
  interval, probes the gradient norm and the update; per interval it evaluates the model (in
  eval mode, no grad) on at most ``task.eval_max_examples`` validation examples for the loss
  (the reward) and the task's metric (``info["val_metric"]``), and runs the decision path
  (the guard's verdict and, when it is on, its snapshot of the training state; the
  observation; the action mapped to hyperparameters).
* **plain loop**: what a user writes without rlhpo: the same model (same seed), optimizer,
  batch size and examples (as many as the env episode trained: fewer than the budget when it
  ended early, diverged); per step: shuffle (a fresh permutation per epoch), slice the batch,
  forward, loss, backward, step. No validation.
* **plain loop + val per interval** (the "validating loop"): the plain loop that also
  validates as often as the environment (every ``budget // n_intervals`` examples), as a user
  validates: ``model.eval()``, no grad, the same ``eval_max_examples`` validation examples,
  the loss and the task's metric, ``model.train()``. What remains between it and the env
  episode is the environment's own work: the session's bookkeeping, the probes, the decision
  path and the reset.

Reports the median wall time of each and the overhead ratios.

    python -m bench.env_overhead [--family all|digits_mlp|...] [--repeats 7]
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
    task: Task,
    seed: int,
    validate_every: int = 0,
    controller_factory: Optional[Callable[[Any], Any]] = None,
    n_examples: Optional[int] = None,
) -> float:
    """What a user writes without rlhpo: shuffle, slice, forward, backward, step, for
    ``n_examples`` examples (default: the task's budget; the last batch is cut to land on it,
    as the environment does); with ``validate_every`` > 0, also a validation every that many
    examples (in eval mode: the loss and the task's metric, as the env computes once per
    control interval for its reward and its info); with ``controller_factory(optimizer)``, a
    :class:`rlhpo.Controller` told of every step (its documented usage, docs/using.md)."""
    torch.manual_seed(seed)
    model = task.model_fn()
    hp = task.default_hparams
    opt = make_optimizer(task.optimizer, model.parameters(), hp)
    controller = controller_factory(opt) if controller_factory is not None else None
    g = torch.Generator().manual_seed(seed)
    x, y = task.train.x, task.train.y
    n, seen = len(x), 0
    perm, pos = torch.randperm(n, generator=g), 0
    next_val, validations = validate_every, []
    xv, yv = task.val.x[: task.eval_max_examples], task.val.y[: task.eval_max_examples]
    total = task.budget_examples if n_examples is None else n_examples
    while seen < total:
        if pos >= n:
            perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos : pos + min(hp.batch_size, total - seen)]
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
            model.eval()
            with torch.no_grad():
                out = model(xv)
                validations.append((float(task.loss_fn(out, yv)), float(task.metric_fn(out, yv))))
            model.train()
    return float(loss.detach())


def env_episode(env, task: Task, seed: int) -> int:
    """One episode at the task's starting hyperparameters; the examples it trained on (fewer
    than the budget when it ended early, diverged)."""
    env.reset(seed=seed, options={"task": task})
    zero = np.zeros(env.action_space.shape, dtype=np.float32)
    while True:
        _, _, term, trunc, info = env.step(zero)
        if term or trunc:
            return int(info["examples"])


def measure(task: Task, n_intervals: int, repeats: int) -> dict:
    """Median wall times of the env, the plain loop, and the plain loop validating per interval.

    Each repeat runs the env first: the plain loops then train on as many examples as its
    episode did, so an episode that ends early (diverged) is compared with as much training.
    """
    env = rlhpo.make_env(n_intervals=n_intervals)
    env_episode(env, task, 0), plain_loop(task, 0)  # warm-up
    every = task.budget_examples // n_intervals
    examples: list[int] = []

    def env_run(r: int) -> None:
        examples.append(env_episode(env, task, r))

    runs = {
        "env": env_run,
        "plain": lambda r: plain_loop(task, r, n_examples=examples[-1]),
        "plain_val": lambda r: plain_loop(task, r, validate_every=every, n_examples=examples[-1]),
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
        "examples_trained": min(examples),
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
    print("| task | examples | batch | env episode (ms) | plain loop (ms) | plain loop + val per interval (ms) "
          "| overhead vs plain | overhead vs validating loop |")
    print("|---|---|---|---|---|---|---|---|")
    results = []
    for family in families:
        r = measure(make_family(family).sample(args.task_seed), args.n_intervals, args.repeats)
        results.append(r)
        trained = "" if r["examples_trained"] == r["examples"] else f" (diverged: {r['examples_trained']} trained)"
        print(
            f"| {r['task']} | {r['examples']}{trained} | {r['batch_size']} | {r['env_s'] * 1e3:.1f} | {r['plain_s'] * 1e3:.1f} | "
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
        over = [
            f"{r['task']} ({100 * r['overhead_vs_validating_loop']:+.1f}%)"
            for r in results
            if r["overhead_vs_validating_loop"] > 0.10
        ]
        print(f"above +10% vs the validating loop: {', '.join(over) or 'none'}")
    return results


if __name__ == "__main__":
    main()
