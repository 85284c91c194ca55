"""How to probe: branching-probe settings against the rule they start from, on the ``dev`` split.

Each setting (a :class:`~rlhpo.control.probe.ProbeConfig`) runs the rule with probes
(``policy="probe"`` with that setting) on every task, start and seed of the dev split, through the
evaluation runner; the rule itself (every action zero: the calibrated warm-up + cosine, guarded) is
the baseline, run on the same tasks, starts and seeds. Reported per setting: task-seeds won,
median and mean test-loss ratio to the rule, the worst ratio, each family's median, and the share
of the budget on branches not kept. The defaults of ``ProbeConfig`` are chosen from this table.

    python -m bench.probe_sweep [--jobs 2] [--out docs/results/probe_sweep.md]
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from multiprocessing import Pool
from pathlib import Path
from typing import Optional

#: the settings compared, each overriding the defaults (``{}``: the defaults themselves); the first
#: probes but never moves (margin 0.99): what the probes cost alone
SETTINGS: tuple[dict, ...] = (
    {"margin": 0.99},
    {"at": [2, 5, 9], "length": 0.015, "margin": 0.0},
    {"at": [2, 5, 9], "length": 0.015, "margin": 0.03},
    {"at": [2], "factors": [1.0, 0.25, 4.0], "margin": 0.03},
    {"at": [2, 5, 9], "factors": [1.0, 0.5], "length": 0.015, "margin": 0.02},
    {"cooldown": 0.01},  # no cooldown: the short-horizon comparison as it is
    {"cooldown": 1.0},  # each branch one linear decay
    {"at": [2], "length": 0.03},  # longer branches: less of the short-horizon bias, more cost
    {"at": [3], "length": 0.02, "margin": 0.0},
    {"at": [2, 5], "length": 0.02},
    {},
)


def _run(args: tuple) -> tuple[str, tuple, float, int]:
    import torch

    from rlhpo.control.probe import ProbeConfig
    from rlhpo.evaluation.runner import ControllerSchedule, run_task
    from rlhpo.policy.artifact import load_artifact

    torch.set_num_threads(1)
    spec, seed, setting, n_intervals = args
    artifact = load_artifact("rule")
    if setting is not None:
        artifact = replace(artifact, probe=ProbeConfig(**json.loads(setting)))
    schedule = ControllerSchedule(artifact)
    result = run_task(spec.make(), schedule, seed=seed, n_intervals=n_intervals)
    spent = schedule.notes().get("probe_examples", 0)
    return setting or "rule", (spec.family, spec.seed, spec.start, seed), result.test_loss, spent / max(result.examples, 1)


def main(argv: Optional[list[str]] = None) -> None:
    import logging

    from rlhpo.control.probe import ProbeConfig
    from rlhpo.evaluation.config import EvaluateConfig
    from rlhpo.evaluation.jobs import TaskSpec

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--n-tasks", type=int, default=5)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    args = p.parse_args(argv)
    logging.getLogger("rlhpo").setLevel(logging.ERROR)
    c = EvaluateConfig()
    specs = [TaskSpec(f, c.task_seed_start + i, 1.0, s) for f in ("algorithmic_seq", "friedman_resmlp", "count_poisson")
             for i in range(args.n_tasks) for s in ("sensible", "random")]
    settings = [None] + [json.dumps(s, sort_keys=True) for s in SETTINGS]
    work = [(spec, k, s, c.n_intervals) for s in settings for spec in specs for k in range(args.seeds)]
    with Pool(args.jobs) as pool:
        out = pool.map(_run, work, chunksize=1)
    rule = {key: loss for name, key, loss, _ in out if name == "rule"}
    lines = [
        f"python -m bench.probe_sweep --n-tasks {args.n_tasks} --seeds {args.seeds}   (dev split: algorithmic_seq, "
        f"friedman_resmlp, count_poisson; sensible and random starts; {len(rule)} task-seeds; test loss / the rule's; "
        "each setting overrides the defaults)",
        "",
        "| setting | won | median | mean | worst | algorithmic_seq | count_poisson | friedman_resmlp | budget on branches not kept |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in settings[1:]:
        rows = [(key, loss / rule[key], share) for name, key, loss, share in out if name == s]
        ratios = [r for _, r, _ in rows]
        fam = {f: statistics.median([r for key, r, _ in rows if key[0] == f])
               for f in ("algorithmic_seq", "count_poisson", "friedman_resmlp")}
        label = f"defaults: {json.dumps(ProbeConfig().to_dict())}" if s == "{}" else s
        lines.append(
            f"| `{label}` | {sum(r < 1 for r in ratios)}/{len(ratios)} | {statistics.median(ratios):.4f} | "
            f"{statistics.fmean(ratios):.4f} | {max(ratios):.3f} | "
            + " | ".join(f"{fam[f]:.4f}" for f in fam)
            + f" | {statistics.fmean(sh for _, _, sh in rows):.1%} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
