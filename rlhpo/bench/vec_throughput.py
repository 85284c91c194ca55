"""Environment steps per second of the vector environments, side by side in one run.

For each number of environments (1, 2, 4, 8, 16, 32 by default) and each kind — SB3's
``DummyVecEnv`` and ``SubprocVecEnv`` over :class:`~rlhpo.envs.HyperparamControlEnv`, and
:class:`~rlhpo.envs.batched.BatchedVecEnv` — steps the vector env with seeded random actions
for a fixed wall time on the meta-training task distribution (the ``train.yaml`` defaults) and
reports control-interval steps per second, with random actions (batch sizes drift apart) and
with zero actions (hyperparameters held: the best case for stacking). No policy is involved:
this is the environment's throughput, the part of meta-training that the vector env decides.

    python -m rlhpo.bench.vec_throughput [--seconds 20] [--n-envs 1 2 4 8 16 32]
        [--kinds dummy subproc batched] [--out docs/results/vec_throughput]

Writes ``<out>.csv``, ``<out>.md`` and ``<out>.png``. ``subproc`` runs one process per
environment (one torch thread each, as in meta-training), so it uses every core; ``dummy`` and
``batched`` run in one process with one torch thread (``--batched-threads`` gives the batched
env more; on a shared machine extra threads spin against other jobs and slow it down).
"""

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

    from rlhpo.envs.batched import BatchedVecEnv
    from rlhpo.train import _env_factory

    if kind == "batched":
        return BatchedVecEnv(config, n_envs)
    cls = SubprocVecEnv if kind == "subproc" else DummyVecEnv
    kwargs = {"start_method": "forkserver"} if kind == "subproc" else None
    return make_vec_env(_env_factory(config, 1), n_envs=n_envs, vec_env_cls=cls, vec_env_kwargs=kwargs)


def measure(
    kind: str, n_envs: int, seconds: float, config: EnvConfig, seed: int = 0, threads: int = 1, actions: str = "random"
) -> dict:
    """Steps per second of one vector env over ``seconds`` of stepping (after a reset), with
    seeded uniform random actions or all-zero ones (hyperparameters held at their start)."""
    torch.set_num_threads(threads)
    venv = make_venv(kind, n_envs, config)
    try:
        venv.seed(seed)
        venv.reset()
        rng = np.random.default_rng(seed)
        shape = (n_envs, *venv.action_space.shape)
        steps, episodes, start = 0, 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            a = rng.uniform(-1.0, 1.0, shape) if actions == "random" else np.zeros(shape)
            _, _, dones, _ = venv.step(a.astype(np.float32))
            steps += n_envs
            episodes += int(dones.sum())
        elapsed = time.perf_counter() - start
    finally:
        venv.close()
        torch.set_num_threads(1)
    return dict(kind=kind, actions=actions, n_envs=n_envs, steps=steps, episodes=episodes, seconds=round(elapsed, 2), steps_per_s=steps / elapsed)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="wall time per (kind, n_envs)")
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
    rows = []
    for actions in args.actions:
        for n in args.n_envs:
            for kind in args.kinds:
                threads = args.batched_threads if kind == "batched" else 1
                r = measure(kind, n, args.seconds, config, threads=threads, actions=actions)
                rows.append(r)
                print(
                    f"{actions:>6} actions {kind:>8} n_envs={n:>3}: {r['steps_per_s']:8.1f} steps/s "
                    f"({r['steps']} steps, {r['episodes']} episodes)",
                    flush=True,
                )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    table = {(r["actions"], r["kind"], r["n_envs"]): r["steps_per_s"] for r in rows}
    ratio = "batched" in args.kinds and len(args.kinds) > 1
    lines = [
        f"Environment steps per second (`python -m rlhpo.bench.vec_throughput --seconds {args.seconds:g}`; "
        f"{os.cpu_count()} cores; families {' '.join(args.families)} at budget scale {args.budget_scale:g}; "
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
