"""The information audit's scoring (bench.information_audit) and one real branch point."""

from __future__ import annotations

import numpy as np
import pytest

from bench.information_audit import auc, audit_task, summarise
from rlhpo.tasks import make_family


def test_auc_ranks_and_ties():
    assert auc(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0, 0, 1, 1])) == 1.0
    assert auc(np.array([4.0, 3.0, 2.0, 1.0]), np.array([0, 0, 1, 1])) == 0.0
    assert auc(np.array([1.0, 1.0]), np.array([0, 1])) == 0.5
    assert np.isnan(auc(np.array([1.0, 2.0]), np.array([1, 1])))


def test_summary_scores_an_informative_feature_above_a_useless_one():
    rng = np.random.default_rng(0)
    rows = [dict(family="f", task=f"t{i % 6}", seed=0, interval=i, up_better=int(i % 2), signal=float(i % 2) + 0.1 * rng.normal(),
                 noise=float(rng.normal())) for i in range(60)]
    text = summarise(rows)
    signal = next(line for line in text.splitlines() if line.startswith("| signal |"))
    assert float(signal.split("|")[3]) > 0.95
    assert "leave-one-task-out accuracy: 1.000" in text
    assert "The batch label" not in text  # rows without it: no batch table


def test_summary_scores_the_noise_scale_on_the_batch_label():
    rng = np.random.default_rng(1)
    rows = []
    for i in range(60):
        ratio = float(rng.uniform(-3, 5))  # log2(B_noise / B)
        rows.append(dict(family="f", task=f"t{i % 6}", seed=0, interval=i, up_better=int(i % 2), progress=float(rng.uniform()),
                         log_noise_ratio=ratio, double_ok=int(ratio > 2)))
    text = summarise(rows)
    line = [line for line in text.splitlines() if line.startswith("| log_noise_ratio | ")][-1]  # the batch table
    assert float(line.split("|")[2]) == 1.0  # a perfect ranking of the batch label
    assert "policy features + noise scale, logistic regression" in text
    assert "Where B_noise >= 4 B:" in text and "doubling within 1% at 100% of them; elsewhere at 0%" in text


@pytest.mark.slow
def test_a_real_task_gives_labelled_branch_points():
    task = make_family("friedman_resmlp", budget_scale=0.2).sample(0)
    rows = audit_task(task, 0, horizon=2)
    assert rows and all(r["up_better"] in (0, 1) and np.isfinite(r["probe_val_gap"]) for r in rows)
