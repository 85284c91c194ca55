"""Information audit of the branching probes: does a probe's choice point where the lr grid's best is?

For every task, start and seed that both evaluations ran, the probes' total move of the lr level
(``lr_factor`` of the probe rule's runs: the product of the factors the probes kept) against the
``lr_grid`` row's best factor (the calibrated warm-up + cosine at x1/8 .. x8, picked by validation,
7x compute). Reported: how often the probes moved in the grid's direction (down, stay, up), the
confusion table, and the probe rule's test loss against a baseline's (``calibrated``: the rule
without probes, which it equals but for guard rollbacks) where the grid's headroom is above 3%.

    python -m bench.probe_audit PROBE_RUNS.csv GRID_RUNS.csv [--probe-method controller] [--baseline calibrated] [--out F.md]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Optional

import pandas as pd


def _direction(factor: float) -> str:
    if not math.isfinite(factor):
        return "n/a"
    return "down" if factor < 1 - 1e-9 else "up" if factor > 1 + 1e-9 else "stay"


def audit(probe: pd.DataFrame, grid: pd.DataFrame, method: str = "controller", baseline: str = "calibrated") -> str:
    keys = ["task", "start", "seed"]
    p = probe[(probe.method == method) & (probe.group == "main")][keys + ["lr_factor", "test_loss", "family"]]
    rule = probe[(probe.method == baseline) & (probe.group == "main")][keys + ["test_loss"]].rename(columns={"test_loss": "rule"})
    g = grid[grid.method == "lr_grid"][keys + ["lr_factor", "headroom"]].rename(columns={"lr_factor": "grid"})
    m = p.merge(g, on=keys).merge(rule, on=keys, how="left")
    if m.empty:
        raise SystemExit("probe_audit: no task, start and seed in common; run both on the same split and seeds")
    m["probe_dir"], m["grid_dir"] = m.lr_factor.map(_direction), m.grid.map(_direction)
    agree = (m.probe_dir == m.grid_dir).mean()
    moved = m[m.probe_dir != "stay"]
    right = (moved.probe_dir == moved.grid_dir).mean() if len(moved) else float("nan")
    table = pd.crosstab(m.grid_dir, m.probe_dir).reindex(index=["down", "stay", "up"], columns=["down", "stay", "up"], fill_value=0)
    lines = [
        f"{len(m)} task-seeds: the probes' direction is the grid's on {agree:.0%}; when the probes moved "
        f"({len(moved)}), in the grid's direction on {right:.0%}.",
        "",
        "| grid's best \\ probes' move | down | stay | up |",
        "|---|---|---|---|",
    ]
    for d in ("down", "stay", "up"):
        lines.append(f"| {d} | " + " | ".join(str(int(table.loc[d, c])) for c in ("down", "stay", "up")) + " |")
    big = m[m.headroom > 0.03].dropna(subset=["rule"])
    if len(big):
        r = big.test_loss / big.rule
        lines += ["", f"Where the grid's headroom is above 3% ({len(big)} task-seeds): the probe rule / {baseline}, median "
                  f"{r.median():.3f}, better on {int((r < 1).sum())}."]
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("probe_runs", type=Path)
    p.add_argument("grid_runs", type=Path)
    p.add_argument("--probe-method", default="controller")
    p.add_argument("--baseline", default="calibrated", help="the method the probe rule is compared with (in PROBE_RUNS)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    text = audit(pd.read_csv(a.probe_runs), pd.read_csv(a.grid_runs), a.probe_method, a.baseline)
    print(text)
    if a.out is not None:
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
