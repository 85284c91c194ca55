"""The pretrained controller, driving any PyTorch training loop the way a scheduler does.

    controller = rlhpo.Controller.from_pretrained(optimizer=opt, total_examples=50_000)
    loader = controller.make_loader(train_dataset)          # its batch size is controlled too
    for x, y in controller.batches(loader):                  # stops when the budget is spent
        loss = loss_fn(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        controller.step(loss)                                # sets lr / weight decay / batch size

Each step counts the examples it really trained (see :mod:`rlhpo.controller_loops`); each param
group keeps its ratio to the first (see :class:`rlhpo.training.hparams.GroupRatios`).

The controller computes its observations with :mod:`rlhpo.control.features` (the code the environment
uses) and maps actions with :mod:`rlhpo.control.actions`; it does not import the environment.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any, Callable, Iterable, Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from rlhpo.control.decision import DecisionPath, write_hparams
from rlhpo.control.guard import GuardConfig
from rlhpo.controller_loops import (
    CountingLoader,
    batch_len,
    clipping_message,
    examples_of,
    loss_value,
    to_numpy,
    to_plain,
    weight_decay_control,
)
from rlhpo.errors import ControllerError, is_int
from rlhpo.policy.artifact import PolicyArtifact, load_artifact
from rlhpo.policy.driver import PolicyDriver
from rlhpo.tasks import Hyperparams
from rlhpo.training.hparams import GroupRatios
from rlhpo.training.monitor import IntervalStats, TrainingMonitor
from rlhpo.training.sampler import MutableBatchSampler
from rlhpo.training.snapshot import LoopState

log = logging.getLogger(__name__)


class Controller:
    """Sets ``lr`` and ``weight_decay`` in an optimizer's ``param_groups`` (and the batch size of a
    loader it provides) every control interval, from a meta-trained policy.

    :param artifact: a loaded policy (see :meth:`from_pretrained`)
    :param optimizer: any ``torch.optim`` optimizer with ``lr`` in its param groups; with several
        groups, each keeps its starting ratio to the first (a group without weight decay keeps none)
    :param total_examples: the run's budget in training examples; a control interval is
        ``total_examples / n_intervals`` of the policy's spec
    :param batch_size: the batch size of your own loader, counted per :meth:`step` when the step
        says nothing else (taken from :meth:`make_loader` if it is used)
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
        ``sampler``; without one the controller says once that it cannot, and keeps yours)
    :param control_weight_decay: set the weight decay (off by itself, with a warning, when the
        optimizer has none or every group starts at 0)
    :param model: the model, for the guard's snapshots (without it: the optimizer's parameters)
    :param guard: the divergence guard (default: the one the policy was trained under), e.g. to
        cap the lr relative to the start: ``dataclasses.replace(spec.guard_config(), max_lr_ratio=10)``
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
        control_weight_decay: bool = True,
        model: Optional[torch.nn.Module] = None,
        guard: Optional[GuardConfig] = None,
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ControllerError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if any("lr" not in g for g in optimizer.param_groups):
            raise ControllerError(f"{type(optimizer).__name__} has no 'lr' in its param_groups; the controller needs it")
        if not (is_int(total_examples) and total_examples > 0):
            raise ControllerError(f"total_examples must be an integer > 0, got {total_examples!r}")
        if batch_size is not None and not (is_int(batch_size) and batch_size >= 1):
            raise ControllerError(f"batch_size must be None or an integer >= 1, got {batch_size!r}")
        self.artifact, self.spec, self.optimizer = artifact, artifact.spec, optimizer
        self.total_examples = int(total_examples)
        self.val_loss_fn, self.writer, self.deterministic = val_loss_fn, writer, deterministic
        action_config = self.spec.action_config()
        self.controls_weight_decay = weight_decay_control(optimizer, action_config.weight_decay.enabled and control_weight_decay)
        self.decision = DecisionPath(
            action_config, self.total_examples, self.spec.n_intervals, guard or self.spec.guard_config(), **self.spec.decision_kwargs()
        )
        self.driver = PolicyDriver.from_artifact(artifact)
        self.monitor = TrainingMonitor([p for g in optimizer.param_groups for p in g["params"]])
        self.sampler, self.model = sampler, model
        self._declared_bs = int(batch_size) if batch_size else None  # the user's own loader's
        self._used_bs: Optional[int] = self._declared_bs  # the batch size in use, without a sampler
        self._interval_max_bs = 0
        self.control_batch_size = control_batch_size and action_config.batch_size.enabled
        self._declined = False
        self._adaptive = bool(not isinstance(optimizer, torch.optim.SGD) if is_adaptive is None else is_adaptive)
        self._ratios = GroupRatios.of(optimizer)
        self._started = self._restart_pending = self._warned_clip = self._finished = False
        self.examples_seen = 0
        self._delivered = 0  # examples of the batches handed out since the last step
        self._boundary = self.decision.boundary
        self._probe = False
        self._last_val: Optional[float] = None
        self.history: list[dict] = []
        self._hook = optimizer.register_step_pre_hook(self._before_optimizer_step) if track_steps else None

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, policy: str | os.PathLike = "default", *, optimizer: torch.optim.Optimizer, total_examples: int,
        warm_start: bool = False, train_data: Any = None, **kwargs: Any,
    ) -> "Controller":
        """Load the shipped policy (``"default"``), another pretrained name, or an artifact folder. ``warm_start=True``
        (with ``model=`` and ``train_data=``) starts from :func:`rlhpo.recommend`'s advice (see ``rlhpo.recommend.api.warm_start``)."""
        controller = cls(load_artifact(policy), optimizer, total_examples, **kwargs)
        from rlhpo.recommend.api import warm_start as start_warm  # here: rlhpo.recommend imports the controller's package
        return start_warm(controller, train_data) if warm_start else controller

    def make_loader(self, dataset: Dataset, batch_size: Optional[int] = None, seed: int = 0, **loader_kwargs: Any) -> DataLoader:
        """A ``DataLoader`` over ``dataset`` whose batch size this controller sets; it counts the
        examples of each batch as it hands it out (exact with ``num_workers`` too)."""
        bs = batch_size or self._declared_bs or 32
        for bad in ("batch_size", "shuffle", "sampler", "batch_sampler", "drop_last"):
            if bad in loader_kwargs:
                raise ControllerError(f"make_loader: {bad!r} is set by the controller; remove it")
        self.sampler = MutableBatchSampler(len(dataset), bs, generator=torch.Generator().manual_seed(seed))  # type: ignore[arg-type]
        if self._declined:  # begun before the loader existed: it can be controlled now
            self.control_batch_size, self._declined = True, False
        return CountingLoader(dataset, batch_sampler=self.sampler, count=self._count, **loader_kwargs)

    def _count(self, n: int) -> None:
        self._delivered += n

    def batches(self, loader: Iterable) -> Iterator[Any]:
        """Iterate ``loader`` over epochs until the example budget is spent, counting the
        examples of each batch as it is handed out (so :meth:`step` needs no batch size)."""
        counting = isinstance(loader, CountingLoader)
        own = getattr(loader, "batch_sampler", None)
        if self.sampler is None and not self._started and isinstance(own, MutableBatchSampler):
            self.sampler = own  # the user's loader over a mutable sampler: its batch size is ours to set
        while not self.done:
            empty = True
            for batch in loader:
                empty = False
                if not counting:
                    self._count(batch_len(batch) or 0)
                yield batch
                if self.done:
                    self.finish()  # the guard's last word: a run never ends diverged
                    return
            if empty:
                raise ControllerError("batches(loader): the loader yielded no batch")

    # -- the loop --------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.examples_seen >= self.total_examples

    @property
    def hparams(self) -> Hyperparams:
        """The values in effect: the reference param group's lr and weight decay, the batch size."""
        lr, wd = self._ratios.read(self.optimizer)
        return Hyperparams(lr, int(self._current_batch_size()), wd)

    def _current_batch_size(self) -> int:
        if self.sampler is not None:
            return self.sampler.batch_size
        return self._used_bs or 1

    def begin(self) -> None:
        """Start a run: clip the starting values into the policy's bounds (saying so) and reset
        the features. Called by the first :meth:`step` or :meth:`decide`; call it yourself to
        apply the clipping before the first optimizer step. A second call does nothing."""
        if not self._started:
            self._start()

    def _start(self) -> None:
        if self.control_batch_size and self.sampler is None and not self._declined:
            self.decline_batch_size(
                "this loop's batches do not come from controller.make_loader() or a MutableBatchSampler",
                "Use controller.make_loader(dataset) to let it set the batch size, or pass control_batch_size=False.",
            )
        self._ratios = GroupRatios.of(self.optimizer)  # the starting values, as they are now
        asked = self.hparams
        target = LoopState(self.optimizer, self.model, self.sampler)  # what the guard snapshots
        controls = tuple(n for n, on in (("lr", True), ("batch_size", self.control_batch_size),
                                          ("weight_decay", self.controls_weight_decay)) if on)
        off = tuple(n for n in ("batch_size", "weight_decay") if n not in controls)
        start = self.decision.start(asked, self._adaptive, self._set, target, off)  # clipped into the policy's bounds
        message = clipping_message(asked, start, self.spec.action_config(), controls)
        if message and not self._warned_clip:
            warnings.warn(message, stacklevel=3)
            self._warned_clip = True
        self._boundary = self.decision.boundary
        self.driver.reset()
        self._started = True
        self._restart_pending = self.sampler is None and self._used_bs is None  # batch size not known yet

    def decline_batch_size(self, reason: str, remedy: str = "") -> None:
        """Turn batch-size control off, saying once why (the decided batch sizes cannot be applied)."""
        self.control_batch_size, self._declined = False, True
        warnings.warn(
            f"rlhpo Controller: the policy sets the batch size, but {reason}: its batch-size decisions are not "
            "applied; the batch size stays the one your loop trains with, and history records that." + (remedy and f" {remedy}"),
            stacklevel=4,
        )

    @property
    def interval(self) -> int:
        """Decisions taken so far."""
        return self.decision.interval

    # step() and the pre-hook run on every optimizer step: keep them to a few attribute reads
    def _before_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        bs = self._delivered or self._current_batch_size()
        self._probe = TrainingMonitor.should_probe(self._boundary - self.examples_seen, bs)
        if self._probe:
            self.monitor.before_step(True)

    def step(self, loss: torch.Tensor, batch_size: Optional[int] = None, *, batch: Any = None) -> bool:
        """Record one optimizer step; call it right after ``optimizer.step()``.

        The examples the step trained are, first found: ``batch_size``; the size of ``batch``;
        the batches handed out since the last step by :meth:`batches` or the loader of
        :meth:`make_loader`; the size of the sampler's last batch; the ``batch_size`` given to
        the constructor. With none of them it raises :class:`ControllerError`.

        :param loss: the step's training loss (a scalar tensor)
        :param batch_size: examples in the step's batch
        :param batch: the batch the step trained on (its first tensor's first dimension is counted)
        :return: whether the hyperparameters were just changed
        """
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ControllerError(
                f"step(loss): loss must be a scalar tensor, got {type(loss).__name__}"
                + (f" of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else "")
            )
        n = self._examples_of(batch_size, batch)
        if self._used_bs is None:
            self._used_bs = n
        if not self._started:
            self._start()
        elif self._restart_pending and self.decision.interval == 0:
            self._start()  # begun before any batch size was known: start again from the real one
        self._interval_max_bs = max(self._interval_max_bs, n)
        self.monitor.after_step(loss if loss.dim() == 0 else loss.reshape(()), self._probe)
        self._probe = False
        self.examples_seen += n
        decided = False
        # a batch larger than an interval crosses several boundaries: one decision per boundary,
        # the later ones on an empty interval, exactly as the environment the policy met
        while self.examples_seen >= self._boundary and not self.done:
            stats = self.monitor.summary()
            self.decide(stats, self._validation_loss(stats))
            decided = True
        return decided

    def _examples_of(self, batch_size: Optional[int], batch: Any) -> int:
        """The examples one step trained (see :meth:`step`)."""
        delivered, self._delivered = self._delivered, 0
        return examples_of(batch_size, batch, delivered, self.sampler, self._declared_bs)

    def report_validation(self, val_loss: float) -> None:
        """Give the controller a validation loss (a number or a scalar tensor; NaN or inf count as
        divergence); the next decision uses it."""
        self._last_val = loss_value(val_loss, "report_validation(val_loss): val_loss")

    def _validation_loss(self, stats: IntervalStats) -> float:
        if self.val_loss_fn is not None:
            return float(self.val_loss_fn())
        return self._last_val if self._last_val is not None else stats.loss_mean

    def decide(self, stats: IntervalStats, val_loss: float, examples_seen: Optional[int] = None) -> Hyperparams:
        """One control decision from an interval's statistics; applies and returns the new values.

        Training loops that run in whole intervals (``rlhpo.apply``, the evaluation runner) call
        this directly and pass the ``examples_seen`` they trained; :meth:`step` calls it at
        interval boundaries.
        """
        if not self._started:
            self._start()
        if examples_seen is not None:
            self.examples_seen = int(examples_seen)
        if self.sampler is None and self._interval_max_bs:
            self._used_bs, self._interval_max_bs = self._interval_max_bs, 0  # the batch size really used
        hp = self.hparams
        observation = self.decision.observe(stats, val_loss, hp, self.examples_seen)
        self._boundary = self.decision.boundary
        diverged = observation.diverged
        action = self.driver.act(observation.obs, deterministic=self.deterministic)
        if diverged:
            log.warning("rlhpo controller: training diverged at %d examples (%s); %s", self.examples_seen, observation.verdict.reason,
                        "rolled back to the best good state so far, lr cut" if observation.verdict.rolled_back else "stepping every control down")
            if self.writer is not None:
                self.writer.add_scalar("controller/diverged", 1.0, self.examples_seen)
        new = self._set(self.decision.act(action, hp))
        record = dict(
            examples=self.examples_seen,
            steps=int(stats.steps),
            train_loss=float(stats.loss_mean),
            val_loss=float(val_loss),
            lr=new.lr,
            batch_size=new.batch_size,
            weight_decay=new.weight_decay,
            action=self.decision.last_action.tolist(),
            diverged=bool(diverged),
            rolled_back=bool(observation.verdict.rolled_back),
        )
        self.history.append(record)
        if self.writer is not None:
            for key in ("lr", "batch_size", "weight_decay", "train_loss", "val_loss"):
                self.writer.add_scalar(f"controller/{key}", record[key], self.examples_seen)
        return new

    def _set(self, hp: Hyperparams) -> Hyperparams:
        """Write ``hp`` (the controls this run has) and return the values in effect."""
        write_hparams(
            self.optimizer, hp, self.sampler, weight_decay=self.controls_weight_decay,
            batch_size=self.control_batch_size, ratios=self._ratios,
        )
        return self.hparams

    # -- checkpointing ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The controller's state: tensors and plain Python types only, so a checkpoint holding it
        loads with ``torch.load(path, weights_only=True)``."""
        return {
            "examples_seen": int(self.examples_seen),
            "started": self._started,
            "last_val": self._last_val,
            "decision": to_plain(self.decision.state_dict()),
            "monitor": self.monitor.state_dict(),
            "driver": to_plain(self.driver.state_dict()),
            "sampler": None if self.sampler is None else self.sampler.state_dict(),
            "batch_size": self._used_bs,
            "control_batch_size": self.control_batch_size,
            "ratios": self._ratios.state_dict(),
            "history": to_plain(list(self.history)),
        }

    def load_state_dict(self, state: dict) -> None:
        self.examples_seen = int(state["examples_seen"])
        decision = state["decision"]  # the guard's snapshots are torch state dicts: they stay tensors
        self.decision.load_state_dict({**to_numpy(decision), "guard": decision["guard"]})
        self.monitor.load_state_dict(state["monitor"])
        self._boundary = self.decision.boundary
        self._started = bool(state["started"])
        if self._started:  # a resumed run's guard snapshots and restores this loop's state again
            self.decision.guard.target = LoopState(self.optimizer, self.model, self.sampler)
        self._last_val = state["last_val"]
        self.driver.load_state_dict(to_numpy(state["driver"]))
        if self.sampler is not None and state.get("sampler") is not None:
            self.sampler.load_state_dict(state["sampler"])
        self._used_bs = state["batch_size"]
        self.control_batch_size = bool(state.get("control_batch_size", self.control_batch_size))
        if state.get("ratios") is not None:
            self._ratios = GroupRatios(**state["ratios"])
        self._delivered = 0
        self.history = list(state["history"])

    def finish(self, val_loss: Optional[float] = None) -> Optional[float]:
        """End the run under the guard: after a divergence since the last decision the best good state
        comes back (with ``restore_best``, the best one if the end is worse). ``batches()`` and the
        Lightning/HF callbacks call it; returns the validation (else training) loss then in effect."""
        if not self._started or self._finished:
            return None
        self._finished = True
        stats = self.monitor.summary()
        val = self._validation_loss(stats) if val_loss is None else float(val_loss)
        verdict = self.decision.guard.review(stats.nonfinite, val)
        if verdict.diverged:
            log.warning("rlhpo controller: training diverged at the end of the run (%s); %s", verdict.reason,
                        "the best good state so far is back" if verdict.rolled_back else "nothing to restore")
            self.history.append(dict(examples=self.examples_seen, steps=int(stats.steps), val_loss=val, end=True,
                                     diverged=True, rolled_back=verdict.rolled_back, **vars(self.hparams)))
        restored = self.decision.guard.finish(verdict.val_loss)
        return verdict.val_loss if restored is None else restored

    def close(self) -> None:
        """Remove the optimizer hook."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
