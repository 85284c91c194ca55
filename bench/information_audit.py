"""Information audit (issue 23): do the controller's observations say whether the lr is too high
or too low *now*?

On branched runs: a task trains at its start's hyperparameters (the decision path's interval
clock, its features); at several points of the budget the run is snapshotted and continued twice,
with the lr x2 and x0.5, for ``horizon`` intervals. The label is which branch has the lower
validation loss then. Each observation feature (the policy's feature set, version 2) and one
candidate, a short look-ahead probe (a quarter interval at each lr from the snapshot, its
validation-loss gap; counted here, it would cost budget in a run), is scored by how well it
ranks the branches: AUC (0.5: no information; a feature predictive either way scores
max(AUC, 1 - AUC)), and all features together by a logistic regression scored leave-one-task-out
against the majority class.

The gradient noise scale (issue 33): a second candidate, ``log_noise_ratio`` = log2(B_noise / B)
(:class:`rlhpo.control.batch_rule.NoiseScale` over the intervals so far, clipped to +-5), is scored
on the lr label and on a batch label: from the same snapshot the run continues at twice the batch
(lr x sqrt(2) for Adam-like optimizers, x2 for SGD, the batch rule's scaling) and at the batch as
it is, to the same examples; ``double_ok`` is 1 when the doubled batch's validation loss is within
1% of the other's (McCandlish et al.: true where B is well below B_noise).

    python -m bench.information_audit --families dev --seeds 6 --out docs/results/information_audit.md

Development split only (``dev``): this is a design measurement for the next policy.
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import time
from pathlib import Path

import numpy as np
import torch

from rlhpo.control.batch_rule import BatchRuleConfig, NoiseScale
from rlhpo.control.decision import interval_end
from rlhpo.control.features import FEATURE_NAMES, FeatureExtractor
from rlhpo.tasks import make_family, resolve_families
from rlhpo.tasks.base import Hyperparams
from rlhpo.training.session import TrainingSession

N_INTERVALS = 20
BRANCH_AT = (2, 5, 8, 11, 14)  # after these intervals (0-based) of N_INTERVALS
FACTOR = 2.0


def _val_after(session: TrainingSession, state: dict, hp: Hyperparams, until: int) -> float:
    session.load_state_dict(copy.deepcopy(state))
    session.set_hparams(hp)
    session.train_until(until)
    return session.evaluate("val")[0]


def audit_task(task, seed: int, horizon: int) -> list[dict]:
    """One task's branch points: features, probe gap and label."""
    torch.manual_seed(seed)
    start = task.default_hparams
    session = TrainingSession(task, start, seed=seed)
    session.monitor.noise = True  # the gradient noise scale, a candidate
    features = FeatureExtractor()
    features.reset(start.lr, start.batch_size, start.weight_decay, task.optimizer != "sgd")
    budget, rows = task.budget_examples, []
    noise = NoiseScale()
    for k in range(N_INTERVALS):
        stats = session.train_until(interval_end(budget, N_INTERVALS, k))
        b_noise = noise.update(stats.noise_trace, stats.noise_signal)
        val = session.evaluate("val")[0]
        obs = features.observe(stats, val, start.lr, start.batch_size, start.weight_decay, session.examples_seen / budget, (0, 0, 0))
        if k not in BRANCH_AT or not math.isfinite(val):
            continue
        state = copy.deepcopy(session.state_dict())
        up = Hyperparams(start.lr * FACTOR, start.batch_size, start.weight_decay)
        down = Hyperparams(start.lr / FACTOR, start.batch_size, start.weight_decay)
        later = interval_end(budget, N_INTERVALS, min(k + horizon, N_INTERVALS - 1))
        probe = session.examples_seen + max(1, (interval_end(budget, N_INTERVALS, k + 1) - session.examples_seen) // 4)
        v_up, v_down = _val_after(session, state, up, later), _val_after(session, state, down, later)
        p_up, p_down = _val_after(session, state, up, probe), _val_after(session, state, down, probe)
        lr_up = BatchRuleConfig().lr_factor(2, task.optimizer != "sgd")
        v_same = _val_after(session, state, start, later)
        v_double = _val_after(session, state, Hyperparams(start.lr * lr_up, 2 * start.batch_size, start.weight_decay), later)
        session.load_state_dict(state)
        session.set_hparams(start)
        if not (math.isfinite(v_up) or math.isfinite(v_down)):
            continue
        row = dict(family=task.family, task=task.name, seed=seed, interval=k, up_better=int(v_up < v_down or not math.isfinite(v_down)))
        row.update({name: float(v) for name, v in zip(FEATURE_NAMES, obs)})
        gap = p_up - p_down if math.isfinite(p_up) and math.isfinite(p_down) else (-1.0 if math.isfinite(p_up) else 1.0)
        row["probe_val_gap"] = float(np.sign(gap) * math.log1p(abs(gap) / max(abs(val), 1e-8)))
        ratio = b_noise / start.batch_size if math.isfinite(b_noise) or b_noise == math.inf else 1.0
        row["log_noise_ratio"] = float(np.clip(math.log2(max(ratio, 1e-6)), -5.0, 5.0))
        row["double_ok"] = int(math.isfinite(v_double) and (not math.isfinite(v_same) or v_double <= v_same + 0.01 * abs(v_same)))
        rows.append(row)
    return rows


def auc(score: np.ndarray, label: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = score[label == 1], score[label == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


def summarise(rows: list[dict]) -> str:
    from sklearn.linear_model import LogisticRegression  # here: the bench needs the full install

    names = [n for n in rows[0] if n not in ("family", "task", "seed", "interval", "up_better", "double_ok")]
    y = np.array([r["up_better"] for r in rows])
    lines = [
        f"{len(rows)} branch points on {len({r['task'] for r in rows})} tasks ({', '.join(sorted({r['family'] for r in rows}))}); "
        f"lr x{FACTOR:g} better than x{1 / FACTOR:g} at {y.mean():.0%} of them.",
        "",
        "| feature | AUC | information max(AUC, 1-AUC) |",
        "|---|---|---|",
    ]
    scored = []
    for n in names:
        a = auc(np.array([r[n] for r in rows]), y)
        scored.append((max(a, 1 - a) if math.isfinite(a) else float("nan"), n, a))
    for info, n, a in sorted(scored, key=lambda t: -t[0] if math.isfinite(t[0]) else 0):
        lines.append(f"| {n} | {a:.3f} | {info:.3f} |")
    tasks = sorted({r["task"] for r in rows})
    candidates = [c for c in ("probe_val_gap", "log_noise_ratio") if c in names]
    models = [("all policy features (v2)", [n for n in names if n not in candidates])]
    models += [(f"policy features + {what}", [n for n in names if n not in candidates or n == c])
               for c, what in (("probe_val_gap", "probe"), ("log_noise_ratio", "noise scale")) if c in candidates]
    for label, cols in models:
        x = np.array([[r[n] for n in cols] for r in rows])
        hits = []
        for t in tasks:  # leave one task out: no task's own branch points inform its prediction
            test = np.array([r["task"] == t for r in rows])
            if len(set(y[~test])) < 2:
                hits += list(y[test] == int(y[~test].mean() > 0.5))
                continue
            model = LogisticRegression(max_iter=1000).fit(x[~test], y[~test])
            hits += list(model.predict(x[test]) == y[test])
        lines.append("")
        lines.append(f"{label}, logistic regression, leave-one-task-out accuracy: {np.mean(hits):.3f} "
                     f"(majority class: {max(y.mean(), 1 - y.mean()):.3f})")
    if "double_ok" not in rows[0]:
        return "\n".join(lines)
    d = np.array([r["double_ok"] for r in rows])
    lines += ["", f"The batch label: doubling the batch (the batch rule's lr scaling) costs at most 1% of validation loss "
              f"at {d.mean():.0%} of the branch points.", "",
              "| feature | AUC for double_ok | information |", "|---|---|---|"]
    for n in [n for n in ("log_noise_ratio", "progress", "log_loss_noise", "log_grad_norm_ratio", "update_cosine") if n in names]:
        a = auc(np.array([r[n] for r in rows]), d)
        lines.append(f"| {n} | {a:.3f} | {max(a, 1 - a):.3f} |")
    lines.append("")
    for threshold in (4.0, BatchRuleConfig().threshold):  # the rule's default, and half of it
        at = math.log2(threshold)
        ok = [r["double_ok"] for r in rows if r["log_noise_ratio"] >= at]
        rest = [r["double_ok"] for r in rows if r["log_noise_ratio"] < at]
        lines.append(f"Where B_noise >= {threshold:g} B: {len(ok)} branch points, doubling within 1% at "
                     f"{np.mean(ok) if ok else float('nan'):.0%} of them; elsewhere at {np.mean(rest) if rest else float('nan'):.0%}.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", default="dev", help="family names or groups (default: dev)")
    p.add_argument("--seeds", type=int, default=6)
    p.add_argument("--horizon", type=int, default=3, help="intervals after the branch point to compare at")
    p.add_argument("--out", type=Path, default=None, help="write the markdown report here (and a .csv beside it)")
    args = p.parse_args()
    torch.set_num_threads(1)
    t0, rows = time.perf_counter(), []
    for name in resolve_families(args.families):
        family = make_family(name)
        for seed in range(args.seeds):
            rows += audit_task(family.sample(seed), seed, args.horizon)
    report = summarise(rows)
    header = (f"Information audit, `python -m bench.information_audit --families {args.families} --seeds {args.seeds} "
              f"--horizon {args.horizon}`: {time.perf_counter() - t0:.0f} s on a shared 2-core CPU.\n\n")
    print(header + report)
    if args.out is not None:
        args.out.write_text(header + report + "\n")
        with open(args.out.with_suffix(".csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
