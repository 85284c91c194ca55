"""The pretrained controller, driving any PyTorch training loop the way a scheduler does.

    controller = rlhpo.Controller.from_pretrained(optimizer=opt, total_examples=50_000)
    loader = controller.make_loader(train_dataset)          # its batch size is controlled too
    for x, y in controller.batches(loader):                  # stops when the budget is spent
        loss = loss_fn(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        controller.step(loss)                                # sets lr / weight decay / batch size

The controller computes its observations with :mod:`rlhpo.control.features` (the code the environment
uses) and maps actions with :mod:`rlhpo.control.actions`; it does not import the environment.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rlhpo.control.decision import DecisionPath, write_hparams
from rlhpo.errors import ControllerError  # noqa: F401  (re-exported)
from rlhpo.policy.artifact import PolicyArtifact, load_artifact
from rlhpo.policy.driver import PolicyDriver
from rlhpo.tasks import Hyperparams
from rlhpo.training.monitor import IntervalStats, TrainingMonitor
from rlhpo.training.sampler import MutableBatchSampler

log = logging.getLogger(__name__)


class Controller:
    """Sets ``lr`` and ``weight_decay`` in an optimizer's ``param_groups`` (and the batch size of a
    loader it provides) every control interval, from a meta-trained policy.

    :param artifact: a loaded policy (see :meth:`from_pretrained`)
    :param optimizer: any ``torch.optim`` optimizer with ``lr`` in its param groups
    :param total_examples: the run's budget in training examples; a control interval is
        ``total_examples / n_intervals`` of the policy's spec
    :param batch_size: the starting batch size (taken from :meth:`make_loader` if it is used)
    :param val_loss_fn: called at each decision for a validation loss (optional; otherwise the
        last value given to :meth:`report_validation`, else the interval's training loss)
    :param writer: a ``torch.utils.tensorboard.SummaryWriter`` to log decisions to
    :param deterministic: use the policy's mean action (default) rather than sampling
    :param is_adaptive: whether the optimizer is adaptive (Adam-like); guessed from its class
    :param sampler: a :class:`~rlhpo.training.sampler.MutableBatchSampler` whose batch size to control
        (:meth:`make_loader` makes one)
    :param track_steps: watch the optimizer's steps (a step pre-hook) for :meth:`step`; loops that
        call :meth:`decide` with their own statistics turn it off
    :param control_batch_size: set the batch size (needs a loader from :meth:`make_loader` or a
        ``sampler``); off where the framework owns the data loader
    """

    def __init__(
        self,
        artifact: PolicyArtifact,
        optimizer: torch.optim.Optimizer,
        total_examples: int,
        batch_size: Optional[int] = None,
        val_loss_fn: Optional[Callable[[], float]] = None,
        writer: Any = None,
        deterministic: bool = True,
        is_adaptive: Optional[bool] = None,
        sampler: Optional[MutableBatchSampler] = None,
        track_steps: bool = True,
        control_batch_size: bool = True,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ControllerError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if any("lr" not in g for g in optimizer.param_groups):
            raise ControllerError(f"{type(optimizer).__name__} has no 'lr' in its param_groups; the controller needs it")
        if not (isinstance(total_examples, (int, np.integer)) and total_examples > 0):
            raise ControllerError(f"total_examples must be an integer > 0, got {total_examples!r}")
        self.artifact = artifact
        self.spec = artifact.spec
        self.optimizer = optimizer
        self.total_examples = int(total_examples)
        self.val_loss_fn = val_loss_fn
        self.writer = writer
        self.deterministic = deterministic
        action_config = self.spec.action_config()
        self.controls_weight_decay = action_config.weight_decay.enabled and "weight_decay" in optimizer.param_groups[0]
        if action_config.weight_decay.enabled and not self.controls_weight_decay:
            warnings.warn(
                f"{type(optimizer).__name__} has no weight_decay: weight-decay control is off for this run",
                stacklevel=2,
            )
        self.decision = DecisionPath(action_config, self.total_examples, self.spec.n_intervals, self.spec.divergence_factor)
        self.driver = PolicyDriver.from_artifact(artifact)
        self.monitor = TrainingMonitor([p for g in optimizer.param_groups for p in g["params"]])
        self.sampler = sampler
        self._batch_size = int(batch_size) if batch_size else None
        self.control_batch_size = control_batch_size
        if is_adaptive is None:
            is_adaptive = not isinstance(optimizer, torch.optim.SGD)
        self._adaptive = bool(is_adaptive)
        self._started = False
        self.examples_seen = 0
        self._boundary = self.decision.boundary
        self._probe = False
        self._last_val: Optional[float] = None
        self.history: list[dict] = []
        self._hook = optimizer.register_step_pre_hook(self._before_optimizer_step) if track_steps else None

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, policy: str | os.PathLike = "default", *, optimizer: torch.optim.Optimizer, total_examples: int, **kwargs: Any
    ) -> "Controller":
        """Load the shipped policy (``"default"``), another pretrained name, or an artifact folder."""
        return cls(load_artifact(policy), optimizer, total_examples, **kwargs)

    def make_loader(self, dataset: Dataset, batch_size: Optional[int] = None, seed: int = 0, **loader_kwargs: Any) -> DataLoader:
        """A ``DataLoader`` over ``dataset`` whose batch size this controller sets."""
        bs = batch_size or self._batch_size or 32
        for bad in ("batch_size", "shuffle", "sampler", "batch_sampler", "drop_last"):
            if bad in loader_kwargs:
                raise ControllerError(f"make_loader: {bad!r} is set by the controller; remove it")
        self.sampler = MutableBatchSampler(len(dataset), bs, generator=torch.Generator().manual_seed(seed))  # type: ignore[arg-type]
        self._batch_size = self.sampler.batch_size
        return DataLoader(dataset, batch_sampler=self.sampler, **loader_kwargs)

    def batches(self, loader: Iterable) -> Iterator[Any]:
        """Iterate ``loader`` over epochs until the example budget is spent."""
        while not self.done:
            for batch in loader:
                yield batch
                if self.done:
                    return

    # -- the loop --------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.examples_seen >= self.total_examples

    @property
    def hparams(self) -> Hyperparams:
        g = self.optimizer.param_groups[0]
        return Hyperparams(float(g["lr"]), int(self._current_batch_size()), float(g.get("weight_decay", 0.0)))

    def _current_batch_size(self) -> int:
        if self.sampler is not None:
            return self.sampler.batch_size
        return self._batch_size or 1

    def begin(self) -> None:
        """Start a run: clip the starting values into the policy's bounds and reset the features.

        Called by the first :meth:`step` or :meth:`decide`; call it yourself to apply the clipping
        before the first optimizer step."""
        self.decision.start(self.hparams, self._adaptive, self._set)  # clipped into the policy's bounds
        self._boundary = self.decision.boundary
        self.driver.reset()
        self._started = True

    @property
    def interval(self) -> int:
        """Decisions taken so far."""
        return self.decision.interval

    # step() and the pre-hook run on every optimizer step: keep them to a few attribute reads
    def _before_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        bs = self.sampler.batch_size if self.sampler is not None else (self._batch_size or 1)
        self._probe = TrainingMonitor.should_probe(self._boundary - self.examples_seen, bs)
        if self._probe:
            self.monitor.before_step(True)

    def step(self, loss: torch.Tensor, batch_size: Optional[int] = None) -> bool:
        """Record one optimizer step; call it right after ``optimizer.step()``.

        :param loss: the step's training loss (a scalar tensor)
        :param batch_size: examples in the step's batch (default: the controlled batch size)
        :return: whether the hyperparameters were just changed
        """
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ControllerError(
                f"step(loss): loss must be a scalar tensor, got {type(loss).__name__}"
                + (f" of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else "")
            )
        if batch_size is not None and not (
            isinstance(batch_size, (int, np.integer)) and not isinstance(batch_size, bool) and batch_size >= 1
        ):
            raise ControllerError(f"step(loss, batch_size): batch_size must be an integer >= 1, got {batch_size!r}")
        if not self._started:
            self.begin()
        self.monitor.after_step(loss if loss.dim() == 0 else loss.reshape(()), self._probe)
        self._probe = False
        self.examples_seen += int(batch_size) if batch_size is not None else self._current_batch_size()
        decided = False
        # a batch larger than an interval crosses several boundaries: one decision per boundary,
        # the later ones on an empty interval, exactly as the environment the policy met
        while self.examples_seen >= self._boundary and not self.done:
            stats = self.monitor.summary()
            self.decide(stats, self._validation_loss(stats))
            decided = True
        return decided

    def report_validation(self, val_loss: float) -> None:
        """Give the controller a validation loss (a number or a scalar tensor; NaN or inf count as
        divergence); the next decision uses it."""
        if isinstance(val_loss, torch.Tensor) and val_loss.numel() == 1:
            val_loss = val_loss.item()
        if isinstance(val_loss, bool) or not isinstance(val_loss, (int, float, np.integer, np.floating)):
            what = f"Tensor of shape {tuple(val_loss.shape)}" if isinstance(val_loss, torch.Tensor) else type(val_loss).__name__
            raise ControllerError(f"report_validation(val_loss): val_loss must be a number or a scalar tensor, got {what}")
        self._last_val = float(val_loss)

    def _validation_loss(self, stats: IntervalStats) -> float:
        if self.val_loss_fn is not None:
            return float(self.val_loss_fn())
        if self._last_val is not None:
            return self._last_val
        return stats.loss_mean

    def decide(self, stats: IntervalStats, val_loss: float, examples_seen: Optional[int] = None) -> Hyperparams:
        """One control decision from an interval's statistics; applies and returns the new values.

        Training loops that run in whole intervals (``rlhpo.apply``, the evaluation runner) call
        this directly and pass the ``examples_seen`` they trained; :meth:`step` calls it at
        interval boundaries.
        """
        if not self._started:
            self.begin()
        if examples_seen is not None:
            self.examples_seen = int(examples_seen)
        hp = self.hparams
        observation = self.decision.observe(stats, val_loss, hp, self.examples_seen)
        self._boundary = self.decision.boundary
        diverged = observation.diverged
        action = self.driver.act(observation.obs, deterministic=self.deterministic)
        if diverged:
            log.warning("rlhpo controller: training diverged at %d examples; stepping every control down", self.examples_seen)
            if self.writer is not None:
                self.writer.add_scalar("controller/diverged", 1.0, self.examples_seen)
        new = self._set(self.decision.act(action, hp, diverged))
        record = dict(
            examples=self.examples_seen,
            train_loss=stats.loss_mean,
            val_loss=val_loss,
            lr=new.lr,
            batch_size=new.batch_size,
            weight_decay=new.weight_decay,
            action=self.decision.last_action.tolist(),
            diverged=diverged,
        )
        self.history.append(record)
        if self.writer is not None:
            for key in ("lr", "batch_size", "weight_decay", "train_loss", "val_loss"):
                self.writer.add_scalar(f"controller/{key}", record[key], self.examples_seen)
        return new

    def _set(self, hp: Hyperparams) -> Hyperparams:
        """Write ``hp`` (the controls this run has) and return the values in effect."""
        write_hparams(
            self.optimizer, hp, self.sampler, weight_decay=self.controls_weight_decay, batch_size=self.control_batch_size
        )
        if self.control_batch_size and self.sampler is None:
            self._batch_size = hp.batch_size
        return self.hparams

    # -- checkpointing ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "examples_seen": self.examples_seen,
            "started": self._started,
            "last_val": self._last_val,
            "decision": self.decision.state_dict(),
            "driver": self.driver.state_dict(),
            "sampler": None if self.sampler is None else self.sampler.state_dict(),
            "batch_size": self._batch_size,
            "history": list(self.history),
        }

    def load_state_dict(self, state: dict) -> None:
        self.examples_seen = int(state["examples_seen"])
        self.decision.load_state_dict(state["decision"])
        self._boundary = self.decision.boundary
        self._started = bool(state["started"])
        self._last_val = state["last_val"]
        self.driver.load_state_dict(state["driver"])
        if self.sampler is not None and state.get("sampler") is not None:
            self.sampler.load_state_dict(state["sampler"])
        self._batch_size = state["batch_size"]
        self.history = list(state["history"])

    def close(self) -> None:
        """Remove the optimizer hook."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
