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
wrong is said when it happens (:mod:`rlhpo.controller.budget`, :mod:`rlhpo.controller.watch`).
Each param group keeps its ratio to the first (see :class:`rlhpo.training.hparams.GroupRatios`).

The Controller is composed of parts that own their state: the budget and its count
(:class:`~rlhpo.controller.budget.Budget`), the batches and their counting
(:class:`~rlhpo.controller.batches.Batches`, ``batching``), the optimizer's values
(:class:`~rlhpo.controller.knobs.Knobs`), the validation source and the misuse watch
(:mod:`rlhpo.controller.watch`), the rank sync (:class:`~rlhpo.control.distributed.RankSync`),
the policy driver (:class:`~rlhpo.policy.driver.PolicyDriver`) and the decision path, which
holds the base schedule and the guard (:class:`~rlhpo.control.decision.DecisionPath`). It
computes its observations with :mod:`rlhpo.control.features` (the code the environment uses) and
does not import the environment.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import weakref
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rlhpo.control.actions import ActionConfig
from rlhpo.control.batch_rule import BatchRule
from rlhpo.control.decision import DecisionPath, check_intervals
from rlhpo.control.distributed import RankSync
from rlhpo.control.guard import Verdict
from rlhpo.control.lr_estimate import ProdigyEstimate
from rlhpo.control.prior import CALIBRATED, optimizer_kind
from rlhpo.control.probe import Outcome, Probe
from rlhpo.controller.batches import Batches, CountingLoader, batch_len
from rlhpo.controller.budget import Budget, parse_budget
from rlhpo.controller.knobs import Knobs, weight_decay_control
from rlhpo.controller.watch import Validation, Watch
from rlhpo.errors import ControllerError, warn_user
from rlhpo.output import log_record
from rlhpo.policy.artifact import DEFAULT_POLICY, PolicyArtifact, load_artifact
from rlhpo.policy.driver import NullDriver, PolicyDriver
from rlhpo.training.hparams import GroupRatios
from rlhpo.training.monitor import IntervalStats, TrainingMonitor
from rlhpo.training.sampler import MutableBatchSampler
from rlhpo.training.snapshot import LoopState, check_scaler, map_nested
from rlhpo.types import Hyperparams

log = logging.getLogger(__name__)


def _plain(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj))
    return obj.item() if isinstance(obj, np.generic) else obj


def to_plain(obj: Any) -> Any:
    """``obj`` with numpy arrays as tensors and numpy scalars as Python numbers, so that
    ``torch.load(weights_only=True)`` reads it back."""
    return map_nested(obj, _plain)


def to_numpy(obj: Any) -> Any:
    """The inverse of :func:`to_plain` for state that held numpy arrays (the policy's LSTM state)."""
    return map_nested(obj, lambda v: v.numpy() if isinstance(v, torch.Tensor) else v)


def clipping_message(asked: Hyperparams, start: Hyperparams, config: ActionConfig, controls: tuple[str, ...]) -> Optional[str]:
    """One sentence per starting value the policy's bounds changed (None: none did)."""
    parts = []
    for name in controls:
        a, s = float(getattr(asked, name)), float(getattr(start, name))
        bound = getattr(config, name)
        if a < bound.min and s != a:
            parts.append(f"{name} {a:g} is below the policy's bound {name} >= {bound.min:g}: starting at {s:g}")
        elif a > bound.max and s != a:
            parts.append(f"{name} {a:g} is above the policy's bound {name} <= {bound.max:g}: starting at {s:g}")
    if not parts:
        return None
    return ("rlhpo Controller: the starting values are outside what the policy was trained on (" + "; ".join(parts)
            + "). See the model card of the policy for its bounds.")


