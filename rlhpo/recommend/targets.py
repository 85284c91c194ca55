"""The issue's three warm-start targets from evaluation runs: ``python -m rlhpo.recommend.targets
RUNS.csv [RUNS.csv ...]`` (the ``runs.csv`` of ``python -m rlhpo.evaluate``; several are
concatenated, e.g. one without and one with the policy methods; docs/warm-start.md's dev numbers come from
``docs/results/warm_start_dev_runs.csv``).

Every ratio is a test loss over another method's on the same task, start and seed (main runs
only); medians over task-seeds, and per family.

- T1, random starts: recommend_controller / optuna at <= 1.1x one run's compute (target <= 1.05);
- T2, sensible starts: recommend_controller / controller, per family (target <= 1 on every family,
  < 1 overall);
- T3: recommend_cosine (and recommend_constant) / lr_range_cosine (target < 1).
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

import pandas as pd

KEY = ["task", "family", "start", "seed"]


def table(df: pd.DataFrame) -> pd.DataFrame:
    """Test loss per (task, family, start, seed) x method, main runs only."""
    df = df[df.group == "main"].drop_duplicates(["task", "start", "method", "seed"])
    return df.pivot_table(index=KEY, columns="method", values="test_loss").reset_index()


def ratio(piv: pd.DataFrame, a: str, b: str, start: Optional[str] = None) -> pd.DataFrame:
    """Rows with both methods, and ``r`` = a's test loss / b's."""
    if a not in piv or b not in piv:
        return piv.iloc[0:0].assign(r=[])
    p = piv if start is None else piv[piv.start == start]
    p = p.dropna(subset=[a, b])
    return p.assign(r=p[a] / p[b])


def _line(name: str, x: pd.DataFrame, target: str) -> str:
    if not len(x):
        return f"{name}: no runs"
    fam = x.groupby("family").r.median().round(3).to_dict()
    return f"{name}: median {x.r.median():.3f} over {len(x)} task-seeds ({target}); per family {fam}"


def report(df: pd.DataFrame) -> str:
    piv = table(df)
    lines = ["median test loss / constant's, by start:"]
    for m in sorted(set(df.method)):
        cells = [f"{s} {ratio(piv, m, 'constant', s).r.median():.3f}" for s in ("sensible", "random") if len(ratio(piv, m, "constant", s))]
        lines.append(f"  {m:22s} " + "  ".join(cells))
    rc = df[(df.method == "recommend_controller") & (df.group == "main")]
    budget = df[(df.method == "constant") & (df.group == "main")].groupby("task").examples.first()
    if len(rc):
        lines.append(f"recommend_controller compute / one run's budget: max {(rc.compute_examples / rc.task.map(budget)).max():.3f}")
    lines.append(
        _line("T1 random: recommend_controller / optuna", ratio(piv, "recommend_controller", "optuna", "random"), "target <= 1.05")
    )
    lines.append(_line("T2 sensible: recommend_controller / controller", ratio(piv, "recommend_controller", "controller", "sensible"),
                       "target <= 1 on every family, < 1 overall"))
    for m in ("recommend_cosine", "recommend_constant"):
        lines.append(_line(f"T3 {m} / lr_range_cosine", ratio(piv, m, "lr_range_cosine"), "target < 1"))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="runs.csv files of python -m rlhpo.evaluate")
    a = p.parse_args(argv)
    print(report(pd.concat([pd.read_csv(f) for f in a.runs])))


if __name__ == "__main__":
    main()
