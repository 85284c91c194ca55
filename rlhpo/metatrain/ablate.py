"""Recipe ablations on the ``dev`` held-out split: ``python -m rlhpo.metatrain.ablate``.

Each variant is the shipped recipe (controller v3, the schemas' defaults) with one thing changed,
meta-trained with the same (small) PPO budget, then evaluated with its open-loop replay on the
``dev`` families (never ``final``) from both start regimes against the no-tuning baselines, which
run once. One row per variant in ``ablations.md`` / ``ablations.csv``:

* test-loss ratio to constant, to warm-up + cosine, to the calibrated default and to the best
  no-tuning baseline (chosen per task-seed by validation loss): median and wins, sensible starts;
* the same against the best no-tuning baseline from random starts;
* closed loop vs its own open-loop replay (the feedback's worth);
* the freezing exploit: median final lr over the start's lr and final batch size over the start's;
* median wall-clock over constant's at the same example budget (constant runs again beside each
  variant's controller: wall seconds are comparable only within one run of jobs); diverged runs.

Resumable: a variant whose ``policy/`` exists is not trained again (an interrupted one resumes
from its last checkpoint), and the evaluations resume from their ``results.jsonl``.

Examples::

    python -m rlhpo.metatrain.ablate --steps 12288 --out runs/ablations
    python -m rlhpo.metatrain.ablate --variants v2 reward_delta --steps 4096 --out /tmp/abl
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from rlhpo.control.spec import FEATURE_NAMES_V1
from rlhpo.evaluation.config import NO_TUNING

#: variant -> Hydra overrides of ``python -m rlhpo.train`` (the v3 recipe is the defaults)
VARIANTS: dict[str, list[str]] = {
    "v3": [],
    # v3's two new pieces off, one at a time, and both (= the v2 recipe)
    "prior_user": ["env.prior=user"],
    "no_trust_region": ["env.guard.max_lr_ratio=null"],
    "v2": ["env.prior=user", "env.guard.max_lr_ratio=null"],
    "reward_delta": ["env.reward=delta"],
    "no_base_schedule": ["env.base_schedule=none"],
    "starts_wide": ["env.sensible_fraction=0.0"],
    "families_v1": ["tasks.train_families=[synthetic_classification,teacher_student,noisy_quadratic,digits_mlp]"],
    "features_v1": [f"env.feature_names=[{','.join(FEATURE_NAMES_V1)}]"],
    "batch_may_shrink": ["env.actions.batch_size.min_start_ratio=null"],
    "no_batch_control": ["env.actions.batch_size.enabled=false"],
    "recurrent": ["policy=recurrent"],
}
#: policies evaluated as they are (no training): the shipped v1 policy
FIXED: dict[str, str] = {"v1_shipped": "v1", "v2_shipped": "v2"}
#: the no-tuning baselines, run once
BASELINES = list(NO_TUNING)


def train_variant(name: str, steps: int, out: Path, seed: int) -> Path:
    run_dir = out / name
    policy = run_dir / "policy"
    if (policy / "spec.json").exists():
        return policy
    ckpt = run_dir / "checkpoints"
    if ckpt.exists() and any(ckpt.rglob("*.zip")):  # interrupted: go on from the last checkpoint
        cmd = [sys.executable, "-m", "rlhpo.train", f"resume={run_dir}", f"hydra.run.dir={run_dir}"]
    else:
        cmd = [
            sys.executable, "-m", "rlhpo.train", "+experiment=default", f"total_timesteps={steps}",
            f"checkpoint_every={max(steps // 4, 1024)}", "eval_every=0", "progress_bar=false",
            f"seed={seed}", f"hydra.run.dir={run_dir}", *VARIANTS[name],
        ]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return policy


def evaluate(policy: Optional[str], methods: list[str], out: Path, n_tasks: int, seeds: int, n_jobs: int) -> pd.DataFrame:
    from rlhpo.evaluation.config import EvaluateConfig
    from rlhpo.evaluation.jobs import run

    cfg = EvaluateConfig(
        methods=methods, families=["dev"], n_tasks=n_tasks, seeds=seeds, policy=policy or "default", n_jobs=n_jobs
    )
    return run(cfg, out)


def _ratios(ctrl: pd.DataFrame, other: pd.DataFrame) -> np.ndarray:
    key = ["task", "start", "seed"]
    m = ctrl.merge(other, on=key, suffixes=("", "_o"))
    return (m["test_loss"] / m["test_loss_o"]).to_numpy()


def _best_no_tuning(base: pd.DataFrame) -> pd.DataFrame:
    """Per task-seed and start, the baseline row with the lowest final validation loss."""
    b = base[base["method"].isin(BASELINES)].copy()
    b["final_val_loss"] = b["final_val_loss"].fillna(np.inf)
    return b.loc[b.groupby(["task", "start", "seed"])["final_val_loss"].idxmin()]


def _cell(r: np.ndarray) -> str:
    r = r[np.isfinite(r)]
    return f"{np.median(r):.3f} ({int((r < 1).sum())}/{len(r)})" if len(r) else "-"


def row(name: str, runs: pd.DataFrame, base: pd.DataFrame) -> dict:
    """One variant's row (see the module docstring)."""
    ctrl, replay = runs[runs["method"] == "controller"], runs[runs["method"] == "replay"]
    best = _best_no_tuning(base)
    out = {"variant": name}
    sens = ctrl[ctrl["start"] == "sensible"]
    for method in ("constant", "cosine", "calibrated"):
        out[f"vs {method} (sensible)"] = _cell(_ratios(sens, base[base["method"] == method]))
    out["vs best no-tuning (sensible)"] = _cell(_ratios(sens, best))
    out["vs best no-tuning (random)"] = _cell(_ratios(ctrl[ctrl["start"] == "random"], best))
    rp = replay.assign(seed=replay["seed"] % 1000)
    out["closed vs replay"] = _cell(_ratios(ctrl, rp))
    out["final lr / start"] = f"{np.median(ctrl['lr_last'] / ctrl['start_lr']):.3g}"
    out["final batch / start"] = f"{np.median(ctrl['batch_size_last'] / ctrl['start_batch_size']):.3g}"
    # wall seconds: against constant run beside the controller (same machine load), if there
    const = runs[runs["method"] == "constant"] if (runs["method"] == "constant").any() else base[base["method"] == "constant"]
    w = ctrl.merge(const, on=["task", "start", "seed"], suffixes=("", "_o"))
    out["wall / constant"] = f"{np.median(w['wall_s'] / w['wall_s_o']):.2f}"
    out["steps / constant"] = f"{np.median(w['steps'] / w['steps_o']):.2f}"
    out["diverged"] = int(ctrl["diverged"].sum())
    return out


