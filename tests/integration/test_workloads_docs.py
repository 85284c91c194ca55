"""docs/workloads.md's result tables are regenerated from the committed full-length workloads runs
CSV and must be on the page verbatim (after a new evaluation: `python -m rlhpo.evaluation.report
docs/results/workloads_full_runs.csv --page docs/workloads.md --losses`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rlhpo.evaluation.report import loss_block, readme_block

ROOT = Path(__file__).resolve().parents[2]


def test_workloads_page_tables_are_the_committed_csv_s():
    page = (ROOT / "docs" / "workloads.md").read_text()
    df = pd.read_csv(ROOT / "docs" / "results" / "workloads_full_runs.csv")
    assert set(df.family) <= {"workload_gru", "workload_signal", "workload_lm", "workload_resnet", "workload_tabular"}
    assert readme_block(df) in page
    assert loss_block(df) in page


def test_full_length_workloads_tables_are_the_committed_csv_s():
    """docs/results/workloads_full_losses.md is loss_block() of the full-length runs CSV (as far
    as the evaluation got; docs/workloads.md says which runs it holds)."""
    df = pd.read_csv(ROOT / "docs" / "results" / "workloads_full_runs.csv")
    assert (ROOT / "docs" / "results" / "workloads_full_losses.md").read_text() == loss_block(df) + "\n"


def test_seconds_per_run_column_is_the_constant_runs_wall_time():
    """The family table's "s / run" is the constant-lr run's wall_s in the full-length runs CSV, as
    the page says (issue 32: it held an earlier run's)."""
    page = (ROOT / "docs" / "workloads.md").read_text()
    df = pd.read_csv(ROOT / "docs" / "results" / "workloads_full_runs.csv")
    wall = df[df.method == "constant"].groupby("family").wall_s.median()
    assert len(wall) == 5
    for family, seconds in wall.items():
        row = next(line for line in page.splitlines() if line.startswith(f"| `{family}` |"))
        assert row.rstrip().endswith(f"| {seconds:.0f} |"), (family, row[-40:], seconds)
