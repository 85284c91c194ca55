"""Environment steps per second of the vector environments, side by side in one run.

For each number of environments (1, 2, 4, 8, 16, 32 by default) and each kind — SB3's
``DummyVecEnv`` and ``SubprocVecEnv`` over :class:`~rlhpo.envs.HyperparamControlEnv`, and
:class:`~rlhpo.envs.vec.batched.BatchedVecEnv` — runs the same fixed workload: for each of a list
of tasks (one per meta-training family by default, at the meta-training budget scale), every
environment trains one episode of that task, with its own initialisation and batch order,
under the same seeded actions. Two action regimes: uniform random actions (batch sizes drift
apart) and zero actions (hyperparameters held at their start: the best case for stacking). An
environment whose run diverges starts a new episode, as in training; that part of the workload
may differ between kinds. No policy is involved: this is the environment's throughput, the part
of meta-training that the vector env decides.

    python -m rlhpo.bench.vec_throughput [--n-envs 1 2 4 8 16 32] [--tasks-per-family 1]
        [--kinds dummy subproc batched] [--actions random zero] [--out docs/results/vec_throughput]

Writes ``<out>.csv``, ``<out>.md`` and ``<out>.png``. ``subproc`` runs one process per
environment (one torch thread each, as in meta-training), so it uses every core; ``dummy`` and
``batched`` run in one process with one torch thread (``--batched-threads`` gives the batched
env more; on a shared machine extra threads spin against other jobs and slow it down).
Environment construction (and ``subproc``'s process start) is not timed."""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import numpy as np
import torch

from rlhpo.envs import EnvConfig


def make_venv(kind: str, n_envs: int, config: EnvConfig):
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    from rlhpo.envs.vec.batched import BatchedVecEnv
    from rlhpo.metatrain.trainer import _env_factory

    if kind == "batched":
        return BatchedVecEnv(config, n_envs)
    cls = SubprocVecEnv if kind == "subproc" else DummyVecEnv
    kwargs = {"start_method": "forkserver"} if kind == "subproc" else None
    return make_vec_env(_env_factory(config, 1), n_envs=n_envs, vec_env_cls=cls, vec_env_kwargs=kwargs)


def benchmark_tasks(families: list[str], per_family: int) -> list[tuple[str, int]]:
    """The fixed workload: ``per_family`` task seeds of each family."""
    from rlhpo.tasks import resolve_families

    return [(f, seed) for f in resolve_families(families) for seed in range(per_family)]


def measure(
    kind: str, n_envs: int, tasks: list[tuple[str, int]], config: EnvConfig, seed: int = 0, threads: int = 1, actions: str = "random"
) -> dict:
    """Steps per second of one vector env on a fixed workload: for each (family, task seed), all
    ``n_envs`` environments run one episode of that task (each with its own initialisation and
    batch order) under seeded uniform random actions, or all-zero ones (hyperparameters held at
    their start). Every kind gets the same tasks, seeds and actions."""
    torch.set_num_threads(threads)
    venv = make_venv(kind, n_envs, config)
    try:
        rng = np.random.default_rng(seed)
        shape = (n_envs, *venv.action_space.shape)
        steps, elapsed = 0, 0.0
        for k, (family, task_seed) in enumerate(tasks):
            venv.seed(seed + 1000 * k)
            venv.set_options({"family": family, "task_seed": task_seed})
            start = time.perf_counter()
            venv.reset()
            for _ in range(config.n_intervals - 1):  # reset trained the first interval
                a = rng.uniform(-1.0, 1.0, shape) if actions == "random" else np.zeros(shape)
                venv.step(a.astype(np.float32))
            elapsed += time.perf_counter() - start
            steps += n_envs * config.n_intervals
    finally:
        venv.close()
        torch.set_num_threads(1)
    return dict(kind=kind, actions=actions, n_envs=n_envs, steps=steps, seconds=round(elapsed, 2), steps_per_s=steps / elapsed)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks-per-family", type=int, default=1, help="task seeds per family in the workload")
    ap.add_argument("--n-envs", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--kinds", nargs="+", default=["dummy", "subproc", "batched"], choices=["dummy", "subproc", "batched"])
    ap.add_argument("--actions", nargs="+", default=["random", "zero"], choices=["random", "zero"])
    ap.add_argument(
        "--batched-threads", type=int, default=1, help="torch threads of the batched env (more only pay on an idle machine)"
    )
    ap.add_argument("--budget-scale", type=float, default=0.5, help="as tasks.budget_scale in meta-training")
    ap.add_argument("--families", nargs="+", default=["meta_train"])
    ap.add_argument("--out", default="docs/results/vec_throughput")
    args = ap.parse_args(argv)
    config = EnvConfig(families=args.families, budget_scale=args.budget_scale).validate()
    tasks = benchmark_tasks(args.families, args.tasks_per_family)
    rows = []
    for actions in args.actions:
        for n in args.n_envs:
            for kind in args.kinds:
                threads = args.batched_threads if kind == "batched" else 1
                r = measure(kind, n, tasks, config, threads=threads, actions=actions)
                rows.append(r)
                print(
                    f"{actions:>6} actions {kind:>8} n_envs={n:>3}: {r['steps_per_s']:8.1f} steps/s "
                    f"({r['steps']} steps in {r['seconds']} s)",
                    flush=True,
                )
    write_report(rows, args, tasks)


def write_report(rows: list[dict], args: argparse.Namespace, tasks: list[tuple[str, int]]) -> None:
    """The CSV, the markdown table and the plot, beside ``args.out``."""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    table = {(r["actions"], r["kind"], r["n_envs"]): r["steps_per_s"] for r in rows}
    ratio = "batched" in args.kinds and len(args.kinds) > 1
    lines = [
        f"Environment steps per second (`python -m rlhpo.bench.vec_throughput`; {os.cpu_count()} cores; "
        f"workload: one episode per environment of each of {len(tasks)} tasks ({', '.join(f'{f}-{t}' for f, t in tasks)}) "
        f"at budget scale {args.budget_scale:g}; "
        f"batched with {args.batched_threads} torch threads)",
    ]
    for actions in args.actions:
        lines += [
            "",
            f"{actions} actions" + (" (hyperparameters held at their start)" if actions == "zero" else ""),
            "",
            "| n_envs | " + " | ".join(args.kinds) + (" | batched / best other |" if ratio else " |"),
            "|---" * (len(args.kinds) + 1 + ratio) + "|",
        ]
        for n in args.n_envs:
            cells = [f"{table[(actions, k, n)]:.1f}" for k in args.kinds]
            if ratio:
                best = max(table[(actions, k, n)] for k in args.kinds if k != "batched")
                cells.append(f"{table[(actions, 'batched', n)] / best:.2f}x")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    out.with_suffix(".md").write_text(text)
    print("\n" + text)
    _plot(table, args, out)


def _plot(table: dict, args: argparse.Namespace, out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        for actions, style in zip(args.actions, ("-", "--")):
            for kind in args.kinds:
                values = [table[(actions, kind, n)] for n in args.n_envs]
                ax.plot(args.n_envs, values, style, marker="o", label=f"{kind}, {actions} actions")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("environments")
        ax.set_ylabel("environment steps / s")
        ax.set_title(f"vector env throughput, {os.cpu_count()} CPU cores")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out.with_suffix(".png"), dpi=120)
    except ImportError:
        pass


if __name__ == "__main__":
    main()
