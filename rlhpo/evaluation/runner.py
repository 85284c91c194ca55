"""The evaluation runner: :func:`run_task` trains a task under any :class:`Schedule` (the learned
controller here, the baselines in :mod:`rlhpo.evaluation.baselines`) through the one training
loop, an interval at a time, and records what happened. ``python -m rlhpo.evaluate``,
``rlhpo.apply`` and the held-out evaluation of meta-training all run it.

Each schedule gets the same budget in training examples (batch-size changes buy no compute).
The reward-free parts of evaluation (test loss) are read only after training ends.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

import torch

from rlhpo.control.decision import DIVERGENCE_FACTOR, interval_end, is_diverged
from rlhpo.evaluation.ttr import first_reach
from rlhpo.tasks import Hyperparams, Task
from rlhpo.training.monitor import IntervalStats
from rlhpo.training.session import TrainingSession
from rlhpo.training.snapshot import params_finite

#: the per-interval values :func:`run_task` logs to TensorBoard
HISTORY_KEYS: tuple[str, ...] = ("lr", "batch_size", "weight_decay", "train_loss", "val_loss", "val_metric")


def log_history(
    writer: Any,
    prefix: str,
    rows: Iterable[Mapping[str, Any]],
    keys: Sequence[str] = HISTORY_KEYS,
    step_key: str = "examples",
) -> None:
    """Log history rows to TensorBoard: ``row[key]`` as the scalar ``{prefix}/{key}`` at step
    ``row[step_key]`` (the examples seen when the row was recorded), for every row and key.

    The one way rlhpo writes hyperparameter trajectories (a :class:`RunResult`'s ``history``, a
    controller's decisions). Missing, non-numeric and non-finite values are skipped; a ``None``
    writer logs nothing.
    """
    if writer is None:
        return
    for row in rows:
        for key in keys:
            v = row.get(key)
            if isinstance(v, numbers.Real) and math.isfinite(v):
                writer.add_scalar(f"{prefix}/{key}", v, row[step_key])


class Schedule:
    """Hooks into a :class:`TrainingSession`. Subclasses override what they need."""

    name = "schedule"
    #: whether a guard (:mod:`rlhpo.control.guard`) restores a diverged interval; the runner stops
    #: an unguarded run that diverges, and lets a guarded one go on
    guarded = False

    def make_optimizer(self, session: TrainingSession) -> Optional[torch.optim.Optimizer]:
        """Called once before :meth:`start`: an optimizer to train with instead of the task's
        (Schedule-Free, Prodigy), built over ``session.model.parameters()`` from the starting
        ``session.hparams``; ``None`` (the default) keeps the task's optimizer."""
        return None

    def start(self, session: TrainingSession, n_intervals: int) -> None:
        """Called once before training (hyperparameters are the task's defaults)."""

    def before_step(self, session: TrainingSession) -> None:
        """After ``backward()``, before ``optimizer.step()``."""

    def after_step(self, session: TrainingSession) -> None:
        """After ``optimizer.step()``."""

    def end_interval(self, session: TrainingSession, stats: IntervalStats, val_loss: float) -> None:
        """After each control interval (the validation loss is that of the validation split)."""

    def before_evaluate(self, session: TrainingSession) -> None:
        """Before every evaluation of a split (validation after each interval, test at the end):
        Schedule-Free switches its optimizer to the averaged weights here."""

    def after_evaluate(self, session: TrainingSession) -> None:
        """After every evaluation of a split, before training resumes."""

    def notes(self) -> dict:
        """What the run's :attr:`RunResult.info` should record about the schedule (after training)."""
        return {}

    # run_task passes the hooks only when overridden, so constant runs pay nothing per step
    def _hook(self, name: str) -> Optional[Any]:
        return getattr(self, name) if getattr(type(self), name) is not getattr(Schedule, name) else None


class ControllerSchedule(Schedule):
    """The learned controller: one decision per interval, through :class:`rlhpo.Controller`."""

    name = "controller"

    guarded = True  # its guard rolls a diverged interval back: the runner does not stop the run

    def __init__(self, artifact: Any, deterministic: bool = True, writer: Any = None, null_action: bool = False) -> None:
        self.artifact, self.deterministic, self.writer = artifact, deterministic, writer
        self.null_action = null_action  # every action zero: the policy's prior and base schedule alone
        self.controller: Any = None

    def start(self, session: TrainingSession, n_intervals: int) -> None:
        from rlhpo.controller import Controller

        self.controller = Controller.in_intervals(
            session.optimizer,
            session.budget,
            policy=self.artifact,
            sampler=session.sampler,
            model=session.model,  # the guard snapshots buffers too
            deterministic=self.deterministic,
            writer=self.writer,
            n_intervals=n_intervals,  # the runner's clock: the base schedule ends at the budget
            prior_only=self.null_action,
        )
        self.controller.begin()  # clip the starting values into the policy's bounds, as the env does
        session.monitor.noise = self.controller.batch_rule is not None  # the loop measures what the controller reads
        # the base schedule sets the lr before every optimizer step, as in the env and a user's loop
        session.lr_schedule = self.controller.lr_at if self.controller.decision.scheduled else None

    def _hook(self, name: str) -> Optional[Any]:
        if name == "after_step" and getattr(self.artifact, "probe", None) is None:
            return None  # no probes: no per-step hook, the loop runs as for any schedule
        return super()._hook(name)

    def after_step(self, session: TrainingSession) -> None:
        controller = self.controller
        if controller.probing:  # a branching probe: its branches are stretches of this loop
            controller.probe_step(session.last_loss, examples_seen=session.examples_seen)
            if not controller.probing:
                session.monitor.summary()  # the branches' statistics are not the interval's

    def notes(self) -> dict:
        history = self.controller.history
        est = next((h for h in history if h.get("estimate")), None)
        if est is not None:  # the level's move by the estimate (as lr_grid's best factor), and whether it settled
            return {"lr_factor": est["level"] / est["before"], "estimate_settled": est["settled"]}
        probes = [h for h in history if h.get("probe")]
        if not probes:
            return {}
        # the level's move by the probes (the lr_grid's column of the same name: its best factor)
        factor = math.prod(h["chosen"] for h in probes)
        return {"lr_factor": factor, "probe_examples": sum(h["probe_spent"] for h in probes)}

    def end_interval(self, session: TrainingSession, stats: IntervalStats, val_loss: float) -> None:
        if not session.done:
            self.controller.decide(stats, val_loss, examples_seen=session.examples_seen)
        else:  # the last interval: no decision follows, the guard has the last word
            self.controller.finish(val_loss)


@dataclass
class RunResult:
    """What one training run produced."""

    task: str
    family: str
    method: str
    seed: int
    history: list[dict] = field(default_factory=list)
    test_loss: float = float("nan")
    test_metric: float = float("nan")
    best_val_loss: float = float("inf")
    final_val_loss: float = float("nan")
    examples: int = 0
    diverged: bool = False
    compute_examples: int = 0  # all examples the method used, trials included (search methods)
    steps: int = 0  # optimizer steps of this run (a search's final run)
    weights_finite: bool = True  # every parameter finite at the end (the do-no-harm check)
    info: dict = field(default_factory=dict)  # e.g. the start, a search's chosen values

    def schedule(self) -> list[Hyperparams]:
        """The hyperparameters used in each interval (for open-loop replay)."""
        return [Hyperparams(h["lr"], int(h["batch_size"]), h["weight_decay"]) for h in self.history]

    def examples_to_reach(self, val_loss: float) -> Optional[int]:
        """Examples this run needed to first reach ``val_loss`` (None: never)."""
        row = first_reach(self.history, val_loss)
        return None if row is None else int(row["examples"])


def train_interval(
    session: TrainingSession,
    k: int,
    n_intervals: int,
    before: Optional[Any] = None,
    after: Optional[Any] = None,
    reference: Optional[float] = None,
    divergence_factor: float = DIVERGENCE_FACTOR,
    schedule: Optional[Schedule] = None,
) -> tuple[dict, IntervalStats, bool]:
    """Train interval ``k`` of ``n_intervals`` (the decision path's clock) and validate.

    Divergence is the decision path's rule (:func:`~rlhpo.control.decision.is_diverged`), with
    ``reference`` the run's first validation loss and ``divergence_factor`` its factor, so every
    method is scored as the controller is trained. ``schedule``'s evaluation hooks (if given) run
    around the validation.

    :return: the interval's record (the hyperparameters it trained with, losses, and so far in
        the run: ``examples``, optimizer ``steps`` and ``seconds``, the wall-clock of the training
        loop with the schedule's step hooks, validation and per-interval decisions excluded), its
        statistics, and whether it diverged
    """
    hp = session.hparams  # the values this interval trains with
    stats = session.train_until(interval_end(session.budget, n_intervals, k), before, after)
    val_loss, val_metric = evaluate_split(session, "val", schedule)
    record = dict(
        interval=k,
        examples=session.examples_seen,
        steps=session.steps,
        seconds=round(session.train_seconds, 4),
        lr=hp.lr,
        batch_size=hp.batch_size,
        weight_decay=hp.weight_decay,
        train_loss=stats.loss_mean,
        val_loss=val_loss,
        val_metric=val_metric,
    )
    return record, stats, is_diverged(stats, val_loss, reference, divergence_factor)


def evaluate_split(session: TrainingSession, split: str, schedule: Optional[Schedule] = None) -> tuple[float, float]:
    """``session.evaluate(split)`` between ``schedule``'s :meth:`~Schedule.before_evaluate` and
    :meth:`~Schedule.after_evaluate` hooks."""
    if schedule is None:
        return session.evaluate(split)
    schedule.before_evaluate(session)
    try:
        return session.evaluate(split)
    finally:
        schedule.after_evaluate(session)


def run_task(
    task: Task,
    schedule: Schedule,
    seed: int = 0,
    n_intervals: int = 20,
    device: str = "cpu",
    writer: Any = None,
    method: Optional[str] = None,
    *,
    divergence_factor: float = DIVERGENCE_FACTOR,
    test_split: bool = True,
) -> RunResult:
    """Train ``task`` under ``schedule`` for its example budget, in ``n_intervals`` intervals.

    A run that diverges stops there and is reported as diverged; it never raises for that.

    :param writer: a TensorBoard ``SummaryWriter``: each interval's record as ``<method>/<key>``
    :param divergence_factor: see :func:`~rlhpo.control.decision.is_diverged` (the held-out
        evaluation of meta-training passes the environment's)
    :param test_split: evaluate the test split after training; ``False`` leaves ``test_loss``
        and ``test_metric`` NaN unless the run diverged (model selection during meta-training
        never reads the test split)
    """
    session = TrainingSession(task, device=device, seed=seed)
    optimizer = schedule.make_optimizer(session)
    if optimizer is not None:
        session.optimizer = optimizer
    schedule.start(session, n_intervals)
    before, after = schedule._hook("before_step"), schedule._hook("after_step")
    result = RunResult(task.name, task.family, method or schedule.name, seed)
    reference: Optional[float] = None
    for k in range(n_intervals):
        if session.done:  # a large last batch of the previous interval already spent the budget
            break
        record, stats, diverged = train_interval(
            session, k, n_intervals, before, after, reference, divergence_factor, schedule
        )
        val_loss = record["val_loss"]
        if reference is None and math.isfinite(val_loss):
            reference = val_loss
        result.history.append(record)
        log_history(writer, result.method, [record])
        if diverged and not schedule.guarded:
            result.diverged = True
            break
        if not diverged:
            result.best_val_loss = min(result.best_val_loss, val_loss)
        schedule.end_interval(session, stats, val_loss)  # a guarded schedule rolls a divergence back here
    _finish(result, session, schedule, test_split)
    return result


def _finish(result: RunResult, session: TrainingSession, schedule: Schedule, test_split: bool) -> None:
    """Fill in ``result`` after :func:`run_task`'s last interval: the final validation loss (after
    a guard's last word), the counts, and the test split (read once, unless diverged or skipped)."""
    final_val = result.history[-1]["val_loss"] if result.history else float("nan")
    if schedule.guarded and result.history:  # the state in effect after the guard's last word
        final_val = evaluate_split(session, "val", schedule)[0]
    result.info.update(schedule.notes())
    result.examples = session.examples_seen
    result.compute_examples = session.examples_seen
    result.steps = session.steps
    result.weights_finite = params_finite(session.model.parameters())
    result.final_val_loss = final_val if not result.diverged else float("inf")
    if result.diverged:
        result.test_loss, result.test_metric = float("inf"), float("nan")
    elif test_split:  # the final weights, read once, after training
        result.test_loss, result.test_metric = evaluate_split(session, "test", schedule)
