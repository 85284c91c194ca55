"""What ``python -m rlhpo.evaluate`` writes from its runs: the tables (runs.csv, histories.csv),
the markdown summary with its verdict, and the plots; and :func:`main`,
``python -m rlhpo.evaluation.report``, which rewrites them from a finished evaluation's runs.csv.

The work is done in :mod:`~rlhpo.evaluation.frames` (the tables), :mod:`~rlhpo.evaluation.stats`
(ratios, bootstrap intervals, win rates, time-to-target, profiles), :mod:`~rlhpo.evaluation.tables`
(the markdown and the README block) and :mod:`~rlhpo.evaluation.plots`; their public names are
re-exported here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from rlhpo.evaluation.frames import (
    RunRecord,
    add_comparisons,
    histories_frame,
    runs_frame,
    safe_name,
)
from rlhpo.evaluation.plots import plot, plot_anytime, plot_profiles
from rlhpo.evaluation.stats import BOOT_SEED, N_BOOT, compare, performance_profile
from rlhpo.evaluation.tables import (
    EXPLANATION,
    HEADLINE_BEGIN,
    HEADLINE_END,
    README_BEGIN,
    README_END,
    controller_table,
    family_table,
    headline_block,
    headline_table,
    loss_block,
    loss_table,
    losses_list,
    method_table,
    readme_block,
    readme_tables,
    summarize,
    update_headline,
    update_readme,
)

__all__ = [
    "BOOT_SEED",
    "EXPLANATION",
    "HEADLINE_BEGIN",
    "HEADLINE_END",
    "N_BOOT",
    "README_BEGIN",
    "README_END",
    "RunRecord",
    "add_comparisons",
    "compare",
    "controller_table",
    "family_table",
    "histories_frame",
    "loss_block",
    "loss_table",
    "losses_list",
    "main",
    "method_table",
    "performance_profile",
    "plot",
    "plot_anytime",
    "plot_profiles",
    "headline_block",
    "headline_table",
    "readme_block",
    "readme_tables",
    "runs_frame",
    "safe_name",
    "summarize",
    "update_headline",
    "update_readme",
]


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``python -m rlhpo.evaluation.report runs.csv [--page docs/evaluation.md] [--losses] [--readme README.md]
    [--plots DIR] [--anytime DIR [--histories histories.csv]]``: print the tables of a finished
    evaluation, write them into a documentation page (with ``--losses`` its per-task test-loss block
    too) and the headline table into the README, redraw the profile plots, draw the anytime view
    (validation loss against optimizer steps per task, from the evaluation's histories.csv)."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("csv", type=Path)
    p.add_argument("--page", type=Path, default=None, help="the documentation page whose generated block gets every table")
    p.add_argument("--losses", action="store_true", help="also write the per-task test-loss block into --page")
    p.add_argument("--readme", type=Path, default=None, help="the README whose headline table is replaced")
    p.add_argument("--plots", type=Path, default=None, help="write performance_profile_<start>.png here")
    p.add_argument("--anytime", type=Path, default=None, help="write <task>_anytime.png here (validation loss vs optimizer steps)")
    p.add_argument("--histories", type=Path, default=None, help="the histories for --anytime (default: histories.csv beside the CSV)")
    a = p.parse_args(argv)
    if not a.csv.is_file():  # one line, not pandas' traceback
        raise SystemExit(f"[rlhpo] error: {a.csv}: no such file; give the runs.csv of a finished evaluation "
                         "(python -m rlhpo.evaluate writes it in its run folder; the committed one is docs/results/evaluate_runs.csv)")
    histories = a.histories or a.csv.parent / "histories.csv"
    if a.anytime is not None and not histories.is_file():
        p.error(f"--anytime needs the evaluation's histories: {histories} does not exist (pass --histories PATH)")
    df = pd.read_csv(a.csv)
    if a.page is not None:
        update_readme(a.csv, a.page, losses=a.losses)
    if a.readme is not None:
        update_headline(a.csv, a.readme)
    if a.plots is not None:
        plot_profiles(df, a.plots)
    if a.anytime is not None:
        try:
            paths = plot_anytime(pd.read_csv(histories), a.anytime)
        except ValueError as e:
            p.error(f"{histories}: {e}")
        print(f"[rlhpo] {len(paths)} anytime plot(s) in {a.anytime}")
    print(readme_tables(df))


if __name__ == "__main__":
    main()
