"""The schedules a user would pick instead of the controller, as :class:`~rlhpo.evaluation.runner.Schedule`
hooks: the task's values held constant, warm-up + cosine, step decay, ReduceLROnPlateau,
hypergradient descent, and the open-loop replay of a recorded schedule (the ablation).
torch's own schedulers do the work wherever one exists.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from rlhpo.evaluation.runner import Schedule
from rlhpo.tasks import Hyperparams
from rlhpo.training.monitor import IntervalStats
from rlhpo.training.session import TrainingSession


class Constant(Schedule):
    """The task's starting hyperparameters, unchanged (or given ones)."""

    name = "constant"

    def __init__(self, hparams: Optional[Hyperparams] = None) -> None:
        self.hparams = hparams

    def start(self, session: TrainingSession, n_intervals: int) -> None:
        if self.hparams is not None:
            session.set_hparams(self.hparams)


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