class Controller:
    """Drives a training run as a scheduler does: sets ``lr`` in an optimizer's ``param_groups``
    before every optimizer step, and decides a level (and ``weight_decay``, and the batch size of
    a loader it provides) 19 times per run, under a guard that rolls divergence back.

    Where it starts: for Adam, AdamW and SGD from the **calibrated default** of that optimizer kind,
    not from your lr (warm-up + cosine at Adam lr 3e-2 / wd 0, AdamW 3e-2 / 0.1, SGD 0.1 / 5e-4;
    :mod:`rlhpo.control.prior`); your batch size is kept, your lr is the floor of the level's range.
    Another optimizer kind starts from your values. It says so in one log line at the start (and
    sums the run up at the end; quiet: ``logging.getLogger("rlhpo").setLevel(logging.WARNING)``).

    What decides: by default the **rule with the batch rule** (``policy="batch"``: every decision
    keeps the calibrated level, so the run is the calibrated warm-up + cosine, guarded; where the
    controller sets the batch size (:meth:`make_loader`, a ``sampler``) the batch doubles, the lr
    level x sqrt(2) for Adam-like optimizers, x2 for SGD, when the gradient noise scale is 8x the
    batch: :mod:`rlhpo.control.batch_rule`). ``policy="estimate"`` adds the lr level from Prodigy's
    estimate: on an Adam or AdamW run of at least 1,000 optimizer steps the first fifth runs at
    Prodigy's online step-size estimate times the schedule, and the level then follows it if it has
    settled, within 4x of the prior (:mod:`rlhpo.control.lr_estimate`; not the default: it wins on
    some long runs and loses on others). ``policy="rule"`` is the rule alone. A learned policy
    is used only when named (``policy="v4"``, ``"v3"``, ``"v2"``, ``"v1"`` or an artifact folder): none has
    beaten the rule on the dev split yet (docs/evaluation.md).

    :param optimizer: any ``torch.optim`` optimizer with ``lr`` in its param groups; with several
        groups, each keeps its starting ratio to the first (a group without weight decay keeps none)
    :param total_examples: the run's budget in training examples (or give ``total_steps``); a
        control interval is ``1 / n_intervals`` of the budget (the policy's spec)
    :param total_steps: the run's budget in optimizer steps, as ``OneCycleLR`` takes it (with
        :meth:`make_loader` it becomes ``total_steps`` x the starting batch size in examples)
    :param policy: ``"batch"`` (the default: the rule with the batch rule), ``"estimate"`` (the batch
        rule with the lr level from Prodigy's estimate on long runs), ``"rule"`` (the calibrated
        prior, its decisions all zero), ``"probe"`` (the rule with branching probes:
        :mod:`rlhpo.control.probe`; not the default), a learned
        policy by name (``"v4"``, ``"v3"`` = the folder ``"default"``, ``"v2"``, ``"v1"``), an artifact folder,
        or a loaded :class:`~rlhpo.policy.artifact.PolicyArtifact` (its divergence guard is the one
        it was trained under; another, e.g. capping the lr relative to the start:
        ``policy=load_artifact("v3").with_guard(max_lr_ratio=10)``)
    :param batch_size: the batch size of your own loader, counted per :meth:`step` when the step
        says nothing else (taken from :meth:`make_loader` if it is used)
    :param val_loss_fn: called at each decision for a validation loss (optional; otherwise the
        last value given to :meth:`report_validation`, else the interval's training loss)
    :param writer: a ``torch.utils.tensorboard.SummaryWriter`` to log decisions to
    :param sampler: a :class:`~rlhpo.training.sampler.MutableBatchSampler` whose batch size to control
        (:meth:`make_loader` makes one)
    :param control_batch_size: set the batch size: ``None`` (default) when the batches come from
        :meth:`make_loader` or a ``sampler``, else yours is kept; ``True`` says so once if it cannot
    :param control_weight_decay: set the weight decay (off by itself, with a warning, when the
        optimizer has none or every group starts at 0)
    :param model: the model, for the guard's snapshots (without it: the optimizer's parameters);
        its inputs in training are counted as the examples of a step nothing else counts
    :param scaler: the loop's ``torch.amp.GradScaler``: the guard snapshots and restores its state
        too (a step it skips for inf gradients is no divergence: the optimizer did not step)

    The policy's actions are its mean actions (``driver`` is the
    :class:`~rlhpo.policy.driver.PolicyDriver` that takes them); the optimizer is adaptive
    (Adam-like) unless it is a ``torch.optim.SGD``. A loop that trains in whole intervals and
    decides itself builds its controller with :meth:`in_intervals`.
    Under ``torch.distributed`` every rank's controller takes one decision (:mod:`rlhpo.control.distributed`).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_examples: Optional[int] = None,
        batch_size: Optional[int] = None,
        val_loss_fn: Optional[Callable[[], float]] = None,
        writer: Any = None,
        *,
        sampler: Optional[MutableBatchSampler] = None,
        control_batch_size: Optional[bool] = None,
        control_weight_decay: bool = True,
        model: Optional[torch.nn.Module] = None,
        scaler: Any = None,
        total_steps: Optional[int] = None,
        policy: "str | os.PathLike | PolicyArtifact" = DEFAULT_POLICY,
    ) -> None:
        if isinstance(optimizer, PolicyArtifact):
            raise ControllerError("Controller(optimizer, total_examples or total_steps=..., policy=artifact): "
                                  "the policy is a keyword now, the optimizer comes first")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ControllerError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if any("lr" not in g for g in optimizer.param_groups):
            raise ControllerError(f"{type(optimizer).__name__} has no 'lr' in its param_groups; the controller needs it")
        total, unit = parse_budget(total_examples, total_steps)
        artifact = policy if isinstance(policy, PolicyArtifact) else load_artifact(policy)
        self.artifact, self.spec, self.optimizer = artifact, artifact.spec, optimizer
        n_intervals = check_intervals(self.spec.n_intervals, self.spec.n_intervals)
        self.budget = Budget(total, unit, n_intervals, optimizer.param_groups[0])  # owns the clock: total, unit, intervals
        weakref.finalize(self, self.budget.report_end)  # a run that ended short, said when the controller goes
        actions = self.spec.action_config()
        self.batching = Batches(self.budget, batch_size, sampler, control_batch_size, actions.batch_size.enabled)
        wd = weight_decay_control(optimizer, actions.weight_decay.enabled and control_weight_decay)
        self.knobs = Knobs(optimizer, self.batching, wd)
        self.validation = Validation(val_loss_fn)
        self.sync = RankSync()  # torch.distributed: one decision for all ranks (a no-op in one process)
        self.watch = Watch(self.sync.is_main)
        self.writer = writer
        self._new_decision_path()
        self.driver = PolicyDriver.from_artifact(artifact)
        self.monitor = TrainingMonitor([p for g in optimizer.param_groups for p in g["params"]], noise=self.batch_rule is not None)
        self.model, self.scaler = model, check_scaler(scaler)
        self.history: list[dict] = []
        self._asked: Optional[Hyperparams] = None  # the user's starting values, read at the first start
        self._adaptive = not isinstance(optimizer, torch.optim.SGD)
        self._started = self._restart_pending = self._warned_clip = self._finished = False
        self._measure = False  # this optimizer step is one the monitor measures (gradient and update statistics)
        self._scheduled = False  # the base schedule writes the lr before every optimizer step (the pre-hook)
        self._clock = [0.0, 0.0]  # wall-clock seconds: the run's start (perf_counter), spent in decisions
        # the optimizer's steps serve step(), and so do the model's inputs (see in_intervals for loops that count their own)
        self._hook: Any = optimizer.register_step_pre_hook(self._before_optimizer_step)
        self._forward_hook = model.register_forward_pre_hook(self.batching.count_inputs) if model is not None else None

    def _new_decision_path(self) -> None:
        """The decision path for the budget as it stands (a budget of steps may become one of examples)."""
        self.decision = DecisionPath(dataclasses.replace(self.spec, n_intervals=self.budget.n_intervals), self.budget.total)
        self._boundary = self.decision.boundary
        probe = self.artifact.probe
        self.probe = Probe(probe, self.budget.total) if probe is not None else None
        rule = self.artifact.batch_rule
        self.batch_rule = BatchRule(rule) if rule is not None else None
        if self.artifact.lr_estimate is not None and probe is not None:
            raise ControllerError("a policy with both branching probes and the lr estimate is not supported: the probes' "
                                  "branches would move the weights the estimate reads; use policy='probe' or policy='estimate'")
        if hasattr(self, "estimate"):
            self._drop_estimate()
        self.estimate: Optional[ProdigyEstimate] = None  # Prodigy's lr estimate, while its stretch runs

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, policy: str | os.PathLike = DEFAULT_POLICY, *, optimizer: torch.optim.Optimizer, total_examples: Optional[int] = None,
        warm_start: bool = False, train_data: Any = None, **kwargs: Any,
    ) -> "Controller":
        """Load the shipped policy (``"default"``), another pretrained name, or an artifact folder. ``warm_start=True``
        (with ``model=`` and ``train_data=``) starts from :func:`rlhpo.recommend`'s advice (see ``rlhpo.recommend.api.warm_start``);
        its batch size reaches the loader of :meth:`make_loader`."""
        controller = cls(optimizer, total_examples, policy=policy, **kwargs)
        from rlhpo.recommend.api import warm_start as start_warm  # here: the lean runtime imports no task family
        return start_warm(controller, train_data) if warm_start else controller

    @classmethod
    def in_intervals(
        cls, optimizer: torch.optim.Optimizer, total_examples: int, *, n_intervals: Optional[int] = None,
        deterministic: bool = True, prior_only: bool = False, **kwargs: Any,
    ) -> "Controller":
        """A controller for a loop that trains in whole intervals and calls :meth:`decide` with its
        own statistics (the evaluation runner): no optimizer or model hooks; ``n_intervals``
        intervals (default: the policy's; the base schedule ends at the budget whatever it is);
        ``deterministic=False`` samples the policy's actions; ``prior_only``: every action zero
        (:class:`~rlhpo.policy.driver.NullDriver`: the policy's prior, base schedule and guard
        without the policy). ``kwargs`` go to the constructor."""
        controller = cls(optimizer, total_examples, **kwargs)
        controller.close()  # the loop counts its own steps and examples
        if n_intervals is not None:
            controller._retime(n_intervals)
        actions = len(controller.spec.action_config().enabled)
        controller.driver = NullDriver(actions) if prior_only else PolicyDriver.from_artifact(controller.artifact, deterministic)
        return controller

    def _retime(self, n_intervals: int) -> None:
        self.budget.n_intervals = check_intervals(n_intervals, self.spec.n_intervals)
        self._new_decision_path()

    def warm_start(self, hparams: Hyperparams) -> Hyperparams:
        """Start from ``hparams`` rather than the optimizer's values (before the first step; the warm
        start of :func:`rlhpo.recommend.api.warm_start`): the lr and weight decay are written now
        (each param group keeps its ratio; a weight decay of 0 stays 0), the batch size now with a
        sampler, else in the loader of :meth:`make_loader`. Returns the values in effect."""
        self.batching.recommended = int(hparams.batch_size)
        return self._set(hparams)

    # -- what it shows ---------------------------------------------------------------------
    @property
    def decisions(self) -> list[dict]:
        """The decision records of :attr:`history` (``history[0]`` is the start; a guard's
        end-of-run record, or a warm start's recommendation, is not a decision)."""
        return [h for h in self.history if "action" in h]

    @property
    def examples_seen(self) -> int:
        """Budget units trained so far (examples, or optimizer steps for a budget of steps)."""
        return self.budget.seen

    @examples_seen.setter
    def examples_seen(self, value: int) -> None:
        self.budget.seen = value

    @property
    def total_examples(self) -> int:
        """The budget in examples (a budget of steps: at the batch size known so far)."""
        return self.budget.total * (1 if self.budget.unit == "examples" else (self.batching.used or self.batching.declared or 1))

    @property
    def done(self) -> bool:
        return self.budget.done

    @property
    def hparams(self) -> Hyperparams:
        """The values in effect: the reference param group's lr and weight decay, the batch size."""
        return self.knobs.read()

    @property
    def n_intervals(self) -> int:
        """The run's intervals (its decisions + 1)."""
        return self.budget.n_intervals

    @property
    def interval(self) -> int:
        """Decisions taken so far."""
        return self.decision.interval

    @property
    def sampler(self) -> Optional[MutableBatchSampler]:
        """The sampler whose batch size the controller sets (None: the loop's own batches)."""
        return self.batching.sampler

    @property
    def control_batch_size(self) -> bool:
        """Whether the batch size is set (see :meth:`decline_batch_size`)."""
        return self.batching.control

    @property
    def controls_weight_decay(self) -> bool:
        return self.knobs.weight_decay

    def lr_at(self, seen: int, n: int) -> float:
        """The lr of the optimizer step that trains budget units ``[seen, seen + n)``: the policy's
        level times the base schedule (:meth:`rlhpo.control.decision.DecisionPath.lr_at`). A loop
        that trains in whole intervals sets it before every step (the evaluation runner does)."""
        lr = self.decision.lr_at(seen, n)
        if self.estimate is not None:  # the estimate's stretch: Prodigy's d in place of the level
            return lr * self.estimate.d / self.decision.level
        probe = self.probe
        return lr * probe.multiplier(seen, n) if probe is not None and probe.active else lr

    @property
    def probing(self) -> bool:
        """Whether a branching probe is under way (:mod:`rlhpo.control.probe`): decisions wait."""
        return self.probe is not None and self.probe.active

    def probe_step(self, loss: Any, examples_seen: Optional[int] = None) -> None:
        """Record one optimizer step of a probe: :meth:`step` calls it; a loop that trains in whole
        intervals (the evaluation runner) calls it after every optimizer step while :attr:`probing`,
        with its ``examples_seen``. At a branch's end the next branch starts from the probe's
        snapshot; after the last, the best branch's end state is kept and the level moves."""
        probe = self.probe
        if probe is None or not probe.active:
            return
        if examples_seen is not None:
            self.examples_seen = examples_seen
        outcome = probe.after_step(self.budget.seen, loss, self.decision.guard.target, self.validation.fn, agree=self._agreed_score)
        if outcome is not None:
            self._probed(outcome)

    def _agreed_score(self, score: float) -> float:
        """A probe branch's score, the same on every rank (the mean over ranks; in one process, itself)."""
        return self.sync.reduce(IntervalStats(), score)[1]

    def _probed(self, outcome: Outcome) -> None:
        before = self.decision.level
        level = self.decision.rescale(outcome.chosen)
        record = dict(probe=True, examples=self.examples_seen, steps=self.watch.decided_steps, level=level, lr=level,
                      factors=outcome.factors, scores=outcome.scores, chosen=outcome.chosen, by=outcome.by,
                      probe_spent=outcome.spent)
        self.history.append(record)
        log_record(self.writer, record)
        self.monitor.summary()  # the branches' statistics are not the next decision's interval
        if self.sync.is_main:
            tried = ", ".join(f"x{f:g}: {s:.4g}" for f, s in zip(outcome.factors, outcome.scores))
            log.info("rlhpo: probe at %s %s (%s by %s): lr level %.3g -> %.3g", f"{outcome.start:,}", self.budget.unit,
                     tried, outcome.by, before, level)

    # -- the start -------------------------------------------------------------------------
    def begin(self) -> None:
        """Start a run: clip the starting values into the policy's bounds (saying so) and reset
        the features. Called by the first :meth:`step` or :meth:`decide`; call it yourself to
        apply the clipping before the first optimizer step. A second call does nothing."""
        if not self._started:
            self._start()

    def _start(self) -> None:
        if self._asked is None:  # the starting values, as the user left them (a restart must not re-read ours)
            self.knobs.ratios = GroupRatios.of(self.optimizer)
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
        if self.batch_rule is not None:
            self.batch_rule.reset(start.batch_size)
        self._begin_estimate(kind, start)
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
                      batch_size=start.batch_size if self.batching.known else None)
        self.history.insert(sum(1 for h in self.history if h.get("recommended")), record)
        if first:
            log_record(self.writer, record)  # the start, a point at step 0
        # begun before the batch size was known (it counts in examples): start again at the first step
        self._restart_pending = self.sampler is None and self.batching.used is None and self.budget.unit == "examples"

    # -- what it says -----------------------------------------------------------------------
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
               + f"{self.budget.n_intervals - 1} decisions over {self.budget.total:,} {self.budget.unit}"
               + (", the lr set every optimizer step" if self._scheduled or not self._hook else ""))
        if self.sync.is_main:
            log.info(msg)
        if kind is None:
            self.watch.say_once("kind", (
                f"rlhpo Controller: {name} is not an optimizer kind the policy was meta-trained with (Adam, AdamW, SGD): "
                f"it starts from your values (lr {asked.lr:.3g}, wd {asked.weight_decay:.3g}) with no calibrated default, "
                "and its decisions were never tried on this kind; use torch.optim.AdamW, Adam or SGD for the tested path"))

    def _summary(self) -> str:
        hp = self.hparams
        decisions = [h for h in self.history if "action" in h]
        rollbacks = sum(bool(h.get("rolled_back")) for h in self.history)
        wall = time.perf_counter() - self._clock[0] if self._clock[0] else 0.0
        spent = self._clock[1]
        return (f"rlhpo: run finished at {self.examples_seen:,} {self.budget.unit}: {len(decisions)} decisions, "
                f"{rollbacks} rollback{'s' if rollbacks != 1 else ''}; final lr {hp.lr:.3g} (level {self.decision.level:.3g}), "
                f"wd {hp.weight_decay:.3g}, batch {hp.batch_size if self.batching.known else '(yours)'}; "
                f"{wall:.1f} s since the start, {spent:.2f} s ({spent / wall if wall else 0.0:.1%}) in the controller's decisions")

    def _say_diverged(self, verdict: Any, when: str) -> None:
        where = when or f"at {self.examples_seen:,} {self.budget.unit}"
        log.warning("rlhpo Controller: training diverged %s (%s); %s", where, verdict.reason,
                    ("rolled back to the best good state so far" + ("" if when else ", lr cut")) if verdict.rolled_back
                    else ("nothing to restore" if when else "stepping every control down"))

    # -- the loop --------------------------------------------------------------------------
    # step() and the pre-hook run on every optimizer step: keep them to a few attribute reads
    def _before_optimizer_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.watch.optimizer_step()
        if not self._started:  # the first optimizer step already trains at the controller's values
            self._start()
        bs = (self.batching.delivered or self.batching.current) * self.sync.world
        per = bs if self.budget.unit == "examples" else 1  # the budget units of this step
        if self._scheduled:  # the base schedule, every optimizer step (as any lr scheduler)
            self._schedule_step(per)
        remaining = self._boundary - self.budget.seen
        if self.monitor.should_measure(remaining, per):  # the interval's last steps: measured
            self._measure = TrainingMonitor.should_probe(remaining, per)
            self.monitor.before_step(self._measure, batch_size=bs)

    def _schedule_step(self, n: int) -> None:
        """Write the base schedule's lr for the step about to run."""
        knobs = self.knobs
        if knobs.foreign_lr:
            self.watch.say_once("foreign", (
                f"rlhpo Controller: the optimizer's lr was changed between its steps ({knobs.written_lr:.3g} -> {knobs.lr_now:.3g}): "
                "an lr scheduler stepped on the same optimizer, or your code sets the lr. The controller is the schedule "
                "(warm-up + cosine times its level, set every step): remove the other scheduler or the lr writes"))
        knobs.write_lr(self.lr_at(self.budget.seen, n))

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
        if not self.batching.checked:
            self._check_loader()
        n = self.batching.take(batch_size, batch)
        self.watch.step_called(self._hook is not None, self.scaler is not None)
        if not self._started:
            self._start()
        elif self._restart_pending and self.decision.interval == 0 and self.watch.calls == 1:
            self._start()  # begun before any batch size was known: start again from the real one
        budget = self.budget
        if self.watch.calls == 1:
            budget.check_first_step(n * self.sync.world if budget.unit == "examples" else 1)
        self.monitor.after_step(loss if loss.dim() == 0 else loss.reshape(()), self._measure)
        self._measure = False
        was_done = budget.done
        budget.advance(n * self.sync.world if budget.unit == "examples" else 1, self.decision.interval)  # every rank trained n
        if self.probe is not None and self.probe.active:
            self.probe_step(loss)
        decided = False
        # a batch larger than an interval crosses several boundaries: one decision per boundary,
        # the later ones on an empty interval, exactly as the environment the policy met (a
        # decision waits for a probe under way to end)
        while budget.seen >= self._boundary and not budget.done and not self.probing:
            stats = self.monitor.summary()
            self.decide(stats, self.validation.loss(stats))
            decided = True
        if decided:
            budget.decisions = self.decision.interval  # for the end-of-run report
        if budget.done and not was_done:
            self.finish()  # the guard's last word, without the loop having to call finish()
        return decided

    def _check_loader(self) -> None:
        """At the first step: whose batch size this loop trains with; a run whose clock or
        controls changed starts again."""
        restart = self.batching.check()
        if self.budget.total != self.decision.total_examples:  # a budget of steps became one of examples
            self._new_decision_path()
            restart = True
        if restart:
            self._started = False

    def report_validation(self, val_loss: float) -> None:
        """Give the controller a validation loss (a number or a scalar tensor; NaN or inf count as
        divergence); the next decision uses it."""
        self.validation.report(val_loss)

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
            self.examples_seen = examples_seen
        self.batching.end_interval()
        hp = self.hparams
        stats, val_loss = self.sync.reduce(stats, val_loss)
        self.decision.guard.watch_jumps = not self.validation.take_proxy()
        observation = self.decision.observe(stats, val_loss, hp, self.examples_seen)
        self._boundary = self.decision.boundary
        self.watch.decided_steps += int(stats.steps)
        diverged = observation.diverged
        action = self.sync.agree(self.driver.act(observation.obs))
        if diverged:
            self._say_diverged(observation.verdict, "")
        if self.estimate is not None and (diverged or self.examples_seen >= self.artifact.lr_estimate.fraction * self.budget.total):
            self._end_estimate(diverged)  # before the action: this decision's values are at the new level
        new = self._set(self.decision.act(action, hp))
        noise = self._grow_batch(stats, new, diverged) if self.batch_rule is not None else None
        if noise is not None:
            new = noise[1]
        record = dict(
            examples=self.examples_seen,
            steps=self.watch.decided_steps,  # optimizer steps so far (the TensorBoard x-axis)
            interval_steps=int(stats.steps),
            train_loss=float(stats.loss_mean),
            val_loss=float(val_loss),
            lr=new.lr,
            level=self.decision.level,  # the lr level from here on (the base schedule multiplies it every step)
            batch_size=new.batch_size if self.batching.known else None,  # None: never seen
            weight_decay=new.weight_decay,
            action=self.decision.last_action.tolist(),
            diverged=bool(diverged),
            rolled_back=bool(observation.verdict.rolled_back),
        )
        if noise is not None:
            record["noise_scale"] = noise[0]  # the gradient noise scale B_simple the batch rule read
        self.history.append(record)
        log_record(self.writer, record)
        probe, target = self.probe, self.decision.guard.target
        if probe is not None and target is not None and not diverged and probe.due(self.decision.interval, self.examples_seen):
            probe.begin(self.examples_seen, target)  # the next steps are the probe's branches
        self._clock[1] += time.perf_counter() - t0
        return new

    def _begin_estimate(self, kind: Optional[str], start: Hyperparams) -> None:
        """Start Prodigy's estimate (:mod:`rlhpo.control.lr_estimate`) where it can settle: an
        Adam-like optimizer whose lr the base schedule sets, a run of at least ``min_steps`` steps."""
        config = self.artifact.lr_estimate
        self._drop_estimate()
        if config is None or kind not in ("adam", "adamw") or not self.decision.scheduled:
            return
        per = 1 if self.budget.unit == "steps" else start.batch_size * self.sync.world
        steps = self.budget.total / max(per, 1)
        if steps < config.min_steps:
            return
        self.estimate = ProdigyEstimate(self.optimizer)
        self.estimate.begin()
        if self.sync.is_main:
            log.info("rlhpo: the lr level from Prodigy's estimate over the first %.0f%% of the run (about %s optimizer steps)",
                     100 * config.fraction, f"{int(steps * config.fraction):,}")

    def _drop_estimate(self) -> None:
        """End an estimate under way (its hook and copies go) without moving the level."""
        if self.estimate is not None:
            self.estimate.end()
            self.estimate = None

    def _end_estimate(self, diverged: bool) -> None:
        """The stretch is over: the level becomes the estimate if it settled (and nothing diverged)."""
        config, est = self.artifact.lr_estimate, self.estimate
        assert config is not None and est is not None
        settled = not diverged and est.settled(config.settle)
        growth, d = est.growth(), est.d
        self._drop_estimate()
        before = self.decision.level
        level = self.decision.rescale(d / before) if settled else before
        record = dict(estimate=True, examples=self.examples_seen, steps=self.watch.decided_steps, level=level, lr=level,
                      before=before, d=d, settled=bool(settled))
        self.history.append(record)
        log_record(self.writer, record)
        if self.sync.is_main:
            why = ("settled: the level follows it" if settled else
                   "a divergence in the stretch: the prior's level" if diverged else
                   f"still growing ({growth:.2f}x over the stretch's last quarter): the prior's level")
            log.info("rlhpo: Prodigy's lr estimate %.3g (%s); lr level %.3g -> %.3g", d, why, before, level)

    def _grow_batch(self, stats: IntervalStats, hp: Hyperparams, diverged: bool) -> tuple[float, Hyperparams]:
        """The batch rule at a decision: the noise scale read, and the values from here on (the
        batch doubled and the level scaled when the rule says so)."""
        rule = self.batch_rule
        assert rule is not None
        b_noise = rule.observe(stats.noise_trace, stats.noise_signal)
        if diverged or self.decision.guard.frozen or not (self.control_batch_size and self.batching.known):
            return b_noise, hp
        n = self.sampler.n if self.sampler is not None else None  # this rank's share of the training set
        # the steps left at a doubled batch, from the examples an optimizer step took in this interval
        # (under gradient accumulation several micro-batches; every rank's)
        last = next((h["examples"] for h in reversed(self.history) if "examples" in h), 0)
        per_step = hp.batch_size * self.sync.world
        if stats.steps > 0 and self.examples_seen > last:
            per_step = (self.examples_seen - last) / stats.steps
        left = (self.budget.total - self.budget.seen) / (2 * per_step)
        growth = rule.growth(self.decision.interval, hp.batch_size, n, self.watch.decided_steps,
                             left if self.budget.unit == "examples" else math.inf)
        growth = min(growth, (n or math.inf) / hp.batch_size)  # the sampler's batches stop at its data
        if growth <= 1:
            return b_noise, hp
        grown = self.decision.grow_batch(growth, hp, lambda g: rule.config.lr_factor(g, self._adaptive))  # within the bounds
        if grown.batch_size <= hp.batch_size:
            return b_noise, hp
        lr_factor = rule.config.lr_factor(grown.batch_size / hp.batch_size, self._adaptive)
        new = self._set(grown)
        if self.sync.is_main:
            log.info("rlhpo: batch size %d -> %d at %s %s (gradient noise scale %.0f >= %g x %d); lr level x%.3g",
                     hp.batch_size, new.batch_size, f"{self.examples_seen:,}", self.budget.unit, b_noise,
                     rule.config.threshold, hp.batch_size, lr_factor)
        return b_noise, new

    def _set(self, hp: Hyperparams) -> Hyperparams:
        """Write ``hp`` (the controls this run has) and return the values in effect."""
        now = self.knobs.write(hp)
        if self._asked is not None and self.controls_weight_decay and now.weight_decay > 10 * self._asked.weight_decay:
            self.watch.say_once("wd", (
                f"rlhpo Controller: weight decay {now.weight_decay:.3g} is more than 10x yours ({self._asked.weight_decay:.3g}), "
                f"as the {'calibrated default' if self.spec.prior == 'calibrated' else 'policy'} sets it for "
                f"{type(self.optimizer).__name__}; to keep yours, pass control_weight_decay=False"))
        return now

    def finish(self, val_loss: Optional[float] = None) -> Optional[float]:
        """End the run under the guard: after a divergence since the last decision the best good state
        comes back (with ``restore_best``, the best one if the end is worse). ``batches()`` and the
        Lightning/HF callbacks call it; returns the validation (else training) loss then in effect."""
        self.watch.at_finish(self._hook is not None)
        if not self._started or self._finished:
            return None
        self._finished = True
        if self.probing:  # the loop stopped mid-probe: the best branch so far, if any, comes back
            self.probe.abort(self.decision.guard.target)  # type: ignore[union-attr]
        self._drop_estimate()  # a run that ended inside the estimate's stretch keeps the prior's level
        self.budget.report_end()
        stats = self.monitor.summary()
        val = self.validation.loss(stats) if val_loss is None else float(val_loss)
        stats, val = self.sync.reduce(stats, val)
        proxy = self.validation.take_proxy()
        self.decision.guard.watch_jumps = not proxy
        if proxy and not stats.nonfinite and math.isfinite(val):
            # a training loss that rose at the end proves nothing: the final weights stay the user's
            verdict = Verdict(False, val_loss=val)
        else:
            verdict = self.decision.guard.review(stats.nonfinite, val)
        self.watch.decided_steps += int(stats.steps)
        if verdict.diverged:
            self._say_diverged(verdict, "at the end of the run")
            record = dict(examples=self.examples_seen, steps=self.watch.decided_steps, interval_steps=int(stats.steps), val_loss=val,
                          end=True, diverged=True, rolled_back=verdict.rolled_back, level=self.decision.level, **vars(self.hparams))
            self.history.append(record)
            log_record(self.writer, record)
        restored = self.decision.guard.finish(verdict.val_loss)
        if self.sync.is_main:
            log.info(self._summary())
        return verdict.val_loss if restored is None else restored

    def close(self) -> None:
        """Remove the optimizer and model hooks (and end an lr estimate under way: the prior's level stays)."""
        for hook in (self._hook, self._forward_hook):
            if hook is not None:
                hook.remove()
        self._hook = self._forward_hook = None
        self._drop_estimate()

    # -- the batches -----------------------------------------------------------------------
    def make_loader(self, dataset: Dataset, batch_size: Optional[int] = None, seed: int = 0, **loader_kwargs: Any) -> DataLoader:
        """A ``DataLoader`` over ``dataset`` whose batch size this controller sets; it counts the
        examples of each batch as it hands it out (exact with ``num_workers`` too). The starting
        batch size: the warm start's, else ``batch_size``, else the constructor's, else 32."""
        return self.batching.make_loader(dataset, batch_size, seed, self.sync.shard(), **loader_kwargs)

    def batches(self, loader: Iterable) -> Iterator[Any]:
        """Iterate ``loader`` over epochs until the example budget is spent, counting the
        examples of each batch as it is handed out (so :meth:`step` needs no batch size)."""
        if isinstance(loader, Dataset) and not isinstance(loader, Iterable):
            raise ControllerError("batches(loader): got a Dataset; pass a DataLoader, or controller.make_loader(dataset)")
        counting = isinstance(loader, CountingLoader)
        own = getattr(loader, "batch_sampler", None)
        if self.sampler is None and not self._started and isinstance(own, MutableBatchSampler):
            self.batching.sampler = own  # the user's loader over a mutable sampler: its batch size is ours to set
        while not self.done:
            empty = True
            for batch in loader:
                empty = False
                if not counting:
                    self.batching.count(batch_len(batch) or 0)
                yield batch
                if self.done:
                    self.finish()  # the guard's last word: a run never ends diverged
                    return
            if empty:
                raise ControllerError("batches(loader): the loader yielded no batch")

    def decline_batch_size(self, reason: str, remedy: str = "") -> None:
        """Turn batch-size control off, saying once why (the decided batch sizes cannot be applied)."""
        self.batching.decline(reason, remedy, stacklevel=5)

    # -- checkpointing ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The controller's state: tensors and plain Python types only, so a checkpoint holding it
        loads with ``torch.load(path, weights_only=True)``."""
        return {
            "examples_seen": int(self.examples_seen),
            "started": self._started,
            "last_val": self.validation.last,
            "decision": to_plain(self.decision.state_dict()),
            "monitor": self.monitor.state_dict(),
            "driver": to_plain(self.driver.state_dict()),
            **self.batching.state_dict(),
            "ratios": self.knobs.ratios.state_dict(),
            "history": to_plain(list(self.history)),
            "budget": self.budget.state_dict(),
            "counts": self.watch.state_dict(),
            "asked": None if self._asked is None else vars(self._asked).copy(),
            "probe": None if self.probe is None else to_plain(self.probe.state_dict()),
            "batch_rule": None if self.batch_rule is None else to_plain(self.batch_rule.state_dict()),
            "estimate": None if self.estimate is None else self.estimate.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("budget") is not None:
            self.budget.load_state_dict(state["budget"])
            if self.decision.total_examples != self.budget.total:
                self._new_decision_path()
        self.examples_seen = state["examples_seen"]
        decision = state["decision"]  # the guard's snapshots are torch state dicts: they stay tensors
        self.decision.load_state_dict({**to_numpy(decision), "guard": decision["guard"]})
        self.monitor.load_state_dict(state["monitor"])
        self._boundary = self.decision.boundary
        self._started = bool(state["started"])
        if self._started:  # a resumed run's guard snapshots and restores this loop's state again
            self.decision.guard.target = LoopState(self.optimizer, self.model, self.sampler, self.scaler)
        self.validation.last = state["last_val"]
        self.driver.load_state_dict(to_numpy(state["driver"]))
        self.batching.load_state_dict(state, self._started)
        if state.get("ratios") is not None:
            self.knobs.ratios = GroupRatios(**state["ratios"])
        self.history = list(state["history"])
        if state.get("counts") is not None:
            self.watch.load_state_dict(state["counts"])
        if state.get("asked") is not None:
            self._asked = Hyperparams(**state["asked"])
        if self.probe is not None and state.get("probe") is not None:
            self.probe.load_state_dict(state["probe"])
        if self.batch_rule is not None and state.get("batch_rule") is not None:
            self.batch_rule.load_state_dict(state["batch_rule"])
        if state.get("estimate") is not None:  # a checkpoint taken in the estimate's stretch
            if self.artifact.lr_estimate is None:
                raise ControllerError("this checkpoint was taken during an lr estimate's stretch; load it into a controller "
                                      "built with the policy that took it (policy='estimate')")
            if self.estimate is None:
                self.estimate = ProdigyEstimate(self.optimizer)
            self.estimate.load_state_dict(state["estimate"])
        else:
            self._drop_estimate()
        self.knobs.written_lr = self.knobs.lr_now  # the checkpoint's, not a foreign write
        self._scheduled = self._started and self._hook is not None and self.decision.scheduled
        self._clock = [time.perf_counter(), 0.0]
