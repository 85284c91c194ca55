"""Writing hyperparameters into a training loop: the one writer, for the training session, the
decision path (:mod:`rlhpo.control.decision`) and :class:`rlhpo.Controller` alike."""

from __future__ import annotations

from typing import Any

import torch

from rlhpo.tasks.base import Hyperparams


def write_hparams(
    optimizer: torch.optim.Optimizer,
    hp: Hyperparams,
    sampler: Any = None,
    *,
    lr: bool = True,
    weight_decay: bool = True,
    batch_size: bool = True,
) -> None:
    """Write ``hp`` into every param group of ``optimizer`` and into ``sampler.batch_size``.

    The only place rlhpo writes hyperparameters into a torch optimizer (the stacked trainer keeps
    per-row tensors instead and has no optimizer). ``lr``/``weight_decay``/``batch_size`` switch
    each write off, for an optimizer without weight decay or a loop whose framework owns the
    loader.
    """
    for g in optimizer.param_groups:
        if lr:
            g["lr"] = float(hp.lr)
        if weight_decay and "weight_decay" in g:
            g["weight_decay"] = float(hp.weight_decay)
    if batch_size and sampler is not None:
        sampler.batch_size = int(hp.batch_size)
