"""Environment steps per second of the vector environments under the shipped recipe.

For each workload (a set of meta-training families), each number of environments (4 and 16 by
default) and each kind (``dummy``, ``subproc``, ``batched``, ``ray``), builds the vector env
exactly as ``python -m rlhpo.train`` does (:func:`rlhpo.metatrain.trainer.make_vec`, the
defaults' environment: reference reward, cosine base schedule, sensible starts, the guard; tasks
at the recipe's budget scale 0.5; each kind's default options) and times ``reset`` plus
``episodes x n_intervals`` steps under seeded uniform random actions. The reference runs the
episodes need are trained inside the timed part (a fresh reference cache per measurement, as a
new meta-training run starts with), so they are counted. No policy is involved: this is the
environments' throughput, the part of meta-training the vector env decides.

Workloads: ``tiny`` = the three cheapest meta-training families by single-environment episode
time (docs/results/env_overhead.txt: robust_regression, digits_mlp, noisy_quadratic);
``median`` = the median one of the 13 (seq_recurrent, an LSTM: the batched env cannot stack
it and trains its networks one at a time).

    python -m bench.vec_throughput [--n-envs 4 16] [--kinds dummy subproc batched ray]
        [--workloads tiny median] [--episodes 2] [--out docs/results/vec_throughput]

Writes ``<out>.csv`` and ``<out>.md``. Construction (process, actor and Ray start) is not timed.
``subproc`` and ``ray`` run one process per environment with one torch thread each; ``dummy`` and
``batched`` run in this process with one torch thread.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

#: the families of each workload (see the module docstring)
WORKLOADS: dict[str, list[str]] = {
    "tiny": ["robust_regression", "digits_mlp", "noisy_quadratic"],
    "median": ["seq_recurrent"],
}
KINDS: tuple[str, ...] = ("dummy", "subproc", "batched", "ray")


def bench_config(kind: str, n_envs: int, families: list[str], seed: int = 0):
    """The meta-training configuration of one measurement: the defaults (the shipped recipe),
    ``families`` to sample from, ``n_envs`` environments of ``kind``."""
    from rlhpo.metatrain.config import TrainConfig

    cfg = TrainConfig(seed=seed, progress_bar=False)
    cfg.tasks.train_families = list(families)
    cfg.vec_env.kind, cfg.vec_env.n_envs = kind, n_envs
    cfg.ppo.batch_size = n_envs  # only n_steps * n_envs % batch_size is checked; PPO is not run
    return cfg.validate()


def measure(kind: str, n_envs: int, families: list[str], episodes: int = 2, seed: int = 0) -> dict:
    """Steps per second of one vector env over ``episodes`` episodes per environment."""
    from rlhpo.metatrain.trainer import make_vec

    torch.set_num_threads(1)
    cfg = bench_config(kind, n_envs, families, seed)
    with tempfile.TemporaryDirectory(prefix="rlhpo-refs-") as refs:
        cfg.env.reference_cache = refs  # as meta-training: shared by the workers, empty at the start
        venv = make_vec(cfg)
        try:
            rng = np.random.default_rng(seed)
            n_steps = episodes * cfg.env.n_intervals
            start = time.perf_counter()
            venv.reset()
            for _ in range(n_steps):
                venv.step(rng.uniform(-1.0, 1.0, (n_envs, 3)).astype(np.float32))
            elapsed = time.perf_counter() - start
        finally:
            venv.close()
        references = len(list(Path(refs).glob("*.json")))
    steps = n_steps * n_envs
    return dict(kind=kind, n_envs=n_envs, steps=steps, seconds=round(elapsed, 2), steps_per_s=round(steps / elapsed, 1),
                reference_runs=references)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-envs", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--episodes", type=int, default=2, help="episodes per environment in each measurement")
    ap.add_argument("--out", default="docs/results/vec_throughput")
    args = ap.parse_args(argv)
    load = [os.getloadavg()[0]]
    rows = []
    for workload in args.workloads:
        for n in args.n_envs:
            for kind in args.kinds:
                r = {"workload": workload, **measure(kind, n, WORKLOADS[workload], args.episodes)}
                rows.append(r)
                load.append(os.getloadavg()[0])
                print(f"{workload:>6} {kind:>8} n_envs={n:>3}: {r['steps_per_s']:8.1f} steps/s "
                      f"({r['steps']} steps in {r['seconds']} s, {r['reference_runs']} reference runs)", flush=True)
    write_report(rows, args, load)


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


def write_report(rows: list[dict], args: argparse.Namespace, load: list[float]) -> None:
    """The CSV and the markdown tables, beside ``args.out``."""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out.with_suffix(".md").write_text(report_text(rows, args.kinds, args.n_envs, args.workloads, args.episodes, load))
    print("\n" + out.with_suffix(".md").read_text())


def report_text(rows: list[dict], kinds: list[str], n_envs: list[int], workloads: list[str], episodes: int,
                load: list[float]) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Environment steps per second, `python -m bench.vec_throughput --episodes {episodes}` ({when}; {machine()}; "
        f"a machine shared with other jobs: 1-minute load average {min(load):.1f} to {max(load):.1f} during the run). "
        "The shipped recipe (reference reward, cosine base schedule, sensible starts, guard) at budget scale 0.5; "
        f"{episodes} episodes per environment; the reference runs are trained inside the timed part (their number in brackets).",
    ]
    return "\n".join(lines) + "\n" + tables(rows, kinds, n_envs, workloads)


def tables(rows: list[dict], kinds: list[str], n_envs: list[int], workloads: list[str]) -> str:
    """The markdown tables of ``rows`` (as in the CSV): steps/s (reference runs) per kind."""
    table = {(r["workload"], r["kind"], int(r["n_envs"])): r for r in rows}
    has_ratio = "batched" in kinds and "subproc" in kinds
    lines: list[str] = []
    for workload in workloads:
        lines += ["", f"**{workload}** ({', '.join(WORKLOADS[workload])})", "",
                  "| n_envs | " + " | ".join(kinds) + (" | batched / subproc |" if has_ratio else " |"),
                  "|---" * (len(kinds) + 1 + has_ratio) + "|"]
        for n in n_envs:
            cell = {k: table[(workload, k, n)] for k in kinds}
            cells = [f"{float(c['steps_per_s']):.1f} ({c['reference_runs']})" for c in cell.values()]
            if has_ratio:
                cells.append(f"{float(cell['batched']['steps_per_s']) / float(cell['subproc']['steps_per_s']):.2f}x")
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
