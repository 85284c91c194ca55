"""Hugging Face ``Trainer`` callback: the pretrained controller sets lr and weight decay.

.. warning:: The Trainer steps its lr scheduler *after* callbacks, so an lr written into the
   optimizer by a callback is overwritten on the next step. This callback therefore makes the
   controller the scheduler: it rewires the Trainer's ``LambdaLR`` (every built-in
   ``lr_scheduler_type`` is one) so that the factor it applies is the controller's lr over the
   base lr. The batch size stays the Trainer's (it owns the data loader; the callback says so
   once). Each param group keeps its ratio to the first: the Trainer's no-decay group (biases,
   norms) keeps weight decay 0.

    from rlhpo.integrations.huggingface import ControllerTrainerCallback
    trainer = Trainer(model, args, train_dataset=ds, callbacks=[ControllerTrainerCallback()])

Install the extra: ``pip install rlhpo[huggingface]``.
"""

from __future__ import annotations

import os
from typing import Any, Optional

import torch

try:
    from transformers import TrainerCallback
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError("rlhpo.integrations.huggingface needs transformers: pip install 'rlhpo[huggingface]'") from e

from rlhpo.controller import Controller
from rlhpo.policy.artifact import DEFAULT_POLICY, load_artifact


class ControllerTrainerCallback(TrainerCallback):
    """Drives a ``transformers.Trainer`` run with a pretrained policy.

    :param policy: pretrained name or artifact folder
    :param val_metric: the evaluation metric read as validation loss
    """

    def __init__(self, policy: str | os.PathLike = DEFAULT_POLICY, val_metric: str = "eval_loss") -> None:
        self.policy, self.val_metric = policy, val_metric
        self.controller: Optional[Controller] = None
        self._loss: Optional[torch.Tensor] = None
        self._hook: Any = None

    def on_train_begin(
        self, args: Any, state: Any, control: Any, model: Any = None, optimizer: Any = None, lr_scheduler: Any = None, **kwargs: Any
    ) -> None:
        raw = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
        # one optimizer step trains this rank's batch x accumulation; the controller counts every rank's
        batch = args.per_device_train_batch_size * max(1, args.gradient_accumulation_steps)
        self._batch = batch
        self.controller = Controller(
            raw,
            total_examples=int(state.max_steps) * batch * max(1, args.world_size),
            policy=load_artifact(self.policy),
            batch_size=batch,
            model=model,
        )
        if self.controller.control_batch_size:
            self.controller.decline_batch_size("the Hugging Face Trainer owns its data loader")
        self.controller.begin()
        if lr_scheduler is not None and hasattr(lr_scheduler, "lr_lambdas"):
            base = list(lr_scheduler.base_lrs)
            # the controller is the scheduler: LambdaLR multiplies base lr by our factor
            lr_scheduler.lr_lambdas = [
                (lambda _step, i=i: self.controller.optimizer.param_groups[i]["lr_target"] / base[i])
                for i in range(len(raw.param_groups))
            ]
        for g in raw.param_groups:
            g["lr_target"] = g["lr"]
        self._hook = model.register_forward_hook(self._capture_loss) if model is not None else None

    def _capture_loss(self, module: Any, inputs: Any, output: Any) -> None:
        if module.training:
            loss = getattr(output, "loss", None)
            if loss is None and isinstance(output, dict):
                loss = output.get("loss")
            if isinstance(loss, torch.Tensor) and loss.numel() == 1:
                self._loss = loss.detach()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        c = self.controller
        if c is None or self._loss is None or c.done:
            return
        changed = c.step(self._loss, batch_size=self._batch)
        if changed:
            for g in c.optimizer.param_groups:
                g["lr_target"] = g["lr"]  # what the rewired scheduler applies from now on

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Optional[dict] = None, **kwargs: Any) -> None:
        if self.controller is not None and metrics and self.val_metric in metrics:
            self.controller.report_validation(float(metrics[self.val_metric]))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._hook is not None:
            self._hook.remove()
        if self.controller is not None:
            self.controller.finish()  # the guard's last word: a run never ends diverged
            self.controller.close()
