"""Evaluate the controller against baselines: ``python -m rlhpo.evaluate [overrides]``.

Every method trains through :func:`rlhpo.evaluation.runner.run_task` (PBT through the same
:class:`~rlhpo.training.session.TrainingSession`) with the same budget in training examples per run,
from two start regimes reported apart ("sensible": each optimizer's usual default; "random": the
family's sampled start), on the ``final`` held-out families by default (``families=[dev]`` for
development decisions). Every method is scored on its final weights. The Hydra run directory
receives:

    runs.csv        one row per run and start: start, test loss and metric, best / final
                    validation loss, examples, steps, wall_s, compute (search trials included),
                    diverged, the ratio to the best no-tuning baseline (chosen by validation),
                    examples to reach the controller's final validation loss, start vs Optuna's lr,
                    time to the calibrated run's final validation loss (steps_to_target,
                    examples_to_target, seconds_to_target, speedup_steps / _examples / _seconds),
                    lr_grid's headroom and every run's capture of it
    histories.csv   every run's per-interval hyperparameters and losses, with the steps,
                    examples and training seconds so far
    summary.md      the tables (those of docs/evaluation.md), with bootstrap intervals over tasks
    plots/          performance profiles per start; validation loss vs examples per task (first
                    seed); the controller's lr / batch size / weight decay trajectories; the
                    anytime view (validation loss vs optimizer steps per task, every seed)
    results.jsonl   every finished job, appended as it completes: rerunning into the same
                    folder (hydra.run.dir=...) resumes, skipping what is there
    tb/             TensorBoard logs: tb/<task>/<method>_seed<k>
    config.yaml     the resolved configuration

Examples::

    python -m rlhpo.evaluate +experiment=smoke
    python -m rlhpo.evaluate families=[dev] n_tasks=2 seeds=1
    python -m rlhpo.evaluate policy=outputs/2026-11-23/15-00-00/policy methods=[constant,cosine,controller]
    python -m rlhpo.evaluate launcher=ray n_jobs=8
    python -m rlhpo.evaluate families=[dev] methods=[calibrated,seesaw,lr_grid,controller,prior_only]
    python -m rlhpo.evaluation.calibrate      # re-choose the calibrated defaults (meta-training tasks)

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
    NO_TUNING,
    OPTIONAL_METHODS,
    POLICY_METHODS,
    REPLAY_SEED_OFFSET,
    EvaluateConfig,
    register_configs,
)
from rlhpo.evaluation.jobs import Job, JobResult, TaskSpec, make_schedule, run, run_job
from rlhpo.evaluation.report import (
    histories_frame,
    plot,
    plot_profiles,
    readme_tables,
    runs_frame,
    summarize,
)

__all__ = [
    "LAUNCHERS",
    "METHODS",
    "NO_TUNING",
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
    "plot_profiles",
    "readme_tables",
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
