"""Hyperparameter schedules run through the one training loop: the learned controller and the
baselines a user would pick instead. :func:`run_task` trains a task under any of them, an
interval at a time, and records what happened.

Each schedule gets the same budget in training examples (batch-size changes buy no compute).
The reward-free parts of evaluation (test loss) are read only after training ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from rlhpo.features import IntervalStats
from rlhpo.session import TrainingSession
from rlhpo.tasks import Hyperparams, Task


class Schedule:
    """Hooks into a :class:`TrainingSession`. Subclasses override what they need."""

    name = "schedule"

    def start(self, session: TrainingSession, n_intervals: int) -> None:
        """Called once before training (hyperparameters are the task's defaults)."""

    def before_step(self, session: TrainingSession) -> None:
        """After ``backward()``, before ``optimizer.step()``."""

    def after_step(self, session: TrainingSession) -> None:
        """After ``optimizer.step()``."""

    def end_interval(self, session: TrainingSession, stats: IntervalStats, val_loss: float) -> None:
        """After each control interval (the validation loss is that of the validation split)."""

    # run_task passes the hooks only when overridden, so constant runs pay nothing per step
    def _hook(self, name: str) -> Optional[Any]:
        return getattr(self, name) if getattr(type(self), name) is not getattr(Schedule, name) else None


class Constant(Schedule):
    """The task's starting hyperparameters, unchanged (or given ones)."""

    name = "constant"

    def __init__(self, hparams: Optional[Hyperparams] = None) -> None:
        self.hparams = hparams

    def start(self, session: TrainingSession, n_intervals: int) -> None:
        if self.hparams is not None:
            session.set_hparams(self.hparams)


class ControllerSchedule(Schedule):
    """The learned controller: one decision per interval, through :class:`rlhpo.Controller`."""

    name = "controller"

    def __init__(self, artifact: Any, deterministic: bool = True, writer: Any = None) -> None:
        self.artifact, self.deterministic, self.writer = artifact, deterministic, writer
        self.controller: Any = None

    def start(self, session: TrainingSession, n_intervals: int) -> None:
        from rlhpo.controller import Controller

        self.controller = Controller(
            self.artifact,
            session.optimizer,
            session.budget,
            sampler=session.sampler,
            deterministic=self.deterministic,
            writer=self.writer,
            is_adaptive=session.task.optimizer != "sgd",
            track_steps=False,  # the session's own monitor provides the statistics
        )
        self.controller.begin()  # clip the starting values into the policy's bounds, as the env does

    def end_interval(self, session: TrainingSession, stats: IntervalStats, val_loss: float) -> None:
        if not session.done:
            self.controller.examples_seen = session.examples_seen
            self.controller.decide(stats, val_loss)


class Replay(Schedule):
    """Replays recorded per-interval hyperparameters open-loop (the schedule-replay ablation)."""

    name = "replay"

    def __init__(self, per_interval: list[Hyperparams]) -> None:
        self.per_interval = list(per_interval)
        self._k = 0

    def start(self, session: TrainingSession, n_intervals: int) -> None:
        self._k = 0
        if self.per_interval:
            session.set_hparams(self.per_interval[0])

    def end_interval(self, session: TrainingSession, stats: IntervalStats, val_loss: float) -> None:
        self._k += 1
        if self._k < len(self.per_interval):
            session.set_hparams(self.per_interval[self._k])


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

    def schedule(self) -> list[Hyperparams]:
        """The hyperparameters used in each interval (for open-loop replay)."""
        return [Hyperparams(h["lr"], int(h["batch_size"]), h["weight_decay"]) for h in self.history]

    def examples_to_reach(self, val_loss: float) -> Optional[int]:
        """Examples this run needed to first reach ``val_loss`` (None: never)."""
        for h in self.history:
            if math.isfinite(h["val_loss"]) and h["val_loss"] <= val_loss:
                return int(h["examples"])
        return None


def train_interval(
    session: TrainingSession,
    k: int,
    n_intervals: int,
    before: Optional[Any] = None,
    after: Optional[Any] = None,
) -> tuple[dict, IntervalStats, bool]:
    """Train interval ``k`` of ``n_intervals`` (the budget split evenly) and validate.

    :return: the interval's record (the hyperparameters it trained with, losses, examples),
        its statistics, and whether it diverged
    """
    hp = session.hparams  # the values this interval trains with
    stats = session.train_until(session.budget * (k + 1) // n_intervals, before, after)
    val_loss, val_metric = session.evaluate("val")
    record = dict(
        interval=k,
        examples=session.examples_seen,
        lr=hp.lr,
        batch_size=hp.batch_size,
        weight_decay=hp.weight_decay,
        train_loss=stats.loss_mean,
        val_loss=val_loss,
        val_metric=val_metric,
    )
    return record, stats, stats.nonfinite or not math.isfinite(val_loss)


def run_task(
    task: Task,
    schedule: Schedule,
    seed: int = 0,
    n_intervals: int = 20,
    device: str = "cpu",
    writer: Any = None,
    method: Optional[str] = None,
) -> RunResult:
    """Train ``task`` under ``schedule`` for its example budget, in ``n_intervals`` intervals.

    A run that diverges stops there and is reported as diverged; it never raises for that.
    """
    session = TrainingSession(task, device=device, seed=seed)
    schedule.start(session, n_intervals)
    before, after = schedule._hook("before_step"), schedule._hook("after_step")
    result = RunResult(task.name, task.family, method or schedule.name, seed)
    for k in range(n_intervals):
        if session.done:  # a large last batch of the previous interval already spent the budget
            break
        record, stats, diverged = train_interval(session, k, n_intervals, before, after)
        val_loss = record["val_loss"]
        result.history.append(record)
        if writer is not None:
            for key in ("lr", "batch_size", "weight_decay", "train_loss", "val_loss", "val_metric"):
                v = record[key]
                if isinstance(v, (int, float)) and math.isfinite(v):
                    writer.add_scalar(f"{result.method}/{key}", v, session.examples_seen)
        if diverged:
            result.diverged = True
            break
        result.best_val_loss = min(result.best_val_loss, val_loss)
        schedule.end_interval(session, stats, val_loss)
    result.examples = session.examples_seen
    result.compute_examples = session.examples_seen
    result.final_val_loss = result.history[-1]["val_loss"] if not result.diverged else float("inf")
    if result.diverged:
        result.test_loss, result.test_metric = float("inf"), float("nan")
    else:
        result.test_loss, result.test_metric = session.evaluate("test")
    return result


def torch_scheduler_hooks(make: Any) -> type:
    """Build a :class:`Schedule` class around a ``torch.optim.lr_scheduler`` stepped per step.

    ``make(optimizer, total_steps)`` returns the scheduler; ``total_steps`` is the budget divided
    by the starting batch size (these schedules keep the batch size constant).
    """

    class _TorchSchedule(Schedule):
        def start(self, session: TrainingSession, n_intervals: int) -> None:
            total = max(1, math.ceil(session.budget / session.sampler.batch_size))
            self.scheduler = make(session.optimizer, total)

        def after_step(self, session: TrainingSession) -> None:
            self.scheduler.step()

    return _TorchSchedule


def _cosine(optimizer: torch.optim.Optimizer, total: int, warmup_fraction: float = 0.05) -> Any:
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    warm = max(1, int(total * warmup_fraction))
    return SequentialLR(
        optimizer,
        [LinearLR(optimizer, start_factor=1.0 / warm, total_iters=warm), CosineAnnealingLR(optimizer, T_max=max(1, total - warm))],
        milestones=[warm],
    )


class Cosine(torch_scheduler_hooks(_cosine)):  # type: ignore[misc]
    """Cosine decay to zero with a linear warm-up over the first 5% of steps, at the default lr."""

    name = "cosine"


# -- baselines for the evaluation harness (python -m rlhpo.evaluate) ----------------------------


def _multistep(optimizer: torch.optim.Optimizer, total: int) -> Any:
    from torch.optim.lr_scheduler import MultiStepLR

    return MultiStepLR(optimizer, milestones=[max(1, total // 2), max(1, (3 * total) // 4)], gamma=0.1)


class StepDecay(torch_scheduler_hooks(_multistep)):  # type: ignore[misc]
    """Step decay (``torch.optim.lr_scheduler.MultiStepLR``): the lr times 0.1 at 50% and again at
    75% of the steps, from the default lr."""

    name = "step"


class Plateau(Schedule):
    """``torch.optim.lr_scheduler.ReduceLROnPlateau`` stepped on the validation loss at the end of
    each control interval.

    :param factor: multiplies the lr when the validation loss stalls
    :param patience: intervals without improvement tolerated before a reduction
    """

    name = "plateau"

    def __init__(self, factor: float = 0.5, patience: int = 2) -> None:
        self.factor, self.patience = factor, patience
        self.scheduler: Any = None

    def start(self, session: TrainingSession, n_intervals: int) -> None:
        from torch.optim.lr_scheduler import ReduceLROnPlateau

        self.scheduler = ReduceLROnPlateau(session.optimizer, mode="min", factor=self.factor, patience=self.patience)

    def end_interval(self, session: TrainingSession, stats: IntervalStats, val_loss: float) -> None:
        self.scheduler.step(val_loss)


class Hypergradient(Schedule):
    """Hypergradient descent on the learning rate, multiplicative rule (Baydin et al., 2018)::

        lr <- lr * (1 - beta * cos(g_t, Δθ_{t-1}))

    before each step, where ``g_t`` is the current gradient and ``Δθ_{t-1}`` the previous
    parameter update. The paper's ``∇_α u`` is ``Δθ_{t-1} / lr`` for any optimizer whose update is
    linear in the lr (SGD with momentum, Adam, AdamW with its decoupled decay), so the measured
    update gives the exact direction without knowing the optimizer's internals. When successive
    gradients agree (``Δθ`` points against ``g_t``) the lr grows; when they oscillate, it shrinks.
    The batch size and weight decay stay at the task's defaults.

    :param beta: the hypergradient learning rate, in (0, 1) so the lr stays positive
    """

    name = "hypergradient"

    def __init__(self, beta: float = 0.02) -> None:
        if not (0.0 < beta < 1.0):
            raise ValueError(f"hypergradient beta must be in (0, 1), got {beta!r}")
        self.beta = float(beta)
        self._params: list[torch.Tensor] = []
        self._before: Optional[torch.Tensor] = None
        self._delta: Optional[torch.Tensor] = None

    def start(self, session: TrainingSession, n_intervals: int) -> None:
        self._params = [p for g in session.optimizer.param_groups for p in g["params"] if p.requires_grad]
        self._before, self._delta = None, None

    def _flat_grad(self) -> torch.Tensor:
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in self._params])

    def before_step(self, session: TrainingSession) -> None:
        if self._delta is not None:
            cos = float(torch.nn.functional.cosine_similarity(self._flat_grad(), self._delta, dim=0, eps=1e-12))
            if math.isfinite(cos):  # a non-finite gradient is the divergence check's business
                for g in session.optimizer.param_groups:
                    g["lr"] = float(g["lr"]) * (1.0 - self.beta * cos)
        # torch.cat copies, so this is the parameters before the step
        self._before = torch.cat([p.detach().reshape(-1) for p in self._params])

    def after_step(self, session: TrainingSession) -> None:
        if self._before is not None:
            self._delta = torch.cat([p.detach().reshape(-1) for p in self._params]) - self._before
