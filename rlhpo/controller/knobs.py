"""The optimizer's side of :class:`rlhpo.Controller`: the values in effect, read from and written
to the optimizer's param groups (each group keeping its ratio to the reference group, see
:class:`rlhpo.training.hparams.GroupRatios`) and the batch sampler, and the lr last written (so
an lr that someone else wrote between two steps is seen)."""

from __future__ import annotations

import warnings
from typing import Optional

import torch

from rlhpo.controller.batches import Batches
from rlhpo.training.hparams import GroupRatios, write_hparams, write_lr
from rlhpo.types import Hyperparams


def weight_decay_control(optimizer: torch.optim.Optimizer, wanted: bool) -> bool:
    """Whether the controller sets weight decay in ``optimizer``; says once why not when the
    optimizer rules it out (it has none, or every group starts at 0: never switched on)."""
    groups, name = optimizer.param_groups, type(optimizer).__name__
    if not wanted:
        return False
    if "weight_decay" not in groups[0]:
        warnings.warn(f"{name} has no weight_decay: weight-decay control is off for this run", stacklevel=3)
        return False
    if all(not g.get("weight_decay") for g in groups):
        warnings.warn(
            f"every param group of {name} starts with weight_decay=0: weight-decay control is off for this run "
            "(the controller does not switch weight decay on; start it above 0 to let the policy set it)",
            stacklevel=3,
        )
        return False
    return True


class Knobs:
    """Reads and writes the three hyperparameters of one run.

    :param optimizer: the run's optimizer
    :param batches: the batches' side (its sampler takes the batch size, when controlled)
    :param weight_decay: whether weight decay is written (see :func:`weight_decay_control`)
    """

    def __init__(self, optimizer: torch.optim.Optimizer, batches: Batches, weight_decay: bool) -> None:
        self.optimizer, self.batches, self.weight_decay = optimizer, batches, weight_decay
        self.ratios = GroupRatios.of(optimizer)
        self.written_lr: Optional[float] = None  # the reference group's lr as last written here

    def read(self) -> Hyperparams:
        """The values in effect: the reference param group's lr and weight decay, the batch size."""
        lr, wd = self.ratios.read(self.optimizer)
        return Hyperparams(lr, int(self.batches.current), wd)

    @property
    def lr_now(self) -> float:
        """The reference group's lr as it stands in the optimizer."""
        groups = self.optimizer.param_groups
        return groups[min(self.ratios.lr_ref, len(groups) - 1)]["lr"]

    def write(self, hp: Hyperparams) -> Hyperparams:
        """Write ``hp`` (the controls this run has) and return the values in effect."""
        write_hparams(self.optimizer, hp, self.batches.sampler, weight_decay=self.weight_decay,
                      batch_size=self.batches.control, ratios=self.ratios)
        self.written_lr = self.lr_now
        return self.read()

    def write_lr(self, lr: float) -> None:
        """Write the lr of the step about to run (the base schedule's)."""
        write_lr(self.optimizer, lr, self.ratios)
        self.written_lr = self.lr_now

    @property
    def foreign_lr(self) -> bool:
        """Whether the lr was changed since it was last written here (another scheduler, the user)."""
        return self.written_lr is not None and self.lr_now != self.written_lr
