"""The feature extractor: training statistics in, a task-invariant observation out.

One piece of code: the control decision (:mod:`rlhpo.control.decision`) calls it for the
environment and :class:`rlhpo.Controller` alike, computing the feature set of the decision spec
(:data:`rlhpo.control.spec.FEATURE_SETS`). :class:`FeatureExtractor` turns
interval summaries (:class:`~rlhpo.training.monitor.IntervalStats`), the validation loss and the
current hyperparameters into the observation vector, every entry finite and of about unit scale.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from rlhpo.control.spec import FEATURE_NAMES, FEATURE_NAMES_V1
from rlhpo.training.monitor import IntervalStats

N_FEATURES = len(FEATURE_NAMES)
CLIP = 5.0
_V1_ONLY = (FEATURE_NAMES_V1.index("log10_lr"), FEATURE_NAMES_V1.index("adaptive_optimizer"))


def _log_ratio(a: float, b: float) -> float:
    """log(a / b) for positive losses (the first set clamps zero and negative losses at 1e-12)."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return CLIP if not math.isfinite(a) else 0.0
    a, b = max(a, 1e-12), max(b, 1e-12)
    return math.log(a / b)


def loss_gap(a: float, b: float, positive: bool, scale: float) -> float:
    """How much larger loss ``a`` is than loss ``b``, scale-free: ``log(a / b)`` while the run's
    losses are all positive, else ``(a - b) / scale`` with ``scale`` the run's loss range (free of
    both the losses' scale and their offset, so a loss that goes negative is fine). Non-finite
    ``a`` reads as a blow-up (+CLIP); a non-finite ``b`` as no information (0)."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return CLIP if not math.isfinite(a) else 0.0
    if positive and a > 0 and b > 0:
        return math.log(a) - math.log(b)  # not log(a / b): the quotient can underflow to 0
    return (a - b) / scale


class FeatureExtractor:
    """Builds observation vectors; stateful over one training run (call :meth:`reset` per run).

    :param names: the feature set (:data:`~rlhpo.control.spec.FEATURE_SETS`): the current one by
        default; :data:`~rlhpo.control.spec.FEATURE_NAMES_V1` for the first policy (absolute lr and
        optimizer flag, losses clamped at 1e-12)
    """

    def __init__(self, names: Sequence[str] = FEATURE_NAMES) -> None:
        self.names = tuple(names)
        self.first = self.names == FEATURE_NAMES_V1  # the first feature set
        self.reset(1e-3, 32, 1e-4, True)

    def reset(self, initial_lr: float, initial_batch_size: int, initial_weight_decay: float, adaptive: bool) -> None:
        """Start a run from these hyperparameters (``adaptive``: Adam/AdamW, the first feature set only)."""
        self.lr0 = max(float(initial_lr), 1e-12)
        self.bs0 = max(int(initial_batch_size), 1)
        self.wd0 = max(float(initial_weight_decay), 1e-8)
        self.adaptive = float(adaptive)
        self.train_ref: Optional[float] = None
        self.val_ref: Optional[float] = None
        self.grad_ref: Optional[float] = None
        self.best_val = math.inf
        self.prev_val: Optional[float] = None
        self.positive = True  # every finite loss seen so far > 0 (the current set's log ratios)
        self.low = math.inf  # the lowest finite loss seen (train or val): the current set's loss range
        self.scale = 1.0  # the run's loss range (first losses - lowest), the current set only

    def _gap_fn(self, train: float, val_loss: float):
        """The first set: clamped log ratio. The current set: :func:`loss_gap` over this run's loss range."""
        if self.first:
            return _log_ratio
        for v in (train, val_loss):
            if math.isfinite(v):
                self.positive = self.positive and v > 0
                self.low = min(self.low, v)
        refs = [r for r in (self.train_ref, self.val_ref) if r is not None]
        self.scale = max([r - self.low for r in refs] + [1e-6 * (1.0 + max((abs(r) for r in refs), default=0.0))])
        positive, scale = self.positive, self.scale
        return lambda a, b: loss_gap(a, b, positive, scale)

    def observe(
        self,
        stats: IntervalStats,
        val_loss: float,
        lr: float,
        batch_size: int,
        weight_decay: float,
        progress: float,
        last_action: Sequence[float],
    ) -> np.ndarray:
        """The observation after one interval. The first call fixes the reference losses.

        ``last_action`` holds the lr, batch-size and weight-decay components (0 where a control
        is off). Non-finite inputs never produce non-finite outputs.
        """
        train = stats.loss_mean
        if self.train_ref is None and math.isfinite(train):
            self.train_ref = train
        if self.val_ref is None and math.isfinite(val_loss):
            self.val_ref = val_loss
        if self.grad_ref is None and math.isfinite(stats.grad_norm) and stats.grad_norm > 0:
            self.grad_ref = stats.grad_norm
        prev_val = self.prev_val if self.prev_val is not None else val_loss
        if math.isfinite(val_loss):
            self.best_val = min(self.best_val, val_loss)
        gap = self._gap_fn(train, val_loss)
        if self.first or self.positive:
            noise = stats.loss_std / abs(train) if (math.isfinite(train) and abs(train) > 1e-12) else 0.0
        else:  # spread of minibatch losses relative to the run's loss range
            noise = stats.loss_std / self.scale if math.isfinite(stats.loss_std) else 0.0
        lr = max(float(lr), 1e-12)
        wd = max(float(weight_decay), 1e-8)
        # Python floats throughout (numpy scalars make every comparison below slower)
        a = last_action.tolist() if isinstance(last_action, np.ndarray) else list(last_action)
        a += [0.0] * (3 - len(a))
        obs = [
            progress,
            gap(train, self.train_ref or train),
            gap(val_loss, self.val_ref or val_loss),
            gap(val_loss, train),
            gap(val_loss, self.best_val if math.isfinite(self.best_val) else val_loss),
            gap(val_loss, prev_val) * 5.0,
            gap(stats.loss_second_half, stats.loss_first_half) * 5.0,
            math.log(max(noise, 1e-4)) / 3.0 + 1.0,
            _log_ratio(stats.grad_norm, self.grad_ref or stats.grad_norm) / 3.0 if math.isfinite(stats.grad_norm) else 0.0,
            (math.log10(max(stats.update_ratio, 1e-12)) + 3.0) / 2.0 if math.isfinite(stats.update_ratio) else 0.0,
            stats.update_cosine,
            math.log10(lr / self.lr0) / 2.0,
            math.log2(max(int(batch_size), 1) / self.bs0) / 3.0,
            math.log10(wd / self.wd0) / 2.0,
            (math.log10(lr) + 3.0) / 2.0,
            self.adaptive,
            a[0],
            a[1],
            a[2],
        ]
        if not self.first:
            del obs[_V1_ONLY[1]], obs[_V1_ONLY[0]]
        if math.isfinite(val_loss):
            self.prev_val = val_loss
        # NaN -> 0, then clip (inf -> +-CLIP); plain Python: np.nan_to_num costs more than all the
        # rest, and comparisons cost less than min()/max() calls
        hi, lo = CLIP, -CLIP
        return np.array([0.0 if v != v else (hi if v > hi else (lo if v < lo else v)) for v in obs], dtype=np.float32)
