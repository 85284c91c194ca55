"""Many networks of one task as rows: the interface the batched environment trains through.

:class:`Trainer` is what :class:`~rlhpo.envs.vec.batched.BatchedVecEnv` needs of a group of
networks; :class:`~rlhpo.training.stacked.StackedTrainer` implements it as one ``vmap``-ed
computation, :class:`LoopTrainer` as one :class:`~rlhpo.training.session.TrainingSession` per
row (for tasks :func:`stack_check` rejects). :class:`RowSession` is one row seen through the
part of the ``TrainingSession`` interface the environment uses.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Protocol

import torch
from torch import nn
from torch.func import functional_call, vmap

from rlhpo.tasks.base import Hyperparams, Task
from rlhpo.training.monitor import IntervalStats
from rlhpo.training.session import BudgetClock, TrainingSession

_TRAIN_MODE_LAYERS = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)


class Trainer(Protocol):
    """What :class:`~rlhpo.envs.vec.batched.BatchedVecEnv` needs of a group of networks of one task."""

    task: Task

    def add_row(self, seed: int) -> int: ...
    def remove_row(self, row: int) -> None: ...
    def live_rows(self) -> int: ...

    def set_lr_schedule(self, row: int, fn: Optional[Callable[[int, int], float]]) -> None: ...
    def hparams(self, row: int) -> Hyperparams: ...
    def set_hparams(self, row: int, hp: Hyperparams) -> None: ...
    def examples_seen(self, row: int) -> int: ...
    def capture_row(self, row: int) -> dict: ...
    def restore_row(self, row: int, state: dict) -> None: ...
    def train_until(self, targets: dict[int, int]) -> dict[int, IntervalStats]: ...
    def evaluate(self, rows: list[int], split: str = "val") -> dict[int, tuple[float, float]]: ...


class RowSession(BudgetClock):
    """The part of the :class:`~rlhpo.training.session.TrainingSession` interface the environment uses,
    for one row of a trainer."""

    def __init__(self, trainer: Trainer, row: int) -> None:
        self.trainer, self.row, self.task = trainer, row, trainer.task
        self._lr_schedule: Optional[Callable[[int, int], float]] = None

    @property
    def hparams(self) -> Hyperparams:
        return self.trainer.hparams(self.row)

    def set_hparams(self, hparams: Hyperparams) -> Hyperparams:
        self.trainer.set_hparams(self.row, hparams.validate())
        return self.hparams

    @property
    def examples_seen(self) -> int:
        return self.trainer.examples_seen(self.row)

    @property
    def lr_schedule(self) -> Optional[Callable[[int, int], float]]:
        """As :attr:`TrainingSession.lr_schedule`, for this row."""
        return self._lr_schedule

    @lr_schedule.setter
    def lr_schedule(self, fn: Optional[Callable[[int, int], float]]) -> None:
        self._lr_schedule = fn
        self.trainer.set_lr_schedule(self.row, fn)


    def capture(self) -> dict:
        return self.trainer.capture_row(self.row)

    def restore(self, state: dict) -> None:
        self.trainer.restore_row(self.row, state)

    def release(self) -> None:
        self.trainer.remove_row(self.row)


def stack_check(task: Task, device: str = "cpu") -> Optional[str]:
    """``None`` if ``task`` can be trained by :class:`StackedTrainer`, else the reason it cannot.

    Raises :class:`~rlhpo.tasks.TaskError` for a malformed task, like ``TrainingSession``.
    """
    session = TrainingSession(task, device=device, seed=0)
    session.train(min(4, task.budget_examples))  # the first step checks the model and the loss
    if any(not p.requires_grad for p in session.model.parameters()):
        return "its model has frozen parameters"
    bad = [type(m).__name__ for m in session.model.modules() if isinstance(m, _TRAIN_MODE_LAYERS)]
    if bad:
        return f"its model has layers that behave differently in training ({', '.join(sorted(set(bad)))})"
    x, y = session.train_split.x[:4], session.train_split.y[:4]
    params = {k: v.detach().unsqueeze(0) for k, v in session.model.named_parameters()}
    buffers = {k: v.unsqueeze(0) for k, v in session.model.named_buffers()}
    try:
        with torch.no_grad():
            whole = float(task.loss_fn(session.model(x), y))
            out = vmap(lambda p, b: functional_call(session.model, (p, b), (x,)))(params, buffers)[0]
            per_example = vmap(lambda o, t: task.loss_fn(o.unsqueeze(0), t.unsqueeze(0)))(out, y)
    except Exception as e:  # torch.func raises many types for unsupported operations
        return f"its model or loss does not run under torch.func.vmap ({type(e).__name__}: {e})"
    if per_example.shape != (x.shape[0],):
        return "its loss does not reduce one example to a scalar"
    mean = float(per_example.mean())
    if math.isfinite(whole) and not math.isclose(mean, whole, rel_tol=1e-4, abs_tol=1e-6):
        return f"its loss is not a mean over examples (batch loss {whole:.6g}, mean of per-example losses {mean:.6g})"
    return None


class LoopTrainer:
    """The fallback for tasks that cannot be stacked: one :class:`TrainingSession` per row."""

    def __init__(self, task: Task, capacity: int = 8, device: str = "cpu") -> None:
        self.task, self.device = task, device
        self.sessions: dict[int, TrainingSession] = {}
        self._next = 0

    def add_row(self, seed: int) -> int:
        row, self._next = self._next, self._next + 1
        self.sessions[row] = TrainingSession(self.task, device=self.device, seed=seed)
        return row

    def remove_row(self, row: int) -> None:
        self.sessions.pop(row, None)

    def live_rows(self) -> int:
        return len(self.sessions)

    def hparams(self, row: int) -> Hyperparams:
        return self.sessions[row].hparams

    def set_hparams(self, row: int, hp: Hyperparams) -> None:
        self.sessions[row].set_hparams(hp)

    def set_lr_schedule(self, row: int, fn: Optional[Callable[[int, int], float]]) -> None:
        self.sessions[row].lr_schedule = fn

    def examples_seen(self, row: int) -> int:
        return self.sessions[row].examples_seen

    def capture_row(self, row: int) -> dict:
        return self.sessions[row].capture()

    def restore_row(self, row: int, state: dict) -> None:
        self.sessions[row].restore(state)

    def train_until(self, targets: dict[int, int]) -> dict[int, IntervalStats]:
        return {row: self.sessions[row].train_until(t) for row, t in targets.items()}

    def evaluate(self, rows: list[int], split: str = "val") -> dict[int, tuple[float, float]]:
        return {row: self.sessions[row].evaluate(split) for row in rows}
