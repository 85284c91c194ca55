"""The plain types that the controller, the training loop, the environment and the tasks share
(:class:`Hyperparams`, :class:`Split`, the optimizer kinds and their usual defaults). It
imports nothing of rlhpo but :mod:`rlhpo.errors`, so importing the Controller loads no task
family; :mod:`rlhpo.tasks` re-exports every name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from rlhpo.errors import TaskError

OptimizerName = Literal["sgd", "adam", "adamw"]
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")

#: each optimizer's usual default, ``optimizer -> (lr, weight_decay)``: what a user runs without
#: tuning (SGD with momentum 0.9, as :func:`rlhpo.training.session.make_optimizer` builds it).
#: :meth:`rlhpo.tasks.Task.with_start` uses it for the ``"sensible"`` start regime.
SENSIBLE_STARTS: dict[str, tuple[float, float]] = {
    "adamw": (1e-3, 1e-2),
    "adam": (1e-3, 0.0),
    "sgd": (0.05, 5e-4),
}
#: the start regimes :meth:`rlhpo.tasks.Task.with_start` knows
START_REGIMES: tuple[str, ...] = ("sensible", "random")


def _is_real(v: object) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Hyperparams:
    """The three hyperparameters a controller sets."""

    lr: float
    batch_size: int
    weight_decay: float

    def validate(self, where: str = "hyperparams") -> "Hyperparams":
        if not (_is_real(self.lr) and math.isfinite(self.lr) and self.lr > 0):
            raise TaskError(f"{where}.lr must be a finite number > 0, got {self.lr!r}")
        if not (isinstance(self.batch_size, (int, np.integer)) and not isinstance(self.batch_size, bool) and self.batch_size >= 1):
            raise TaskError(f"{where}.batch_size must be an integer >= 1, got {self.batch_size!r}")
        if not (_is_real(self.weight_decay) and math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise TaskError(
                f"{where}.weight_decay must be a finite number >= 0, got {self.weight_decay!r}"
            )
        return self


@dataclass
class Split:
    """Inputs and targets of one split, as tensors indexed along the first dimension."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: torch.device | str) -> "Split":
        return Split(self.x.to(device), self.y.to(device))
