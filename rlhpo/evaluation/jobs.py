"""The jobs of ``python -m rlhpo.evaluate`` and how they run: :func:`run` plans one job per task,
start regime, method and seed (:mod:`rlhpo.evaluation.plan`), runs them in parallel (joblib loky
processes or Ray tasks, resumably: :mod:`rlhpo.evaluation.launch`) and writes the report
(:mod:`rlhpo.evaluation.report`).

A job (:class:`Job`, :class:`TaskSpec`, :class:`JobResult`) and what a worker does with it
(:func:`run_job`, :func:`make_schedule`) live in :mod:`rlhpo.evaluation.worker` and are
re-exported here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from rlhpo.evaluation.config import EvaluateConfig
from rlhpo.evaluation.frames import histories_frame, runs_frame
from rlhpo.evaluation.launch import RESULTS_FILE, _run_plan, _Store
from rlhpo.evaluation.plan import _Plan, _runnable_methods
from rlhpo.evaluation.plots import plot, plot_anytime, plot_profiles
from rlhpo.evaluation.tables import summarize
from rlhpo.evaluation.worker import (
    ANY_START,
    Job,
    JobResult,
    TaskSpec,
    make_schedule,
    run_job,
)
from rlhpo.output import check_writable, write_failed

__all__ = [
    "ANY_START",
    "RESULTS_FILE",
    "Job",
    "JobResult",
    "TaskSpec",
    "make_schedule",
    "run",
    "run_job",
]


def _write_report(results: list[JobResult], skipped: dict[str, str], out: Path, starts: list[str]) -> pd.DataFrame:
    """Write runs.csv, histories.csv, summary.md and plots/ (with the anytime view); print the summary."""
    df = runs_frame(results, starts)
    summary = summarize(df, skipped)
    hist = histories_frame(results)
    try:
        df.to_csv(out / "runs.csv", index=False)
        hist.to_csv(out / "histories.csv", index=False)
        (out / "summary.md").write_text(summary)
        plot(results, out / "plots")
        plot_profiles(df, out / "plots")
        if "steps" in hist.columns:  # resumed results from before evaluation v3 have none
            plot_anytime(hist, out / "plots")
    except OSError as e:
        print(summary)  # the results are not lost with the files
        raise write_failed("the evaluation's results", out, e) from e
    print(summary)
    print(f"[rlhpo] results in {out}")
    return df


def run(config: EvaluateConfig, out_dir: str | os.PathLike) -> pd.DataFrame:
    """Evaluate every method of ``config`` and write the outputs to ``out_dir``.

    Resumable: jobs already in ``out_dir/results.jsonl`` (from a run with the same run-defining
    settings) are not run again.

    :param config: what to evaluate (validated here)
    :param out_dir: where runs.csv, histories.csv, summary.md, plots/, tb/ and results.jsonl go
    :returns: one row per run and start regime (as in runs.csv)
    """
    config.validate()
    out = check_writable(out_dir)  # before any run: a full disk or a read-only folder fails here
    tb_root = str(check_writable(out / "tb", "tb/ of the output directory"))
    (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    methods, skipped, policy = _runnable_methods(config)
    plan = _Plan.make(config, methods, tb_root, policy)
    # run_job as looked up here, so that a test can replace jobs.run_job
    return _write_report(_run_plan(plan, _Store(out, plan), run_job), skipped, out, list(config.starts))
