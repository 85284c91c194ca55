"""PyTorch Lightning callback: the pretrained controller sets lr / weight decay (and the batch
size, when the train loader uses a :class:`~rlhpo.training.session.MutableBatchSampler`).

    from rlhpo.integrations.lightning import ControllerCallback
    trainer = lightning.Trainer(max_epochs=5, callbacks=[ControllerCallback()])

Install the extra: ``pip install rlhpo[lightning]``.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch

try:
    import lightning.pytorch as pl
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("rlhpo.integrations.lightning needs PyTorch Lightning: pip install 'rlhpo[lightning]'") from e

from rlhpo.controller import Controller
from rlhpo.policy.artifact import load_artifact
from rlhpo.training.sampler import MutableBatchSampler


class ControllerCallback(pl.Callback):
    """Drives the first optimizer of a Lightning run with a pretrained policy.

    :param policy: pretrained name or artifact folder
    :param total_examples: the run's example budget; default: the trainer's estimated stepping
        batches times the starting batch size
    :param val_metric: the logged metric the controller reads as validation loss, if present
    """

    def __init__(self, policy: str | os.PathLike = "default", total_examples: Optional[int] = None, val_metric: str = "val_loss") -> None:
        self.policy, self.total_examples, self.val_metric = policy, total_examples, val_metric
        self.controller: Optional[Controller] = None
        self._pending_state: Optional[dict] = None

    def on_train_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        optimizer = trainer.optimizers[0]
        loader = trainer.train_dataloader
        sampler = getattr(loader, "batch_sampler", None)
        sampler = sampler if isinstance(sampler, MutableBatchSampler) else None
        batch_size = sampler.batch_size if sampler is not None else getattr(loader, "batch_size", None) or 1
        total = self.total_examples or int(trainer.estimated_stepping_batches) * int(batch_size)
        self.controller = Controller(
            load_artifact(self.policy),
            optimizer,
            total_examples=total,
            batch_size=batch_size,
            sampler=sampler,
            control_batch_size=sampler is not None,
        )
        if self._pending_state is not None:
            self.controller.load_state_dict(self._pending_state)
        self.controller.begin()

    def on_train_batch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.controller is None or self.controller.done:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return  # manual optimisation without a returned loss: nothing to observe
        first = batch[0] if isinstance(batch, (list, tuple)) else batch
        n = len(first) if hasattr(first, "__len__") else None
        self.controller.step(loss.detach(), batch_size=n)

    def on_validation_epoch_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        value = trainer.callback_metrics.get(self.val_metric)
        if self.controller is not None and value is not None:
            self.controller.report_validation(float(value))

    def on_train_end(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if self.controller is not None:
            self.controller.close()

    def state_dict(self) -> dict:
        return {} if self.controller is None else self.controller.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending_state = state_dict or None
