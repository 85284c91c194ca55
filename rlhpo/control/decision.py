"""The one decision path: every control decision, in the environment or in a user's loop.

The environment (single and batched), :class:`rlhpo.Controller` (plain loops, Lightning,
Hugging Face) and the evaluation runner all decide through this module, so a policy is deployed
under exactly the rules it was meta-trained under:

* the **interval clock** (:func:`interval_end`): the example budget split evenly into
  ``n_intervals``; a decision falls when the examples seen reach the interval's end;
* the **divergence rule** (:func:`is_diverged`);
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

from rlhpo.control.actions import ActionConfig, ActionSpec
from rlhpo.control.features import FeatureExtractor
from rlhpo.tasks.base import Hyperparams
from rlhpo.training.hparams import write_hparams  # noqa: F401  (the one writer, re-exported)
from rlhpo.training.monitor import IntervalStats

#: a validation loss above this multiple of the first interval's is divergence (see is_diverged)
DIVERGENCE_FACTOR = 100.0


def interval_end(total_examples: int, n_intervals: int, k: int) -> int:
    """Examples seen at the end of interval ``k`` (0-based): the budget split evenly, integer
    arithmetic so every caller lands on the same example."""
    return total_examples * min(k + 1, n_intervals) // n_intervals


def is_diverged(stats: IntervalStats, val_loss: float, reference: Optional[float], factor: float = DIVERGENCE_FACTOR) -> bool:
    """The divergence rule: a non-finite training loss, gradient or parameter in the interval, a
    non-finite validation loss, or a validation loss above ``factor`` times ``reference`` (the
    validation loss after the first interval).

    Why this rule and not "non-finite only": it is the rule the shipped policy was meta-trained
    under (the environment ends such an episode), so the Controller must apply it too; and a
    blow-up that stays finite (a 20-100x jump of the validation loss) is as much a lost run as a
    NaN, and needs the same response. The reference is the first interval's loss, not the best so
    far, so a task whose loss falls by orders of magnitude (a regression driven to ~0) is not
    flagged for the ordinary noise of a tiny loss.
    """
    if stats.nonfinite or not math.isfinite(val_loss):
        return True
    return reference is not None and val_loss > factor * max(reference, 1e-12)


@dataclass
class Observation:
    """One decision's input: the feature vector and whether the interval diverged."""

    obs: np.ndarray
    diverged: bool


class DecisionPath:
    """The state of one run's decisions: its clock, its features, its action state.

    Call :meth:`start` once per run, then per interval: train until :attr:`boundary`,
    :meth:`observe` the interval, get an action for ``observation.obs``, and :meth:`act`.

    :param actions: the controls and their bounds (the policy's, from its spec)
    :param total_examples: the run's example budget
    :param n_intervals: decisions per run (the policy's)
    :param divergence_factor: see :func:`is_diverged`
    :param max_batch_size: an extra cap on the batch size (the training-set size)
    """

    def __init__(
        self,
        actions: ActionConfig,
        total_examples: int,
        n_intervals: int,
        divergence_factor: float = DIVERGENCE_FACTOR,
        max_batch_size: Optional[int] = None,
    ) -> None:
        self.actions = ActionSpec(actions, max_batch_size=max_batch_size)
        self.features = FeatureExtractor()
        self.total_examples = int(total_examples)
        self.n_intervals = int(n_intervals)
        self.divergence_factor = float(divergence_factor)
        self.interval = 0
        self.reference: Optional[float] = None
        self.last_action = np.zeros(3)

    @property
    def boundary(self) -> int:
        """Examples seen at which the current interval ends (the next decision)."""
        return interval_end(self.total_examples, self.n_intervals, self.interval)

    def start(self, hp: Hyperparams, adaptive: bool, write: Callable[[Hyperparams], Hyperparams]) -> Hyperparams:
        """Begin a run from ``hp``: the starting values are clipped into the policy's bounds and
        given to ``write``, which applies them and returns the values in effect (a sampler clamps
        the batch size to the dataset); the features start from those, the clock from zero."""
        start = write(self.actions.reset(hp))
        self.features.reset(start.lr, start.batch_size, start.weight_decay, adaptive)
        self.interval = 0
        self.reference = None
        self.last_action = np.zeros(3)
        return start

    def observe(self, stats: IntervalStats, val_loss: float, hp: Hyperparams, examples_seen: int) -> Observation:
        """End the current interval: the observation and the divergence verdict."""
        self.interval += 1
        diverged = is_diverged(stats, val_loss, self.reference, self.divergence_factor)
        if self.reference is None and math.isfinite(val_loss):
            self.reference = val_loss
        obs = self.features.observe(
            stats,
            val_loss,
            hp.lr,
            hp.batch_size,
            hp.weight_decay,
            progress=min(examples_seen / self.total_examples, 1.0),
            last_action=self.last_action,
        )
        return Observation(obs, diverged)

    def act(self, action: Sequence[float] | np.ndarray, hp: Hyperparams, diverged: bool = False) -> Hyperparams:
        """The hyperparameters for the next interval.

        After a divergence the policy is outside what it met in meta-training (the environment
        ends a diverged episode), so its action is replaced by the largest step down on every
        control.
        """
        if diverged:
            action = np.full(self.actions.n_actions, -1.0)
        self.last_action = self.actions.full_action(np.asarray(action))
        return self.actions.apply(action, hp)

    def state_dict(self) -> dict:
        return {
            "interval": self.interval,
            "reference": self.reference,
            "last_action": self.last_action.tolist(),
            "actions": self.actions.state_dict(),
            "features": dict(vars(self.features)),
        }

    def load_state_dict(self, state: dict) -> None:
        self.interval = int(state["interval"])
        self.reference = state.get("reference")
        self.last_action = np.asarray(state["last_action"], dtype=np.float64)
        self.actions.load_state_dict(state["actions"])
        vars(self.features).update(state["features"])
