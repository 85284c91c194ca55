"""The pretrained controller, driving any PyTorch training loop the way a scheduler does.

    controller = rlhpo.Controller(opt, total_steps=epochs * len(loader))   # like OneCycleLR
    for epoch in range(epochs):
        for x, y in loader:
            loss = loss_fn(model(x), y)
            opt.zero_grad(); loss.backward(); opt.step()
            controller.step(loss)                            # sets lr / weight decay

Opt-in: ``controller.make_loader(dataset)`` lets it set the batch size too (the budget is then
counted in examples); ``val_loss_fn=`` gives it a validation loss; ``model=`` lets the guard
snapshot buffers (BatchNorm) and counts examples from the model's inputs. What a loop can get
wrong is said when it happens (:mod:`rlhpo.controller_budget`). Each param group keeps its ratio
to the first (see :class:`rlhpo.training.hparams.GroupRatios`).

The controller computes its observations with :mod:`rlhpo.control.features` (the code the environment
uses) and maps actions with :mod:`rlhpo.control.actions`; it does not import the environment.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Any, Callable, Optional

import torch

from rlhpo.control.decision import DecisionPath, check_intervals, write_hparams
from rlhpo.control.distributed import RankSync
from rlhpo.control.guard import GuardConfig, Verdict
from rlhpo.control.prior import CALIBRATED, optimizer_kind
from rlhpo.controller_budget import Budget, parse_budget
from rlhpo.controller_data import ControllerData
from rlhpo.controller_loops import (
    clipping_message,
    examples_of,
    loss_value,
    weight_decay_control,
)
from rlhpo.errors import ControllerError, is_int, warn_user
from rlhpo.output import log_record
from rlhpo.policy.artifact import PolicyArtifact, load_artifact
from rlhpo.policy.driver import PolicyDriver
from rlhpo.tasks import Hyperparams
from rlhpo.training.hparams import GroupRatios, write_lr
from rlhpo.training.monitor import IntervalStats, TrainingMonitor
from rlhpo.training.sampler import MutableBatchSampler
from rlhpo.training.snapshot import LoopState, check_scaler

log = logging.getLogger(__name__)

#: optimizer steps without a controller.step() after which the controller says it is not driven
_SILENT_STEPS = 100
_NO_STEP = ("rlhpo Controller: optimizer.step() ran but controller.step(loss) was never called: the controller counts "
            "the budget and decides in step(), so it has decided nothing; call controller.step(loss) right after "
            "each optimizer.step()")


class Controller(ControllerData):
    """Sets ``lr`` and ``weight_decay`` in an optimizer's ``param_groups`` (and the batch size of a
    loader it provides) every control interval, from a meta-trained policy.

    :param optimizer: any ``torch.optim`` optimizer with ``lr`` in its param groups; with several
        groups, each keeps its starting ratio to the first (a group without weight decay keeps none)
    :param total_examples: the run's budget in training examples (or give ``total_steps``); a
        control interval is ``1 / n_intervals`` of the budget (the policy's spec)
    :param total_steps: the run's budget in optimizer steps, as ``OneCycleLR`` takes it (with
        :meth:`make_loader` it becomes ``total_steps`` x the starting batch size in examples)
    :param policy: ``"default"`` (the shipped policy), another pretrained name, an artifact folder,
        or a loaded :class:`~rlhpo.policy.artifact.PolicyArtifact`
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
    :param control_batch_size: set the batch size: ``None`` (default) when the batches come from
        :meth:`make_loader` or a ``sampler``, else yours is kept; ``True`` says so once if it cannot
    :param control_weight_decay: set the weight decay (off by itself, with a warning, when the
        optimizer has none or every group starts at 0)
    :param model: the model, for the guard's snapshots (without it: the optimizer's parameters);
        its inputs in training are counted as the examples of a step nothing else counts
    :param guard: the divergence guard (default: the one the policy was trained under), e.g. to
        cap the lr relative to the start: ``dataclasses.replace(spec.guard_config(), max_lr_ratio=10)``
    :param scaler: the loop's ``torch.amp.GradScaler``: the guard snapshots and restores its state
        too (a step it skips for inf gradients is no divergence: the optimizer did not step)
    :param n_intervals: the run's decisions (default: the policy's); the base schedule ends at the
        budget whatever it is

    Under ``torch.distributed`` every rank's controller takes one decision (:mod:`rlhpo.control.distributed`).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_examples: Optional[int] = None,
        batch_size: Optional[int] = None,
        val_loss_fn: Optional[Callable[[], float]] = None,
        writer: Any = None,
        deterministic: bool = True,
        is_adaptive: Optional[bool] = None,
        sampler: Optional[MutableBatchSampler] = None,
        track_steps: bool = True,
        control_batch_size: Optional[bool] = None,
        control_weight_decay: bool = True,
        model: Optional[torch.nn.Module] = None,
        guard: Optional[GuardConfig] = None,
        scaler: Any = None,
        *,
        total_steps: Optional[int] = None,
        policy: "str | os.PathLike | PolicyArtifact" = "default",
        n_intervals: Optional[int] = None,
    ) -> None:
        if isinstance(optimizer, PolicyArtifact):
            raise ControllerError("Controller(optimizer, total_examples or total_steps=..., policy=artifact): "
                                  "the policy is a keyword now, the optimizer comes first")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ControllerError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if any("lr" not in g for g in optimizer.param_groups):
            raise ControllerError(f"{type(optimizer).__name__} has no 'lr' in its param_groups; the controller needs it")
        total, unit = parse_budget(total_examples, total_steps)
        if batch_size is not None and not (is_int(batch_size) and batch_size >= 1):
            raise ControllerError(f"batch_size must be None or an integer >= 1, got {batch_size!r}")
        artifact = policy if isinstance(policy, PolicyArtifact) else load_artifact(policy)
        self.artifact, self.spec, self.optimizer = artifact, artifact.spec, optimizer
        self.n_intervals = check_intervals(self.spec.n_intervals if n_intervals is None else n_intervals, self.spec.n_intervals)
        self.budget = Budget(total, unit, self.n_intervals, optimizer.param_groups[0])
        self.val_loss_fn, self.writer, self.deterministic = val_loss_fn, writer, deterministic
        action_config = self.spec.action_config()
        self.controls_weight_decay = weight_decay_control(optimizer, action_config.weight_decay.enabled and control_weight_decay)
        self._guard_config = guard or self.spec.guard_config()
        self._new_decision_path()
        self.driver = PolicyDriver.from_artifact(artifact)
        self.monitor = TrainingMonitor([p for g in optimizer.param_groups for p in g["params"]])
        self.sampler, self.model, self.scaler = sampler, model, check_scaler(scaler)
        self._declared_bs = int(batch_size) if batch_size else None  # the user's own loader's
        self._used_bs: Optional[int] = self._declared_bs  # the batch size in use, without a sampler
        self._interval_max_bs = 0
        self._batch_control_asked = control_batch_size
        self.control_batch_size = control_batch_size is not False and action_config.batch_size.enabled
        self._declined = self._loader_checked = False
        self._forwarded = 0  # examples of the model's training inputs since the last step
        self._recommended_bs: Optional[int] = None  # the warm start's batch size, for make_loader
        self._last_train_loss: Optional[float] = None
        self._val_is_proxy = False  # the last validation loss was the training loss (no validation source)
        self._asked: Optional[Hyperparams] = None  # the user's starting values, read at the first start
        # counting the model's inputs serves step(); loops that call decide() with their own counts need none
        self._forward_hook = model.register_forward_pre_hook(self._count_inputs) if model is not None and track_steps else None
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
        self._opt_steps = self._steps_called = self._behind = 0  # optimizer steps seen, step() calls, calls before theirs
        self._written_lr: Optional[float] = None  # the reference group's lr as the controller last wrote it
        self._scheduled = False  # the base schedule writes the lr before every optimizer step (the pre-hook)
        self._said: set[str] = set()  # the misuse warnings already given (each once)
        self._steps_total = 0  # optimizer steps of the intervals decided so far
        self._clock = [0.0, 0.0]  # wall-clock seconds: the run's start (perf_counter), spent in decisions
        self.sync = RankSync()  # torch.distributed: one decision for all ranks (a no-op in one process)

    def _new_decision_path(self) -> None:
        self.decision = DecisionPath(self.spec.action_config(), self.budget.total, self.n_intervals, self._guard_config,
                                     **self.spec.decision_kwargs(), prior_table=self.spec.prior_table)
        self._boundary = self.decision.boundary

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, policy: str | os.PathLike = "default", *, optimizer: torch.optim.Optimizer, total_examples: Optional[int] = None,
        warm_start: bool = False, train_data: Any = None, **kwargs: Any,
    ) -> "Controller":
        """Load the shipped policy (``"default"``), another pretrained name, or an artifact folder. ``warm_start=True``
        (with ``model=`` and ``train_data=``) starts from :func:`rlhpo.recommend`'s advice (see ``rlhpo.recommend.api.warm_start``);
        its batch size reaches the loader of :meth:`make_loader`."""
        controller = cls(optimizer, total_examples, policy=policy, **kwargs)
        from rlhpo.recommend.api import warm_start as start_warm  # here: rlhpo.recommend imports the controller's package
        return start_warm(controller, train_data) if warm_start else controller

    @property
    def total_examples(self) -> int:
        """The budget in examples (a budget of steps: at the batch size known so far)."""
        return self.budget.total * (1 if self.budget.unit == "examples" else (self._used_bs or self._declared_bs or 1))

    # -- the loop --------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.examples_seen >= self.budget.total

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
        if self._asked is None:  # the starting values, as the user left them (a restart must not re-read ours)
            self._ratios = GroupRatios.of(self.optimizer)
            self._asked = self.hparams
        asked = dataclasses.replace(self._asked, batch_size=self.hparams.batch_size)
        self.sync.check_start(**{f"total_{self.budget.unit}": self.budget.total}, **vars(asked))
        target = LoopState(self.optimizer, self.model, self.sampler, self.scaler)  # what the guard snapshots
        controls = tuple(n for n, on in (("lr", True), ("batch_size", self.control_batch_size),
                                          ("weight_decay", self.controls_weight_decay)) if on)
        off = tuple(n for n in ("batch_size", "weight_decay") if n not in controls)
        # clipped into the policy's bounds; under the calibrated prior: the calibrated default of the optimizer's kind
        kind = optimizer_kind(self.optimizer)
        start = self.decision.start(asked, self._adaptive, self._set, target, off, kind=kind)
        message = clipping_message(asked, start, self.spec.action_config(), controls)
        if message and not self._warned_clip:
            warn_user(message)
            self._warned_clip = True
        self._boundary = self.decision.boundary
        self.driver.reset()
        self._scheduled = self._hook is not None and self.decision.scheduled
        first = not self._clock[0]
        self._started = True
        if first:
            self._clock = [time.perf_counter(), 0.0]
            self._say_start(asked, start, kind)
        self.history[:] = [h for h in self.history if not h.get("start")]
        record = dict(start=True, examples=0, steps=0, lr=start.lr, level=self.decision.level, weight_decay=start.weight_decay,
                      batch_size=start.batch_size if self._used_bs or self.sampler else None)
        self.history.insert(sum(1 for h in self.history if h.get("recommended")), record)
        if first:
            log_record(self.writer, record)  # the start, a point at step 0
        # begun before the batch size was known (it counts in examples): start again at the first step
        self._restart_pending = self.sampler is None and self._used_bs is None and self.budget.unit == "examples"

    # -- what it says -----------------------------------------------------------------------
    def _say_once(self, key: str, message: str) -> None:
        """A misuse or a surprise, as a warning from the user's line, once per controller."""
        if key not in self._said and self.sync.is_main:
            self._said.add(key)
            warn_user(message)

    def _say_start(self, asked: Hyperparams, start: Hyperparams, kind: Optional[str]) -> None:
        """The start line: where the run starts and why (and the misuses visible at the start)."""
        name = type(self.optimizer).__name__
        prior = self.spec.prior == "calibrated" and kind is not None and kind in (self.spec.prior_table or CALIBRATED)
        if prior:
            source = (f"the calibrated default for {name} (warm-up + cosine at peak lr {self.decision.level:.3g}, "
                      f"wd {start.weight_decay:.3g})")
        else:
            source = "your values"
        level = self.decision.level
        msg = (f"rlhpo: {name}, starting from {source} (yours: lr {asked.lr:.3g} / wd {asked.weight_decay:.3g}"
               + ("; your lr is the floor of its range" if prior and asked.lr < level else "") + "); "
               + f"{self.n_intervals - 1} decisions over {self.budget.total:,} {self.budget.unit}"
               + (", the lr set every optimizer step" if self._scheduled or not self._hook else ""))
        if self.sync.is_main:
            log.info(msg)
        if kind is None:
            self._say_once("kind", (
                f"rlhpo Controller: {name} is not an optimizer kind the policy was meta-trained with (Adam, AdamW, SGD): "
                f"it starts from your values (lr {asked.lr:.3g}, wd {asked.weight_decay:.3g}) with no calibrated default, "
                "and its decisions were never tried on this kind; use torch.optim.AdamW, Adam or SGD for the tested path"))

    def _foreign_lr(self, now: float) -> None:
        self._say_once("foreign", (
            f"rlhpo Controller: the optimizer's lr was changed between its steps ({self._written_lr:.3g} -> {now:.3g}): "
            "an lr scheduler stepped on the same optimizer, or your code sets the lr. The controller is the schedule "
            "(warm-up + cosine times its level, set every step): remove the other scheduler or the lr writes"))

    def _summary(self) -> str:
        hp = self.hparams
        decisions = [h for h in self.history if "action" in h]
        rollbacks = sum(bool(h.get("rolled_back")) for h in self.history)
        wall = time.perf_counter() - self._clock[0] if self._clock[0] else 0.0
        spent = self._clock[1]
        return (f"rlhpo: run finished at {self.examples_seen:,} {self.budget.unit}: {len(decisions)} decisions, "
                f"{rollbacks} rollback{'s' if rollbacks != 1 else ''}; final lr {hp.lr:.3g} (level {self.decision.level:.3g}), "
                f"wd {hp.weight_decay:.3g}, batch {hp.batch_size if self._used_bs or self.sampler else '(yours)'}; "
                f"{wall:.1f} s since the start, {spent:.2f} s ({spent / wall if wall else 0.0:.1%}) in the controller's decisions")

    def lr_at(self, seen: int, n: int) -> float:
        """The lr of the optimizer step that trains budget units ``[seen, seen + n)``: the policy's
        level times the base schedule (:meth:`rlhpo.control.decision.DecisionPath.lr_at`). A loop
        that trains in whole intervals sets it before every step (the evaluation runner does)."""
        return self.decision.lr_at(seen, n)

    def _schedule_step(self, n: int) -> None:
        """Write the base schedule's lr for the step about to run."""
        groups = self.optimizer.param_groups
        now = groups[min(self._ratios.lr_ref, len(groups) - 1)]["lr"]
        if now != self._written_lr and self._written_lr is not None:
            self._foreign_lr(now)
        write_lr(self.optimizer, self.lr_at(self.examples_seen, n), self._ratios)
        self._written_lr = groups[min(self._ratios.lr_ref, len(groups) - 1)]["lr"]

    @property
    def interval(self) -> int:
        """Decisions taken so far."""
        return self.decision.interval

    # step() and the pre-hook run on every optimizer step: keep them to a few attribute reads
    def _before_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self._opt_steps += 1
        if self._steps_called == 0 and self._opt_steps == _SILENT_STEPS:
            self._say_once("no-step", _NO_STEP)
        if not self._started:  # the first optimizer step already trains at the controller's values
            self._start()
        bs = (self._delivered or self._current_batch_size()) * self.sync.world
        if self._scheduled:  # the base schedule, every optimizer step (as any lr scheduler)
            self._schedule_step(bs if self.budget.unit == "examples" else 1)
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
        if not self._loader_checked:
            self._check_loader()
        n = self._examples_of(batch_size, batch)
        if self._used_bs is None and n:
            self._used_bs = n
        self._steps_called += 1
        if self._hook is not None and self._steps_called <= 3:
            self._behind += self._opt_steps < self._steps_called
            if self._behind == 3 and self.scaler is None:  # three calls, each before its optimizer step
                self._say_once("order", (
                    "rlhpo Controller: controller.step(loss) is called before optimizer.step(); call it right after "
                    "optimizer.step(), so each step is counted after it trained"))
        if not self._started:
            self._start()
        elif self._restart_pending and self.decision.interval == 0 and self._steps_called == 1:
            self._start()  # begun before any batch size was known: start again from the real one
        if self._steps_called == 1:
            self.budget.check_first_step(n * self.sync.world if self.budget.unit == "examples" else 1)
        self._interval_max_bs = max(self._interval_max_bs, n)
        self.monitor.after_step(loss if loss.dim() == 0 else loss.reshape(()), self._probe)
        self._probe = False
        was_done = self.done
        progress = n * self.sync.world if self.budget.unit == "examples" else 1  # every rank trained a batch of n
        self.examples_seen += progress
        self.budget.advance(progress, self.decision.interval)  # step() is per optimizer step: no hparams read
        decided = False
        # a batch larger than an interval crosses several boundaries: one decision per boundary,
        # the later ones on an empty interval, exactly as the environment the policy met
        while self.examples_seen >= self._boundary and not self.done:
            stats = self.monitor.summary()
            self.decide(stats, self._validation_loss(stats))
            decided = True
        if decided:
            self.budget.decided(self.decision.interval)
        if self.done and not was_done:
            self.finish()  # the guard's last word, without the loop having to call finish()
        return decided

    def _examples_of(self, batch_size: Optional[int], batch: Any) -> int:
        """The examples one step trained (see :meth:`step`); a budget in steps needs no count."""
        delivered, self._delivered = self._delivered, 0
        forwarded, self._forwarded = self._forwarded, 0
        if self.budget.unit == "steps" and batch_size is None and batch is None:
            return delivered or forwarded  # for the record only: 0 when nothing tells
        return examples_of(batch_size, batch, delivered or forwarded, self.sampler, self._declared_bs)

    def report_validation(self, val_loss: float) -> None:
        """Give the controller a validation loss (a number or a scalar tensor; NaN or inf count as
        divergence); the next decision uses it."""
        self._last_val = loss_value(val_loss, "report_validation(val_loss): val_loss")

    def _validation_loss(self, stats: IntervalStats) -> float:
        if self.val_loss_fn is not None:
            return float(self.val_loss_fn())
        if self._last_val is not None:
            return self._last_val
        self._val_is_proxy = True  # the training loss stands in: the guard's collapse rule sits this one out
        if stats.steps == 0:  # an interval shorter than a batch: no news, never a divergence
            return self._last_train_loss if self._last_train_loss is not None else float("inf")
        self._last_train_loss = stats.loss_mean
        return stats.loss_mean

    def decide(self, stats: IntervalStats, val_loss: float, examples_seen: Optional[int] = None) -> Hyperparams:
        """One control decision from an interval's statistics; applies and returns the new values.

        Training loops that run in whole intervals (``rlhpo.apply``, the evaluation runner) call
        this directly and pass the ``examples_seen`` they trained; :meth:`step` calls it at
        interval boundaries.
        """
        if not self._started:
            self._start()
        t0 = time.perf_counter()
        if examples_seen is not None:
            self.examples_seen = int(examples_seen)
        if self.sampler is None and self._interval_max_bs:
            self._used_bs, self._interval_max_bs = self._interval_max_bs, 0  # the batch size really used
        hp = self.hparams
        stats, val_loss = self.sync.reduce(stats, val_loss)
        self.decision.guard.watch_jumps, self._val_is_proxy = not self._val_is_proxy, False
        observation = self.decision.observe(stats, val_loss, hp, self.examples_seen)
        self._boundary = self.decision.boundary
        self._steps_total += int(stats.steps)
        diverged = observation.diverged
        action = self.sync.agree(self.driver.act(observation.obs, deterministic=self.deterministic))
        if diverged:
            self._say_diverged(observation.verdict, "")
        new = self._set(self.decision.act(action, hp))
        record = dict(
            examples=self.examples_seen,
            steps=self._steps_total,  # optimizer steps so far (the TensorBoard x-axis)
            interval_steps=int(stats.steps),
            train_loss=float(stats.loss_mean),
            val_loss=float(val_loss),
            lr=new.lr,
            level=self.decision.level,  # the lr level from here on (the base schedule multiplies it every step)
            batch_size=new.batch_size if self.sampler is not None or self._used_bs else None,  # None: never seen
            weight_decay=new.weight_decay,
            action=self.decision.last_action.tolist(),
            diverged=bool(diverged),
            rolled_back=bool(observation.verdict.rolled_back),
        )
        self.history.append(record)
        log_record(self.writer, record)
        self._clock[1] += time.perf_counter() - t0
        return new

    def _say_diverged(self, verdict: Any, when: str) -> None:
        where = when or f"at {self.examples_seen:,} {self.budget.unit}"
        log.warning("rlhpo Controller: training diverged %s (%s); %s", where, verdict.reason,
                    ("rolled back to the best good state so far" + ("" if when else ", lr cut")) if verdict.rolled_back
                    else ("nothing to restore" if when else "stepping every control down"))

    def _set(self, hp: Hyperparams) -> Hyperparams:
        """Write ``hp`` (the controls this run has) and return the values in effect."""
        write_hparams(
            self.optimizer, hp, self.sampler, weight_decay=self.controls_weight_decay,
            batch_size=self.control_batch_size, ratios=self._ratios,
        )
        now = self.hparams
        self._written_lr = self.optimizer.param_groups[min(self._ratios.lr_ref, len(self.optimizer.param_groups) - 1)]["lr"]
        if self._asked is not None and self.controls_weight_decay and now.weight_decay > 10 * self._asked.weight_decay:
            self._say_once("wd", (
                f"rlhpo Controller: weight decay {now.weight_decay:.3g} is more than 10x yours ({self._asked.weight_decay:.3g}), "
                f"as the {'calibrated default' if self.spec.prior == 'calibrated' else 'policy'} sets it for "
                f"{type(self.optimizer).__name__}; to keep yours, pass control_weight_decay=False"))
        return now

    def finish(self, val_loss: Optional[float] = None) -> Optional[float]:
        """End the run under the guard: after a divergence since the last decision the best good state
        comes back (with ``restore_best``, the best one if the end is worse). ``batches()`` and the
        Lightning/HF callbacks call it; returns the validation (else training) loss then in effect."""
        if self._hook is not None and self._steps_called == 0 and self._opt_steps > 0:
            self._say_once("no-step", _NO_STEP)
        if not self._started or self._finished:
            return None
        self._finished = True
        self.budget.end()
        stats = self.monitor.summary()
        val = self._validation_loss(stats) if val_loss is None else float(val_loss)
        stats, val = self.sync.reduce(stats, val)
        proxy = self._val_is_proxy
        self.decision.guard.watch_jumps, self._val_is_proxy = not proxy, False
        if proxy and not stats.nonfinite and math.isfinite(val):
            # a training loss that rose at the end proves nothing: the final weights stay the user's
            verdict = Verdict(False, val_loss=val)
        else:
            verdict = self.decision.guard.review(stats.nonfinite, val)
        self._steps_total += int(stats.steps)
        if verdict.diverged:
            self._say_diverged(verdict, "at the end of the run")
            record = dict(examples=self.examples_seen, steps=self._steps_total, interval_steps=int(stats.steps), val_loss=val, end=True,
                          diverged=True, rolled_back=verdict.rolled_back, level=self.decision.level, **vars(self.hparams))
            self.history.append(record)
            log_record(self.writer, record)
        restored = self.decision.guard.finish(verdict.val_loss)
        if self.sync.is_main:
            log.info(self._summary())
        return verdict.val_loss if restored is None else restored

    def close(self) -> None:
        """Remove the optimizer and model hooks."""
        for hook in (self._hook, self._forward_hook):
            if hook is not None:
                hook.remove()
        self._hook = self._forward_hook = None
