"""How to probe, when to grow the batch: settings of the rule's two additions against the rule
they start from, on the ``dev`` split; and the lr estimate's settings (``--kind estimate``)
against the batch rule it adds to.

Each setting (a :class:`~rlhpo.control.probe.ProbeConfig` with ``--kind probe``, a
:class:`~rlhpo.control.batch_rule.BatchRuleConfig` with ``--kind batch``) runs the rule with that
addition (``policy="probe"`` / ``"batch"`` with that setting) on every task, start and seed of the
dev split, through the evaluation runner; the rule itself (every action zero: the calibrated
warm-up + cosine, guarded) is the baseline, run on the same tasks, starts and seeds. Reported per
setting: task-seeds won, median and mean test-loss ratio to the rule, the worst ratio, each
family's median, and the share of the budget on branches not kept (probes) or the median ratio of
optimizer steps to the rule's (batch). The defaults of each config are chosen from its table.

    python -m bench.probe_sweep [--kind probe|batch] [--jobs 2] [--out docs/results/probe_sweep.md]
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
from dataclasses import replace
from multiprocessing import Pool
from pathlib import Path
from typing import Optional

#: the probe settings compared, each overriding the defaults (``{}``: the defaults themselves); the
#: first probes but never moves (margin 0.99): what the probes cost alone
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
#: the batch-rule settings compared, each overriding the defaults (threshold 8, min_steps 500): the
#: thresholds and the lr's move without the steps floor first (how the defaults were found), then
#: around the defaults
BATCH_SETTINGS: tuple[dict, ...] = (
    {"min_steps": 0, "threshold": 4.0},
    {"min_steps": 0, "threshold": 4.0, "lr_scaling": "none"},
    {"min_steps": 0},
    {"min_steps": 0, "lr_scaling": "none"},
    {"min_steps": 0, "threshold": 16.0},
    {"min_steps": 0, "threshold": 16.0, "lr_scaling": "none"},
    {"min_steps": 0, "threshold": 4.0, "max_factor": 4},
    {"min_steps": 0, "after": 4},
    {"min_steps": 0, "threshold": 4.0, "max_fraction": 0.03125},
    {"min_steps": 0, "max_fraction": 0.03125},
    {"min_steps": 0, "max_fraction": 0.0625},
    {"threshold": 4.0},
    {"min_steps": 1000},
    {"lr_scaling": "none"},
    {},
)
#: the lr-estimate settings compared (``--kind estimate``, against the batch rule it adds to): the
#: stretch's length and how settled the estimate must be
ESTIMATE_SETTINGS: tuple[dict, ...] = (
    {"fraction": 0.1, "settle": 1.5},
    {"fraction": 0.15},
    {"fraction": 0.15, "settle": 1.5},
    {"fraction": 0.1},
    {},
)


def _run(args: tuple) -> tuple[str, tuple, float, int]:
    import torch

    from rlhpo.control.probe import ProbeConfig
    from rlhpo.evaluation.runner import ControllerSchedule, run_task
    from rlhpo.policy.artifact import load_artifact

    torch.set_num_threads(1)
    from rlhpo.control.batch_rule import BatchRuleConfig
    from rlhpo.control.lr_estimate import EstimateConfig

    spec, seed, setting, n_intervals, kind = args
    artifact = load_artifact("batch" if kind == "estimate" else "rule")
    if setting is not None and kind == "estimate":
        artifact = replace(load_artifact("estimate"), lr_estimate=EstimateConfig(**json.loads(setting)))
    elif setting is not None and kind == "probe":
        artifact = replace(artifact, probe=ProbeConfig(**json.loads(setting)))
    elif setting is not None:
        artifact = replace(artifact, batch_rule=BatchRuleConfig(**json.loads(setting)))
    schedule = ControllerSchedule(artifact)
    result = run_task(spec.make(), schedule, seed=seed, n_intervals=n_intervals)
    notes = schedule.notes()
    other = {"probe": notes.get("probe_examples", 0) / max(result.examples, 1), "batch": result.steps,
             "estimate": float(bool(notes.get("estimate_settled")))}[kind]
    return setting or ("batch" if kind == "estimate" else "rule"), (spec.family, spec.seed, spec.start, seed), result.test_loss, other


def main(argv: Optional[list[str]] = None) -> None:
    import logging

    from rlhpo.control.batch_rule import BatchRuleConfig
    from rlhpo.control.lr_estimate import EstimateConfig
    from rlhpo.control.probe import ProbeConfig
    from rlhpo.evaluation.config import EvaluateConfig
    from rlhpo.evaluation.jobs import TaskSpec
    from rlhpo.tasks import resolve_families

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=("probe", "batch", "estimate"), default="probe")
    p.add_argument("--families", nargs="*", default=["dev"], help="families or groups (default: dev; the workloads: workloads_dev)")
    p.add_argument("--starts", nargs="*", default=["sensible", "random"])
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--n-tasks", type=int, default=5)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    p.add_argument("--runs", type=Path, default=None, help="also write every run here (csv)")
    p.add_argument("--only", nargs="*", default=None, help="run only these settings (JSON, as in the table)")
    args = p.parse_args(argv)
    logging.getLogger("rlhpo").setLevel(logging.ERROR)
    c = EvaluateConfig()
    families = resolve_families(args.families)
    specs = [TaskSpec(f, c.task_seed_start + i, 1.0, s) for f in families for i in range(args.n_tasks) for s in args.starts]
    batch = args.kind == "batch"
    table = {"probe": SETTINGS, "batch": BATCH_SETTINGS, "estimate": ESTIMATE_SETTINGS}[args.kind]
    settings = [None] + [json.dumps(s, sort_keys=True) for s in table]
    if args.only is not None:
        settings = [None] + [json.dumps(json.loads(s), sort_keys=True) for s in args.only]
    work = [(spec, k, s, c.n_intervals, args.kind) for s in settings for spec in specs for k in range(args.seeds)]
    with Pool(args.jobs) as pool:
        out = pool.map(_run, work, chunksize=1)
    if args.runs is not None:
        import csv

        with open(args.runs, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["setting", "family", "task_seed", "start", "seed", "test_loss", "other"])
            w.writerows([name, *key, loss, other] for name, key, loss, other in out)
    base = "batch" if args.kind == "estimate" else "rule"  # what the settings are compared with
    rule = {key: loss for name, key, loss, _ in out if name == base}
    rule_steps = {key: steps for name, key, _, steps in out if name == base}
    last = {"probe": "budget on branches not kept", "batch": "steps / the rule's (median)", "estimate": "estimate settled"}[args.kind]
    lines = [
        f"python -m bench.probe_sweep --kind {args.kind} --families {' '.join(args.families)} --starts {' '.join(args.starts)} "
        f"--n-tasks {args.n_tasks} --seeds {args.seeds}"
        + ("" if args.only is None else " --only " + " ".join(shlex.quote(o) for o in args.only))
        + f"   ({', '.join(families)}; {' and '.join(args.starts)} starts; "
        f"{len(rule)} task-seeds; test loss / the {'batch rule' if base == 'batch' else 'rule'}'s; each setting overrides the defaults)",
        "",
        f"| setting | won | median | mean | worst | {' | '.join(sorted(families))} | {last} |",
        "|---|---|---|---|---|" + "---|" * len(families) + "---|",
    ]
    for s in settings[1:]:
        rows = [(key, loss / rule[key], other / rule_steps[key] if batch else other) for name, key, loss, other in out if name == s]
        ratios = [r for _, r, _ in rows]
        fam = {f: statistics.median([r for key, r, _ in rows if key[0] == f]) for f in sorted(families)}
        default = {"probe": ProbeConfig, "batch": BatchRuleConfig, "estimate": EstimateConfig}[args.kind]()
        label = f"defaults: {json.dumps(default.to_dict())}" if s == "{}" else s
        lines.append(
            f"| `{label}` | {sum(r < 1 for r in ratios)}/{len(ratios)} | {statistics.median(ratios):.4f} | "
            f"{statistics.fmean(ratios):.4f} | {max(ratios):.3f} | "
            + " | ".join(f"{fam[f]:.4f}" for f in fam)
            + (f" | {statistics.median(o for _, _, o in rows):.3f} |" if batch else
               f" | {sum(o for _, _, o in rows):.0f}/{len(rows)} |" if args.kind == "estimate" else
               f" | {statistics.fmean(o for _, _, o in rows):.1%} |")
        )
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
