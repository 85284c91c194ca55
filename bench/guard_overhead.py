"""What the guard costs: time and memory of its snapshots, side by side with and without it.

Runs, interleaved, the environment driving one task of each family from its sensible start for a whole episode with a
fixed action, with the guard on (a snapshot at every healthy decision, the default cadence) and
off, and reports the median wall times and their ratio. Memory: the bytes one snapshot holds
against the bytes of the model and optimizer state it copies (the guard keeps one snapshot; two
with ``restore_best``).

    python -m bench.guard_overhead [--family all|<name>] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from rlhpo.control.guard import GuardConfig
from rlhpo.envs import EnvConfig, make_env
from rlhpo.tasks import FAMILIES, Task, make_family


def _bytes(obj) -> int:  # type: ignore[no-untyped-def]
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_bytes(v) for v in obj)
    return 0


def episode(env, task: Task, seed: int) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Examples trained and rollbacks of one episode."""
    _, info = env.reset(seed=seed, options={"task": task, "session_seed": seed})
    zero = np.zeros(env.action_space.shape, dtype=np.float32)
    rollbacks = int(info["rolled_back"])
    while True:
        _, _, term, trunc, info = env.step(zero)
        rollbacks += int(info["rolled_back"])
        if term or trunc:
            return int(info["examples"]), rollbacks


def measure(task: Task, repeats: int) -> dict:
    envs = {"guard": make_env(EnvConfig()), "no_guard": make_env(EnvConfig(guard=GuardConfig(enabled=False)))}
    for env in envs.values():
        episode(env, task, 0)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in envs}
    same = True  # both trained the whole budget without a rollback: the times compare
    for r in range(repeats):
        for name, env in envs.items():  # interleaved: machine noise hits both alike
            t0 = time.perf_counter()
            examples, rollbacks = episode(env, task, r)
            times[name].append(time.perf_counter() - t0)
            same &= examples == task.budget_examples and rollbacks == 0
    session = envs["guard"].session
    state = _bytes({"model": session.model.state_dict(), "optimizer": session.optimizer.state_dict()})
    snap = session.capture()
    copied = _bytes({"weights": snap["weights"], "optimizer": snap["optimizer"]})
    on, off = statistics.median(times["guard"]), statistics.median(times["no_guard"])
    return {"task": task.name, "comparable": same, "guard_s": on, "no_guard_s": off, "overhead": on / off - 1.0,
            "snapshot_mib": _bytes(snap) / 2**20, "copies": copied / max(state, 1),
            "sampler_kib": _bytes(snap["sampler"]) / 2**10}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--family", default="all")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    families = list(FAMILIES) if args.family == "all" else [args.family]
    print(f"20 control intervals per episode from the sensible start, zero actions, median of {args.repeats} interleaved runs")
    print("| task | with guard (ms) | without (ms) | time overhead | snapshot (MiB) "
          "| copies of model + optimizer state | + batch order (KiB) |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for family in families:
        r = measure(make_family(family).sample(0).with_start("sensible"), args.repeats)
        rows.append(r)
        note = "" if r["comparable"] else " (diverged: not comparable)"
        print(f"| {r['task']}{note} | {1e3 * r['guard_s']:.1f} | {1e3 * r['no_guard_s']:.1f} | {100 * r['overhead']:+.1f}% | "
              f"{r['snapshot_mib']:.3f} | {r['copies']:.2f} | {r['sampler_kib']:.1f} |", flush=True)
    on, off = (sum(r[k] for r in rows if r["comparable"]) for k in ("guard_s", "no_guard_s"))
    print(f"all tasks together: with guard {on:.2f} s, without {off:.2f} s ({100 * (on / off - 1):+.1f}%; target <= 5%)")
    return rows


if __name__ == "__main__":
    main()
