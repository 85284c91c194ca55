"""Merge two evaluations' runs: ``python -m rlhpo.evaluation.merge BASE.csv NEW.csv --keep optuna pbt --out OUT.csv``.

A new policy changes the controller's rows, not the searches': the expensive start-free searches
(Optuna, PBT: two thirds of the held-out evaluation's compute) need not run again. OUT holds
NEW's runs and, from BASE, only the runs of the methods named in ``--keep`` that NEW does not
have; the comparison columns (ratios to constant and to the best no-tuning baseline, headroom and
capture) are computed again over the merged runs. The kept runs' "examples to reach the
controller's final validation loss" referred to BASE's controller: it is blanked; so is their time
to result (``steps_to_target`` ... ``speedup_seconds``, measured against BASE's calibrated run),
unless ``calibrated`` is kept from BASE too. Both evaluations must cover the same tasks,
seeds and starts (checked). ``--rename controller=controller@v2`` first renames BASE's runs of a
method (its main runs only; its replay-group runs are dropped): the previous policy's runs kept
as its own row when the new evaluation reruns ``controller`` with a new policy.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from rlhpo.evaluation.frames import add_comparisons
from rlhpo.evaluation.ttr import COLUMNS as TTR_COLUMNS

KEYS = ["task", "seed", "start", "group"]
#: the columns add_comparisons computes over the merged runs
COMPARISONS = ("norm_test_loss", "best_no_tuning", "ratio_vs_best_no_tuning", "start_lr_log10_vs_optuna", "headroom", "capture")


def rename_methods(df: pd.DataFrame, rename: dict[str, str], what: str, which: str) -> pd.DataFrame:
    """``df`` (runs or histories) with each method ``old`` of ``rename`` called ``new`` (its main
    runs; its other groups dropped)."""
    for old, to in rename.items():
        if old not in set(df.method):
            raise SystemExit(f"merge: {what} {old}={to}: {old!r} is not in the {which} runs; allowed: {sorted(set(df.method))}")
        df = df[~((df.method == old) & (df.group != "main"))].copy()
        df.loc[df.method == old, "method"] = to
    return df


def edit_new(new: pd.DataFrame, drop: Sequence[str] = (), rename: Optional[dict[str, str]] = None,
             copy: Optional[dict[str, str]] = None) -> pd.DataFrame:
    """The new runs (or histories) as they enter the merge: ``drop``'s methods dropped, ``rename``'s
    renamed, ``copy``'s main runs also standing as another method."""
    for m in drop:
        if m not in set(new.method):
            raise SystemExit(f"merge: --drop-new {m}: not in the new runs; allowed: {sorted(set(new.method))}")
    new = rename_methods(new[~new.method.isin(drop)], rename or {}, "--rename-new", "new")
    for old, to in (copy or {}).items():
        if old not in set(new.method):
            raise SystemExit(f"merge: --copy-new {old}={to}: {old!r} is not in the new runs; allowed: {sorted(set(new.method))}")
        new = pd.concat([new, new[(new.method == old) & (new.group == "main")].assign(method=to)], ignore_index=True)
    return new


def merge_histories(base: pd.DataFrame, new: pd.DataFrame, keep: Sequence[str], rename: Optional[dict[str, str]] = None) -> pd.DataFrame:
    """The histories of :func:`merge`'s runs: NEW's, and BASE's of the kept methods (after ``rename``)."""
    base = rename_methods(base, rename or {}, "--rename", "base")
    return pd.concat([new, base[base.method.isin(keep) & ~base.method.isin(set(new.method))]], ignore_index=True)


def merge(base: pd.DataFrame, new: pd.DataFrame, keep: Sequence[str], rename: Optional[dict[str, str]] = None) -> pd.DataFrame:
    """NEW's runs plus BASE's runs of the methods in ``keep`` that NEW lacks (after ``rename``);
    comparisons recomputed."""
    base = rename_methods(base, rename or {}, "--rename", "base")
    missing = [m for m in keep if m not in set(base.method)]
    if missing:
        raise SystemExit(f"merge: --keep {missing}: not in the base runs; allowed: {sorted(set(base.method))}")
    taken = [m for m in keep if m in set(new.method)]
    if taken:
        raise SystemExit(f"merge: --keep {taken}: the new runs have them already; keep only methods the new evaluation did not run")
    b_tasks = set(map(tuple, base[base.group == "main"][["task", "seed", "start"]].drop_duplicates().to_numpy()))
    n_tasks = set(map(tuple, new[new.group == "main"][["task", "seed", "start"]].drop_duplicates().to_numpy()))
    kept = base[base.method.isin(keep)].copy()
    # the main runs kept must be on the new runs' tasks (a replay group's own seeds are not)
    k_tasks = set(map(tuple, kept[kept.group == "main"][["task", "seed", "start"]].drop_duplicates().to_numpy()))
    if not k_tasks <= n_tasks or not n_tasks <= b_tasks:
        raise SystemExit("merge: the two evaluations cover different tasks, seeds or starts; rerun with the base's configuration")
    kept["to_controller_final_val"] = float("nan")
    if "calibrated" not in keep:  # their time to result was measured against BASE's calibrated run
        for c in TTR_COLUMNS:
            if c in kept:
                kept[c] = float("nan")
    out = pd.concat([new, kept], ignore_index=True)
    drop = [c for c in COMPARISONS if c in out]
    return add_comparisons(out.drop(columns=drop))


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--keep", nargs="*", default=["optuna", "pbt"], help="methods of BASE to keep (none: only renames and copies of NEW)")
    p.add_argument("--rename", nargs="*", default=[], help="OLD=NEW: rename a method of the base runs first")
    p.add_argument("--rename-new", nargs="*", default=[], help="OLD=NEW: rename a method of the new runs first (main runs only)")
    p.add_argument("--copy-new", nargs="*", default=[], help="OLD=NEW: the new runs of OLD also stand as NEW (main runs)")
    p.add_argument("--drop-new", nargs="*", default=[],
                   help="methods whose new runs are dropped, e.g. to --keep BASE's identical calibrated runs and their time to result")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--histories", nargs=3, type=Path, default=None, metavar=("BASE_H", "NEW_H", "OUT_H"),
                   help="also merge the two evaluations' histories.csv the same way, into OUT_H")
    a = p.parse_args(argv)
    bad = [r for r in [*a.rename, *a.rename_new, *a.copy_new] if r.count("=") != 1]
    if bad:
        p.error(f"--rename/--rename-new/--copy-new {bad}: each must be OLD=NEW, e.g. controller=controller@v2")
    rename, rename_new, copy_new = (dict(r.split("=") for r in x) for x in (a.rename, a.rename_new, a.copy_new))
    new = edit_new(pd.read_csv(a.new), a.drop_new, rename_new, copy_new)
    df = merge(pd.read_csv(a.base), new, a.keep, rename)
    if a.histories is not None:  # read before anything is written: OUT_H may be BASE_H
        base_h, new_h, out_h = a.histories
        hist = merge_histories(pd.read_csv(base_h), edit_new(pd.read_csv(new_h), a.drop_new, rename_new, copy_new), a.keep, rename)
        hist.to_csv(out_h, index=False)
        print(f"[rlhpo] {len(hist)} history rows in {out_h}")
    df.to_csv(a.out, index=False)
    print(f"[rlhpo] {len(df)} runs ({', '.join(sorted(set(df.method)))}) in {a.out}")


if __name__ == "__main__":
    main()
