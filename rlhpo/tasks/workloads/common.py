"""What every workload family shares: named sizes, the usual optimizer and batch size, and a
budget in optimizer steps.

A workload is a run of the length users train (1,000-10,000 optimizer steps, 30 s to 5 min at
its ``default`` size on one CPU thread), unlike the sub-second tasks the controller was
meta-trained on. Its start is the task kind's usual optimizer at its usual default
(:data:`rlhpo.tasks.base.SENSIBLE_STARTS`) and its usual batch size, so the ``sensible`` and the
``random`` start regimes are the same run. The size knob (:class:`WorkloadFamily` ``size``) is
``"tiny"`` (tests), ``"default"`` or ``"large"`` (GPU-sized), or a size object of the family's
own type with any width, depth, context and step budget.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, Union

import numpy as np
import torch
from torch import nn

from rlhpo.errors import TaskError
from rlhpo.tasks.base import SENSIBLE_STARTS, Hyperparams, Objective, OptimizerName, Split, Task, TaskFamily


def contiguous_splits(x: np.ndarray, y: np.ndarray, n_train: int, n_val: int) -> tuple[Split, Split, Split]:
    """The first ``n_train`` rows for training, the next ``n_val`` for validation, the rest for
    testing (generated rows are independent, so contiguous blocks are random splits)."""
    bounds = ((0, n_train), (n_train, n_train + n_val), (n_train + n_val, len(x)))
    return tuple(Split(torch.as_tensor(x[a:b]), torch.as_tensor(y[a:b])) for a, b in bounds)  # type: ignore[return-value]


class WorkloadFamily(TaskFamily):
    """A :class:`TaskFamily` of realistic length with a size knob.

    Subclasses set ``SIZES`` (``{"tiny", "default", "large"} -> size dataclass``, each with a
    ``steps`` field: the optimizer steps of a run at the usual batch size), ``optimizer`` and
    ``usual_batch_size``.

    :param budget_scale: multiplies every sampled task's example budget
    :param size: a name in ``SIZES`` or an instance of the family's size dataclass
    """

    SIZES: ClassVar[dict[str, Any]] = {}
    optimizer: ClassVar[OptimizerName] = "adam"
    #: the workload group the family belongs to ("workloads_dev" or "workloads_final")
    group: ClassVar[str] = ""

    def __init__(self, budget_scale: float = 1.0, size: Union[str, Any] = "default") -> None:
        super().__init__(budget_scale)
        kind = type(self.SIZES["default"])
        if isinstance(size, str):
            if size not in self.SIZES:
                raise TaskError(f"{self.name}: size must be one of {sorted(self.SIZES)} or a {kind.__name__}, got {size!r}")
            size = self.SIZES[size]
        if not isinstance(size, kind):
            raise TaskError(f"{self.name}: size must be one of {sorted(self.SIZES)} or a {kind.__name__}, got {size!r}")
        for f in dataclasses.fields(size):
            v = getattr(size, f.name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise TaskError(f"{self.name}: size.{f.name} must be an integer >= 1, got {v!r}")
        self.size = size

    def usual_start(self) -> tuple[OptimizerName, Hyperparams]:
        """The optimizer and its usual default: what a user runs without tuning."""
        lr, wd = SENSIBLE_STARTS[self.optimizer]
        return self.optimizer, Hyperparams(lr=lr, batch_size=self.usual_batch_size, weight_decay=wd)

    def workload_task(
        self, seed: int, model_fn: Callable[[], nn.Module], splits: tuple[Split, Split, Split], objective: Objective, **extra: Any
    ) -> Task:
        """A task of this family at its size: the budget of :meth:`budget`, the start of
        :meth:`usual_start`, the size's fields in ``info`` (``extra`` adds to :meth:`make_task`'s
        keywords; an ``info`` there adds to the size's fields)."""
        info = {**vars(self.size), **extra.pop("info", {})}
        return self.make_task(seed, model_fn, splits, objective, self.budget(), self.usual_start(), info, **extra)

    def budget(self) -> int:
        """The example budget of one run: ``size.steps`` optimizer steps at the usual batch size."""
        return int(self.size.steps) * self.usual_batch_size

    def __repr__(self) -> str:
        return f"{type(self).__name__}(budget_scale={self.budget_scale}, size={self.size})"
