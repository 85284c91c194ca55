"""The hyperparameter ranges that searches (Optuna, PBT) and the warm-start meta-dataset cover."""

from __future__ import annotations

from dataclasses import dataclass

from rlhpo.tasks.base import Hyperparams, Task


@dataclass(frozen=True)
class SearchSpace:
    """Ranges searched by Optuna and PBT (all on a log scale).

    :param lr: learning-rate range; covers the usual scales of SGD and Adam
    :param batch_size: batch-size range (capped at the training-set size per task)
    :param weight_decay: weight-decay range
    """

    lr: tuple[float, float] = (1e-5, 1.0)
    batch_size: tuple[int, int] = (8, 512)
    weight_decay: tuple[float, float] = (1e-6, 1e-1)

    def for_task(self, task: Task) -> "SearchSpace":
        """The space with the batch size capped at the task's training-set size."""
        lo, hi = self.batch_size
        n = len(task.train)
        return SearchSpace(self.lr, (min(lo, n), max(min(lo, n), min(hi, n))), self.weight_decay)

    def clip(self, hp: Hyperparams) -> Hyperparams:
        """Clip into the space (PBT's multiplicative perturbations can walk out of it)."""
        return Hyperparams(
            lr=float(min(max(hp.lr, self.lr[0]), self.lr[1])),
            batch_size=int(min(max(int(round(hp.batch_size)), self.batch_size[0]), self.batch_size[1])),
            weight_decay=float(min(max(hp.weight_decay, self.weight_decay[0]), self.weight_decay[1])),
        )
