"""Evaluate the controller against baselines: ``python -m rlhpo.evaluate [overrides]``.

Every method trains through :func:`rlhpo.evaluation.runner.run_task` (PBT through the same
:class:`~rlhpo.training.session.TrainingSession`) with the same budget in training examples per run, on
the held-out task families by default. The Hydra run directory receives:

    runs.csv        one row per run: test loss and metric, best / final validation loss,
                    examples, compute (search trials included), diverged, speedups
    histories.csv   every run's per-interval hyperparameters and losses
    summary.md      the summary table per method, and whether the controller loses to a baseline
    plots/          validation loss vs examples per task (first seed), the controller's lr /
                    batch size / weight decay trajectories
    tb/             TensorBoard logs: tb/<task>/<method>_seed<k>
    config.yaml     the resolved configuration

Examples::

    python -m rlhpo.evaluate +experiment=smoke
    python -m rlhpo.evaluate policy=outputs/2026-11-23/15-00-00/policy methods=[constant,cosine,controller]
    python -m rlhpo.evaluate launcher=ray n_jobs=8

The library entry point is :func:`run`, which takes an :class:`EvaluateConfig` (no Hydra). This
module is the Hydra edge only: the configuration lives in :mod:`rlhpo.evaluation.config`, the jobs
and their launchers in :mod:`rlhpo.evaluation.jobs`, the tables, summary and plots in
:mod:`rlhpo.evaluation.report`; their public names are re-exported here.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from rlhpo.cli import cli_errors, to_dataclass
from rlhpo.evaluation.config import (
    LAUNCHERS,
    METHODS,
    OPTIONAL_METHODS,
    POLICY_METHODS,
    REPLAY_SEED_OFFSET,
    EvaluateConfig,
    register_configs,
)
from rlhpo.evaluation.jobs import Job, JobResult, TaskSpec, make_schedule, run, run_job
from rlhpo.evaluation.report import histories_frame, plot, runs_frame, summarize

__all__ = [
    "LAUNCHERS",
    "METHODS",
    "OPTIONAL_METHODS",
    "POLICY_METHODS",
    "REPLAY_SEED_OFFSET",
    "EvaluateConfig",
    "Job",
    "JobResult",
    "TaskSpec",
    "histories_frame",
    "main",
    "make_schedule",
    "plot",
    "register_configs",
    "run",
    "run_job",
    "runs_frame",
    "summarize",
]

register_configs()


@hydra.main(version_base="1.3", config_path="pkg://rlhpo.conf.evaluate", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """``python -m rlhpo.evaluate``: Hydra composes the config, :func:`run` does the work."""
    from hydra.core.hydra_config import HydraConfig

    with cli_errors():  # rlhpo's own errors: the message, exit code 1, no library traceback
        run(to_dataclass(cfg, EvaluateConfig), HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    # run_job and Job live in rlhpo.evaluation.jobs, so joblib and Ray pickle them by reference
    # to that module even when this file runs as __main__.
    main()
