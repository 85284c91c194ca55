"""PyTorch Lightning callback: the pretrained controller sets lr / weight decay (and the batch
size, when the train loader uses a :class:`~rlhpo.training.sampler.MutableBatchSampler`).

    from rlhpo.integrations.lightning import ControllerCallback
    trainer = lightning.Trainer(max_epochs=5, callbacks=[ControllerCallback()])

Both distributions of Lightning work: ``lightning`` (``lightning.pytorch.Trainer``) and
``pytorch-lightning`` (``pytorch_lightning.Trainer``). The callback subclasses the ``Callback``
of every one installed, so either Trainer accepts it.

**Batch-size control trains the whole budget.** Lightning fixes the batches per epoch from
``len(train_dataloader)`` when an epoch's loader is set up, so a batch size that shrinks
mid-run would end each epoch early and the run at ``max_epochs`` with part of its budget
untrained. With batch-size control the run's length is the controller's example budget
instead: the sampler resumes an epoch Lightning cut short (no example is skipped), the
callback adds an epoch (or a step, under ``max_steps``) while the budget is not spent, and
stops the trainer when it is. ``reload_dataloaders_every_n_epochs=1`` (optional) keeps
Lightning's epoch length and progress bar in step with the batch size.

Install the extra: ``pip install rlhpo[lightning]``.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any, Optional

import torch

from rlhpo.controller import Controller
from rlhpo.controller.batches import batch_len
from rlhpo.policy.artifact import DEFAULT_POLICY, load_artifact
from rlhpo.training.sampler import MutableBatchSampler

log = logging.getLogger(__name__)


def _callback_bases() -> tuple[type, ...]:
    """The ``Callback`` class of each installed Lightning distribution."""
    bases = []
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            bases.append(importlib.import_module(name).Callback)
        except ImportError:
            continue
    if not bases:
        raise ImportError("rlhpo.integrations.lightning needs PyTorch Lightning: pip install 'rlhpo[lightning]'")
    return tuple(dict.fromkeys(bases))  # one class if both names are the same package


class _ControllerCallback:
    """Drives the first optimizer of a Lightning run with a pretrained policy.

    :param policy: pretrained name or artifact folder
    :param total_examples: the run's example budget (all ranks'); default: the trainer's estimated
        stepping batches times the accumulated batches times the starting batch size times the
        world size
    :param val_metric: the logged metric the controller reads as validation loss, if present
    """

    def __init__(
        self, policy: str | os.PathLike = DEFAULT_POLICY, total_examples: Optional[int] = None, val_metric: str = "val_loss"
    ) -> None:
        self.policy, self.total_examples, self.val_metric = policy, total_examples, val_metric
        self.controller: Optional[Controller] = None
        self._pending_state: Optional[dict] = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        optimizer = trainer.optimizers[0]
        loader = trainer.train_dataloader
        sampler = getattr(loader, "batch_sampler", None)
        sampler = sampler if isinstance(sampler, MutableBatchSampler) else None
        batch_size = sampler.batch_size if sampler is not None else getattr(loader, "batch_size", None) or 1
        steps = int(trainer.estimated_stepping_batches) * max(1, int(trainer.accumulate_grad_batches))
        total = self.total_examples or steps * int(batch_size) * max(1, int(trainer.world_size))  # every rank's examples
        c = self.controller = Controller(
            optimizer, total_examples=total, policy=load_artifact(self.policy), batch_size=batch_size, sampler=sampler, model=pl_module
        )
        if sampler is None and c.control_batch_size:
            c.decline_batch_size(
                "the train loader does not use rlhpo.MutableBatchSampler",
                "Pass DataLoader(dataset, batch_sampler=rlhpo.MutableBatchSampler(len(dataset), batch_size)) to let it.",
            )
        if self._pending_state is not None:
            c.load_state_dict(self._pending_state)
        c.begin()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        c = self.controller
        if c is None or c.done:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return  # manual optimisation without a returned loss: nothing to observe
        c.step(loss.detach(), batch_size=batch_len(batch) or c.hparams.batch_size)  # the batch really trained
        if c.done:
            trainer.should_stop = True  # the budget is spent
        elif c.control_batch_size and 0 <= trainer.fit_loop.max_steps <= trainer.global_step + 1:
            trainer.fit_loop.epoch_loop.max_steps = trainer.global_step + 2  # smaller batches: more steps

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        c, loop = self.controller, trainer.fit_loop
        if c is None or c.done or not c.control_batch_size or loop.max_epochs is None or loop.max_epochs < 0:
            return
        if loop.epoch_progress.current.processed >= loop.max_epochs:
            if loop.max_epochs == getattr(self, "_asked_epochs", loop.max_epochs):
                log.info("rlhpo: the batch size shrank; training on past max_epochs=%d until the budget is spent", loop.max_epochs)
                self._asked_epochs = loop.max_epochs
            loop.max_epochs += 1

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        value = trainer.callback_metrics.get(self.val_metric)
        if self.controller is not None and value is not None:
            self.controller.report_validation(float(value))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self.controller is not None:
            self.controller.finish()  # the guard's last word: a run never ends diverged
            self.controller.close()

    def state_dict(self) -> dict:
        return {} if self.controller is None else self.controller.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending_state = state_dict or None


#: the callback, a subclass of each installed Lightning's ``Callback``
ControllerCallback = type(
    "ControllerCallback", (_ControllerCallback, *_callback_bases()), {"__module__": __name__, "__doc__": _ControllerCallback.__doc__}
)