def table_text(allruns: pd.DataFrame) -> str:
    """The ablation table from every run (a ``variant`` column; the baselines as ``baselines``)."""
    base = allruns[allruns["variant"] == "baselines"]
    names = [v for v in dict.fromkeys(allruns["variant"]) if v != "baselines"]
    table = pd.DataFrame([row(v, allruns[allruns["variant"] == v], base) for v in names])
    return markdown(table)


def markdown(table: pd.DataFrame) -> str:
    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Meta-train each recipe variant and compare them on the dev split."""
    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--variants", nargs="*", default=list(VARIANTS) + list(FIXED), help=f"from {list(VARIANTS) + list(FIXED)}")
    p.add_argument("--steps", type=int, default=12288, help="PPO environment steps per variant")
    p.add_argument("--out", type=Path, default=Path("runs/ablations"))
    p.add_argument("--n-tasks", type=int, default=3)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--n-jobs", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--extra", nargs="*", default=[], help="name=path: more trained policies to add as rows")
    p.add_argument("--table", type=Path, default=None, help="also write the table here (markdown)")
    args = p.parse_args(argv)
    unknown = [v for v in args.variants if v not in VARIANTS and v not in FIXED]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; allowed: {list(VARIANTS) + list(FIXED)}")
    args.out.mkdir(parents=True, exist_ok=True)
    base = evaluate(None, BASELINES, args.out / "baselines", args.n_tasks, args.seeds, args.n_jobs)
    policies = {v: (FIXED[v] if v in FIXED else None) for v in args.variants}
    policies.update(dict(e.split("=", 1) for e in args.extra))
    frames = [base.assign(variant="baselines")]
    for name, policy in policies.items():
        path = policy or str(train_variant(name, args.steps, args.out, args.seed))
        # constant again beside the controller: wall seconds compare only within one run of jobs
        runs = evaluate(path, ["constant", "controller", "replay"], args.out / f"eval_{name}", args.n_tasks, args.seeds, args.n_jobs)
        frames.append(runs.assign(variant=name))
        allruns = pd.concat(frames, ignore_index=True)
        allruns.to_csv(args.out / "ablations_runs.csv", index=False)
        text = table_text(allruns)
        (args.out / "ablations.md").write_text(text)
        if args.table:
            args.table.write_text(text)
            allruns.to_csv(args.table.with_name(f"{args.table.stem}_runs.csv"), index=False)
        print(text, flush=True)


if __name__ == "__main__":
    main()
