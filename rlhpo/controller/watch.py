"""What the loop tells :class:`rlhpo.Controller` besides its batches: the validation loss each
decision reads (:class:`Validation`), and how the loop calls it (:class:`Watch`: the optimizer's
steps against the ``step()`` calls, each misuse said once, from the user's line)."""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch

from rlhpo.errors import ControllerError, warn_user
from rlhpo.training.monitor import IntervalStats

#: optimizer steps without a controller.step() after which the controller says it is not driven
SILENT_STEPS = 100
NO_STEP = ("rlhpo Controller: optimizer.step() ran but controller.step(loss) was never called: the controller counts "
           "the budget and decides in step(), so it has decided nothing; call controller.step(loss) right after "
           "each optimizer.step()")
ORDER = ("rlhpo Controller: controller.step(loss) is called before optimizer.step(); call it right after "
         "optimizer.step(), so each step is counted after it trained")


def loss_value(value: Any, where: str) -> float:
    """A loss given as a number or a scalar tensor, as a float; a clear error for anything else."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        what = f"Tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
        raise ControllerError(f"{where} must be a number or a scalar tensor, got {what}")
    return float(value)


class Validation:
    """The validation loss of each decision: ``fn()``, else the last value reported, else the
    interval's training loss (a proxy: :attr:`proxy` says so, and the guard's rules that a
    noisy training loss would trip sit that decision out).

    :param fn: called at each decision for a validation loss (None: none)
    """

    def __init__(self, fn: Optional[Callable[[], float]] = None) -> None:
        self.fn = fn
        self.last: Optional[float] = None  # the last value reported
        self.last_train: Optional[float] = None  # the last interval's training loss
        self.proxy = False  # the last loss given was the training loss

    def report(self, value: Any) -> None:
        self.last = loss_value(value, "report_validation(val_loss): val_loss")

    def loss(self, stats: IntervalStats) -> float:
        if self.fn is not None:
            return float(self.fn())
        if self.last is not None:
            return self.last
        self.proxy = True
        if stats.steps == 0:  # an interval shorter than a batch: no news, never a divergence
            return self.last_train if self.last_train is not None else float("inf")
        self.last_train = stats.loss_mean
        return stats.loss_mean

    def take_proxy(self) -> bool:
        """Whether the loss just read was a proxy (and forget it)."""
        proxy, self.proxy = self.proxy, False
        return proxy


class Watch:
    """How the loop drives the controller: optimizer steps seen (through a step pre-hook),
    ``step()`` calls, the optimizer steps of the intervals decided, and the misuses said.

    :param is_main: whether this process speaks (rank 0; in one process: True)
    """

    def __init__(self, is_main: bool = True) -> None:
        self.is_main = is_main
        self.opt_steps = 0  # optimizer steps seen
        self.calls = 0  # step() calls
        self.behind = 0  # of the first three calls, those before their optimizer step
        self.decided_steps = 0  # optimizer steps of the intervals decided so far (the TensorBoard x-axis)
        self.said: set[str] = set()

    def say_once(self, key: str, message: str) -> None:
        """A misuse or a surprise, as a warning from the user's line, once per controller."""
        if key not in self.said and self.is_main:
            self.said.add(key)
            warn_user(message)

    def optimizer_step(self) -> None:
        self.opt_steps += 1
        if self.calls == 0 and self.opt_steps == SILENT_STEPS:
            self.say_once("no-step", NO_STEP)

    def step_called(self, hooked: bool, scaled: bool) -> None:
        """One ``step()`` call; ``hooked``: optimizer steps are seen; ``scaled``: a GradScaler
        may skip optimizer steps (so the order cannot be told)."""
        self.calls += 1
        if hooked and self.calls <= 3:
            self.behind += self.opt_steps < self.calls
            if self.behind == 3 and not scaled:  # three calls, each before its optimizer step
                self.say_once("order", ORDER)

    def at_finish(self, hooked: bool) -> None:
        if hooked and self.calls == 0 and self.opt_steps > 0:
            self.say_once("no-step", NO_STEP)

    def state_dict(self) -> list[int]:
        return [self.opt_steps, self.calls, self.behind, self.decided_steps]

    def load_state_dict(self, counts: list) -> None:
        self.opt_steps, self.calls, self.behind, self.decided_steps = (int(v) for v in counts)
