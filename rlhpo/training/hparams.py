"""Writing hyperparameters into a training loop: the one writer, for the training session, the
decision path (:mod:`rlhpo.control.decision`) and :class:`rlhpo.Controller` alike.

A user's optimizer may have several parameter groups with different learning rates and weight
decays (a smaller lr for a pretrained backbone, no decay for biases and norms). The controller's
hyperparameters are those of a *reference* group (the first with a value above 0), and
:class:`GroupRatios` keeps every group's starting ratio to it: the controller moves one global
multiplier and each group keeps its meaning. A group whose weight decay starts at 0 stays 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch

from rlhpo.types import Hyperparams


def _reference(values: list[float]) -> Optional[int]:
    """The first group with a value above 0 (None: every group is at 0)."""
    return next((i for i, v in enumerate(values) if v > 0), None)


@dataclass
class GroupRatios:
    """Each param group's lr and weight decay as a multiple of the reference group's.

    :param lr: per group, its lr over the reference group's (1 for the reference)
    :param weight_decay: per group, its weight decay over the reference group's (0 for a group
        that starts without weight decay)
    :param lr_ref: the reference group for lr (the first with lr > 0)
    :param wd_ref: the reference group for weight decay (None: no group has any)
    """

    lr: list[float]
    weight_decay: list[float]
    lr_ref: int = 0
    wd_ref: Optional[int] = None

    @classmethod
    def of(cls, optimizer: torch.optim.Optimizer) -> "GroupRatios":
        """The ratios of ``optimizer``'s groups as they are now (the run's starting values)."""
        lrs = [float(g["lr"]) for g in optimizer.param_groups]
        wds = [float(g.get("weight_decay", 0.0) or 0.0) for g in optimizer.param_groups]
        lr_ref, wd_ref = _reference(lrs) or 0, _reference(wds)
        lr_base = lrs[lr_ref] if lrs[lr_ref] > 0 else 1.0
        wd_base = wds[wd_ref] if wd_ref is not None else 1.0
        return cls([v / lr_base for v in lrs], [v / wd_base for v in wds], lr_ref, wd_ref)

    def lr_of(self, i: int) -> float:
        return self.lr[i] if i < len(self.lr) else 1.0

    def wd_of(self, i: int, group: dict) -> float:
        if i < len(self.weight_decay):
            return self.weight_decay[i]
        return 1.0 if group.get("weight_decay", 0.0) else 0.0  # a group added later: as the reference

    def read(self, optimizer: torch.optim.Optimizer) -> tuple[float, float]:
        """The reference group's ``(lr, weight_decay)``."""
        groups = optimizer.param_groups
        lr = float(groups[min(self.lr_ref, len(groups) - 1)]["lr"])
        if self.wd_ref is None or self.wd_ref >= len(groups):
            return lr, 0.0
        return lr, float(groups[self.wd_ref].get("weight_decay", 0.0))

    def state_dict(self) -> dict:
        return asdict(self)


def write_hparams(
    optimizer: torch.optim.Optimizer,
    hp: Hyperparams,
    sampler: Any = None,
    *,
    lr: bool = True,
    weight_decay: bool = True,
    batch_size: bool = True,
    ratios: Optional[GroupRatios] = None,
) -> None:
    """Write ``hp`` into the param groups of ``optimizer`` and into ``sampler.batch_size``.

    The only place rlhpo writes hyperparameters into a torch optimizer (the stacked trainer keeps
    per-row tensors instead and has no optimizer). Without ``ratios`` every group gets ``hp``
    (the training session's optimizer has one group); with them group ``i`` gets
    ``hp.lr * ratios.lr[i]`` and ``hp.weight_decay * ratios.weight_decay[i]``.
    ``lr``/``weight_decay``/``batch_size`` switch each write off, for an optimizer without weight
    decay or a loop whose framework owns the loader.
    """
    for i, g in enumerate(optimizer.param_groups):
        if lr:
            g["lr"] = float(hp.lr) * (ratios.lr_of(i) if ratios is not None else 1.0)
        if weight_decay and "weight_decay" in g:
            g["weight_decay"] = float(hp.weight_decay) * (ratios.wd_of(i, g) if ratios is not None else 1.0)
    if batch_size and sampler is not None:
        sampler.batch_size = int(hp.batch_size)


def write_lr(optimizer: torch.optim.Optimizer, lr: float, ratios: Optional[GroupRatios] = None) -> None:
    """Write only the lr (the per-step base schedule's write, between decisions): as
    :func:`write_hparams` with ``weight_decay=False, batch_size=False``, without building a
    :class:`~rlhpo.tasks.base.Hyperparams` per optimizer step."""
    if ratios is None:
        for g in optimizer.param_groups:
            g["lr"] = lr
    else:
        for i, g in enumerate(optimizer.param_groups):
            g["lr"] = lr * ratios.lr_of(i)
