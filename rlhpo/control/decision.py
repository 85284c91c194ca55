"""The one decision path: every control decision, in the environment or in a user's loop.

The environment (single and batched), :class:`rlhpo.Controller` (plain loops, Lightning,
Hugging Face) and the evaluation runner all decide through this module, so a policy is deployed
under exactly the rules it was meta-trained under:

* the **interval clock** (:func:`interval_end`): the example budget split evenly into
  ``n_intervals``; a decision falls when the examples seen reach the interval's end; the base
  schedule (:func:`base_factor`) is a function of the fraction of the budget, so it ends at the
  budget whatever the number of intervals;
* the **divergence rule and the guard** (:mod:`rlhpo.control.guard`): a snapshot of the last
  good state at every healthy decision, a rollback and a learning-rate cut after divergence;
* **observe -> act -> apply** (:class:`DecisionPath`): interval statistics and the validation
  loss become an observation (:mod:`rlhpo.control.features`), the policy's action becomes new
  hyperparameters (:mod:`rlhpo.control.actions`);
* the one writer of hyperparameters into a ``torch.optim`` optimizer and a batch sampler
  (:func:`write_hparams`, defined beside the training loop that also uses it).

It knows nothing of the environment, of PPO or of the policy's network: the caller passes the
action in (``DecisionPath.act``), so a test or a baseline can drive it with any function.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from rlhpo.control.actions import CONTROLS, ActionSpec
from rlhpo.control.features import FeatureExtractor
from rlhpo.control.guard import Guard, Restorable, Verdict, divergence_reason
from rlhpo.control.prior import prior_start
from rlhpo.control.spec import DecisionSpec
from rlhpo.errors import ControllerError, is_int
from rlhpo.training.hparams import write_hparams  # noqa: F401  (the one writer, re-exported)
from rlhpo.training.monitor import IntervalStats
from rlhpo.types import Hyperparams


def interval_end(total_examples: int, n_intervals: int, k: int) -> int:
    """Examples seen at the end of interval ``k`` (0-based): the budget split evenly, integer
    arithmetic so every caller lands on the same example."""
    return total_examples * min(k + 1, n_intervals) // n_intervals


#: the base schedule's linear warm-up, as a fraction of the budget: the calibrated baseline's
#: (5% of its steps), so a run whose policy actions are all zero *is* the calibrated baseline
WARMUP_FRACTION = 0.05


def base_factor(schedule: str, fraction: float, warmup: float = WARMUP_FRACTION) -> float:
    """The base schedule's lr multiplier at ``fraction`` of the budget.

    ``cosine``: a linear warm-up over the first ``warmup`` of the budget, then cosine decay to
    zero at the budget. The policy's lr state is a *level* the schedule multiplies at every
    optimizer step (:func:`step_factor`): a policy whose actions are all zero runs the calibrated
    warm-up + cosine from the start, so the controller builds on the strongest cheap baseline
    instead of re-learning it.
    """
    if schedule == "none" or warmup >= 1:
        return 1.0
    if fraction < warmup:
        return fraction / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min((fraction - warmup) / (1.0 - warmup), 1.0)))


def step_factor(schedule: str, seen: int, n: int, total: int, warmup: float = WARMUP_FRACTION) -> float:
    """The base factor of the optimizer step that trains budget units ``[seen, seen + n)`` of
    ``total`` (examples, or steps with ``n = 1``): the factor at the step's midpoint, so the first
    step of the warm-up is not wasted at lr 0 and the last one is not at lr 0 either. The one
    per-step schedule: the environment, the Controller, the evaluation runner and the
    ``calibrated`` baseline all set the lr from it before every optimizer step."""
    return base_factor(schedule, (seen + 0.5 * n) / total, warmup)


def check_intervals(n_intervals: object, trained_with: int) -> int:
    """``n_intervals`` if a policy meta-trained with ``trained_with`` intervals can run in that
    many: at least 1, as the environment's config allows (the base schedule is set every step,
    whatever the intervals; a decision falls between two, so one interval is the schedule alone);
    else :class:`~rlhpo.errors.ControllerError`."""
    if not (is_int(n_intervals) and n_intervals >= 1):  # type: ignore[operator]
        raise ControllerError(
            f"n_intervals={n_intervals!r} cannot be honoured: the policy decides between intervals; "
            f"allowed: an integer >= 1 (the policy was meta-trained with {trained_with})"
        )
    return int(n_intervals)  # type: ignore[call-overload]


#: a run with no guard (a baseline) is lost, and stops, above this multiple of a reference
#: validation loss (see :func:`is_diverged`)
DIVERGENCE_FACTOR = 100.0


def is_diverged(stats: IntervalStats, val_loss: float, reference: Optional[float], factor: float = DIVERGENCE_FACTOR) -> bool:
    """The divergence rule (:func:`rlhpo.control.guard.divergence_reason`) on an interval's
    statistics, relative to ``reference`` (the guard passes the best so far; the evaluation
    runner, for runs without a guard, the first interval's loss with ``DIVERGENCE_FACTOR``)."""
    return bool(divergence_reason(stats.nonfinite, val_loss, math.inf if reference is None else reference, factor))


@dataclass
class Observation:
    """One decision's input: the feature vector and the guard's verdict on the interval."""

    obs: np.ndarray
    verdict: Verdict

    @property
    def diverged(self) -> bool:
        return self.verdict.diverged


class DecisionPath:
    """The state of one run's decisions: its clock, its features, its guard, its action state.

    Call :meth:`start` once per run, then per interval: train until :attr:`boundary`,
    :meth:`observe` the interval, get an action for ``observation.obs``, and :meth:`act`.

    :param spec: the decision contract (:class:`~rlhpo.control.spec.DecisionSpec`: the policy's
        spec, or the environment's config; a loop cut into another number of intervals passes
        the spec with its ``n_intervals``, see :func:`check_intervals`)
    :param total_examples: the run's example budget
    :param max_batch_size: an extra cap on the batch size (the training-set size)
    """

    def __init__(self, spec: DecisionSpec, total_examples: int, max_batch_size: Optional[int] = None) -> None:
        self.spec = DecisionSpec.validate(spec)  # an EnvConfig's own settings are the environment's
        self.actions = ActionSpec(spec.actions, max_batch_size=max_batch_size)
        self.features = FeatureExtractor(spec.feature_names)
        self.total_examples = int(total_examples)
        self.n_intervals = int(spec.n_intervals)
        self.guard = Guard(spec.guard, None)
        self.interval = 0
        self.last_action = np.zeros(3)
        self._verdict = Verdict(False)
        self._level = 0.0

    @property
    def boundary(self) -> int:
        """Examples seen at which the current interval ends (the next decision)."""
        return interval_end(self.total_examples, self.n_intervals, self.interval)

    def start(
        self,
        hp: Hyperparams,
        adaptive: bool,
        write: Callable[[Hyperparams], Hyperparams],
        target: Optional[Restorable] = None,
        off: tuple[str, ...] = (),
        kind: Optional[str] = None,
    ) -> Hyperparams:
        """Begin a run from ``hp``: the starting values are clipped into the policy's bounds and
        given to ``write``, which applies them and returns the values in effect (a sampler clamps
        the batch size to the dataset); the features start from those, the clock from zero, and
        the guard snapshots ``target`` (None: divergence is detected, nothing can be restored).

        Under the ``calibrated`` prior the run starts from the calibrated default of the optimizer
        ``kind`` (``adam``, ``adamw``, ``sgd``; another kind: from ``hp``) with ``hp``'s batch
        size, and ``hp``'s lr is a bound: the trust region (``max_lr_ratio`` around the start)
        reaches down to it. A control in ``off`` keeps ``hp``'s value.

        Controls named in ``off`` stay at their start for the run; so does the weight decay of a
        run that starts without any (Adam's and SGD's default): the policy never switches it on.
        """
        user = hp
        hp = prior_start(self.spec.prior, kind, hp, self.spec.prior_table)
        held = set(off) | {n for n in CONTROLS if n not in self.actions.controls}  # these keep the user's value
        if "weight_decay" in held:
            hp = Hyperparams(hp.lr, hp.batch_size, user.weight_decay)
        if "lr" in held:
            hp = Hyperparams(user.lr, hp.batch_size, hp.weight_decay)
        if hp.weight_decay == 0 and "weight_decay" not in off:
            off = (*off, "weight_decay")
        start = self.actions.reset(hp, off)
        r = self.spec.guard.max_lr_ratio
        if r is not None:  # the trust region: the lr level within [start / r, start * r], down to the user's lr
            self.actions.narrow("lr", min(start.lr / r, max(user.lr, 1e-30)), start.lr * r)
        for name in CONTROLS:
            floor = getattr(self.actions.config, name).min_start_ratio
            if floor is not None and getattr(start, name) > 0:
                self.actions.narrow(name, getattr(start, name) * floor, math.inf)
        self._level = start.lr
        start = write(self._scheduled(start, 0))
        self.features.reset(start.lr, start.batch_size, start.weight_decay, adaptive)
        self.interval = 0
        self.last_action = np.zeros(3)
        self._verdict = Verdict(False)
        self.guard = Guard(self.spec.guard, target)
        self.guard.start()
        return start

    def observe(self, stats: IntervalStats, val_loss: float, hp: Hyperparams, examples_seen: int) -> Observation:
        """End the current interval: the guard's verdict (a rollback restores the target here)
        and the observation, built on the validation loss in effect after the verdict."""
        self.interval += 1
        self._verdict = self.guard.review(stats.nonfinite, val_loss)
        obs = self.features.observe(
            stats,
            self._verdict.val_loss,
            hp.lr,
            hp.batch_size,
            hp.weight_decay,
            progress=min(examples_seen / self.total_examples, 1.0),
            last_action=self.last_action,
        )
        return Observation(obs, self._verdict)

    def act(self, action: Sequence[float] | np.ndarray, hp: Hyperparams) -> Hyperparams:
        """The hyperparameters for the next interval, from the policy's action and the verdict.

        After a rollback the policy's action is replaced by a learning-rate cut (``lr_cut``); a
        divergence with nothing to restore steps every control down as far as one action can;
        once divergence has repeated (``freeze_after``) no control moves upwards again.
        """
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if self._verdict.rolled_back:
            a = np.zeros(self.actions.n_actions)
        elif self._verdict.diverged:
            a = np.full(self.actions.n_actions, -1.0)
        if self.guard.frozen:
            a = np.minimum(a, 0.0)
        self.last_action = self.actions.full_action(a)
        new = self.actions.apply(a, hp)
        if self._verdict.rolled_back:
            self.actions.scale("lr", self.spec.guard.lr_cut)
            new = self.actions.hparams(new)
        self._level = new.lr
        return self._scheduled(new, interval_end(self.total_examples, self.n_intervals, self.interval - 1))

    def rescale(self, factor: float) -> float:
        """Move the lr level by ``factor`` outside any action, within its bounds (a probe's
        choice); returns the new level."""
        self.actions.scale("lr", factor)
        self._level = self.actions.hparams(Hyperparams(self._level, 1, 0.0)).lr
        return self._level

    def grow_batch(self, factor: float, hp: Hyperparams, lr_factor: Callable[[float], float]) -> Hyperparams:
        """The batch size times ``factor`` outside any action, within its bounds, and the lr level
        times ``lr_factor(growth)`` of the growth that took effect (the batch rule's move,
        :mod:`rlhpo.control.batch_rule`); the hyperparameters from here on, the lr as the base
        schedule gives it now."""
        self.actions.scale("batch_size", factor)
        growth = self.actions.hparams(hp).batch_size / hp.batch_size
        if growth > 1:
            self.actions.scale("lr", lr_factor(growth))
        new = self.actions.hparams(Hyperparams(self._level, hp.batch_size, hp.weight_decay))
        self._level = new.lr
        return self._scheduled(new, interval_end(self.total_examples, self.n_intervals, self.interval - 1))

    @property
    def scheduled(self) -> bool:
        """Whether the lr follows the base schedule step by step (:meth:`lr_at`)."""
        return self.spec.base_schedule != "none" and self.actions.live("lr")

    @property
    def level(self) -> float:
        """The policy's lr level: the lr the base schedule multiplies."""
        return self._level

    def lr_at(self, seen: int, n: int) -> float:
        """The lr of the optimizer step that trains budget units ``[seen, seen + n)``: the level
        times :func:`step_factor`. Every loop under a scheduled decision path (:attr:`scheduled`)
        sets this lr before every optimizer step."""
        total = self.total_examples
        # past the budget (a loop that trains on, a decision at the budget): the last step's lr holds,
        # never 0; a step larger than the whole budget trains at the budget's midpoint
        n = min(n, total)
        return self._level * step_factor(self.spec.base_schedule, min(seen, total - n), n, total)

    def _scheduled(self, hp: Hyperparams, seen: int) -> Hyperparams:
        """``hp`` with the lr the base schedule gives at ``seen`` (the first step's lr is written
        at a decision; loops overwrite it per step with :meth:`lr_at`). A run whose lr the policy
        does not set keeps its lr."""
        if not self.scheduled:
            return hp
        return Hyperparams(self.lr_at(seen, 1), hp.batch_size, hp.weight_decay)

    def state_dict(self) -> dict:
        return {
            "interval": self.interval,
            "level": self._level,
            "last_action": self.last_action.tolist(),
            "actions": self.actions.state_dict(),
            "features": dict(vars(self.features)),
            "guard": self.guard.state_dict(),
            "verdict": vars(self._verdict).copy(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.interval = int(state["interval"])
        self._level = float(state.get("level", math.exp(state["actions"]["z"][0])))
        self.last_action = np.asarray(state["last_action"], dtype=np.float64)
        self.actions.load_state_dict(state["actions"])
        vars(self.features).update(state["features"])
        self.guard.load_state_dict(state["guard"])
        self._verdict = Verdict(**state["verdict"])
