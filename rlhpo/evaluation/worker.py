"""One job of ``python -m rlhpo.evaluate`` and what a worker does with it: :class:`TaskSpec`,
:class:`Job` and :class:`JobResult`, and :func:`run_job`, which trains the job's task under its
method (:func:`make_schedule`).

Every single-run method trains through :func:`rlhpo.evaluation.runner.run_task`; Optuna, PBT and
the lr grid through :mod:`rlhpo.evaluation.search`, on the same :class:`~rlhpo.training.session.TrainingSession`.
Workers import this module (not ``rlhpo.evaluate``): :func:`run_job` and :class:`Job` are
pickled by reference to it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from rlhpo.evaluation.baselines import (
    Calibrated,
    Constant,
    Cosine,
    Hypergradient,
    Plateau,
    Prodigy,
    Replay,
    ScheduleFree,
    Seesaw,
    StepDecay,
)
from rlhpo.evaluation.config import parse_method
from rlhpo.evaluation.frames import safe_name
from rlhpo.evaluation.runner import ControllerSchedule, RunResult, Schedule, run_task
from rlhpo.evaluation.warm import WARM_METHODS, run_warm
from rlhpo.policy.artifact import load_artifact
from rlhpo.tasks import Hyperparams, Task, make_family

# an evaluation trains hundreds of runs: the Controller's start line and summary per run would drown the
# progress bar (its warnings stay on)
logging.getLogger("rlhpo.controller").setLevel(logging.WARNING)

#: the ``start`` of a search method's task: it searches its own hyperparameters, whatever the start
ANY_START = "any"


@dataclass(frozen=True)
class TaskSpec:
    """A task by family, seed and start regime: cheap to send to a worker, which samples the task
    itself. ``start`` is "sensible" or "random" (:meth:`Task.with_start`), or "any" (the sampled
    task as it is, for the search methods, which ignore the start)."""

    family: str
    seed: int
    budget_scale: float
    start: str = "random"

    def make(self) -> Task:
        task = make_family(self.family, self.budget_scale).sample(self.seed)
        return task if self.start == ANY_START else task.with_start(self.start)


@dataclass
class Job:
    """One run (an Optuna job is a whole search: its trials and the final run).

    :param group: "main" (the evaluation seeds) or "replay" (the fresh seeds of the ablation)
    """

    task: TaskSpec
    method: str
    seed: int
    group: str
    n_intervals: int
    device: str
    tb_root: Optional[str]
    policy: Optional[str] = None
    beta: float = 0.02
    optuna_trials: int = 20
    replay: Optional[list[Hyperparams]] = None
    calibrated: Optional[dict] = None

    @property
    def key(self) -> tuple:
        """What identifies the job's result in results.jsonl."""
        return (self.task.family, self.task.seed, self.task.start, self.method, self.seed, self.group)


@dataclass
class JobResult:
    job: Job
    result: RunResult
    metric_name: str
    wall_s: float


def _tb_dir(tb_root: str, task_name: str, start: str, method: str, seed: int) -> str:
    return str(Path(tb_root) / safe_name(task_name) / start / f"{method}_seed{seed}")


def _writer(job: Job, task: Task) -> Any:
    if job.tb_root is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(_tb_dir(job.tb_root, task.name, job.task.start, job.method, job.seed))


def make_schedule(job: Job) -> Schedule:
    """The schedule a single-run method trains under."""
    if job.method == "constant":
        return Constant()
    if job.method == "cosine":
        return Cosine()
    if job.method == "calibrated":
        return Calibrated(job.calibrated or {})
    if job.method == "schedulefree":
        return ScheduleFree()
    if job.method == "prodigy":
        return Prodigy()
    if job.method == "seesaw":
        return Seesaw(job.calibrated or {})
    if job.method == "step":
        return StepDecay()
    if job.method == "plateau":
        return Plateau(factor=0.5, patience=2)
    if job.method == "hypergradient":
        return Hypergradient(job.beta)
    method, policy = parse_method(job.method)
    if method == "controller":
        return ControllerSchedule(load_artifact(policy or job.policy or "default"))
    if job.method == "replay":
        return Replay(job.replay or [])
    if job.method == "prior_only":
        return ControllerSchedule(load_artifact(job.policy or "default"), null_action=True)
    raise ValueError(f"{job.method!r} is not a single-run method")


def run_job(job: Job) -> JobResult:
    """Run one job (in a worker process, or in this one); raise naming the job if it fails."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # parallelism is across runs; one thread each avoids oversubscription
    task = job.task.make()
    writer = _writer(job, task)
    start = time.perf_counter()  # the training only: not the data's generation, not the writer's import
    try:
        if job.method == "optuna":
            from rlhpo.evaluation.search import optuna_search

            result = optuna_search(
                task, job.seed, job.optuna_trials, job.n_intervals, job.device, writer=writer
            )
        elif job.method == "lr_grid":
            from rlhpo.evaluation.search import lr_grid_search

            result = lr_grid_search(task, job.calibrated or {}, job.seed, job.n_intervals, job.device, writer=writer)
        elif job.method in WARM_METHODS:  # the start replaced by a recommendation or an LR range test
            result = run_warm(job.method, task, job.seed, job.n_intervals, job.device, writer, job.policy)
        else:
            result = run_task(task, make_schedule(job), job.seed, job.n_intervals, job.device, writer, job.method)
    except Exception as e:
        raise RuntimeError(f"{job.method} on task {task.name!r} seed {job.seed} failed: {type(e).__name__}: {e}") from e
    finally:
        if writer is not None:
            writer.close()
        torch.set_num_threads(threads)
    _note_start(result, task)
    return JobResult(job, result, task.metric_name, time.perf_counter() - start)


def _note_start(result: RunResult, task: Task) -> None:
    """Record the task's optimizer and starting values in the result (the report's start columns)."""
    hp = task.default_hparams
    result.info.update(optimizer=task.optimizer, start_lr=hp.lr, start_batch_size=hp.batch_size, start_weight_decay=hp.weight_decay)


def _pbt_job(job: Job, population: int, interval: int, num_cpus: int) -> JobResult:
    from rlhpo.evaluation.search import pbt_search

    task = job.task.make()
    writer = _writer(job, task)
    start = time.perf_counter()
    try:
        result = pbt_search(task, job.seed, population, interval, job.n_intervals, job.device, num_cpus=num_cpus, writer=writer)
    finally:
        if writer is not None:
            writer.close()
    _note_start(result, task)
    return JobResult(job, result, task.metric_name, time.perf_counter() - start)
