"""The feature extractor: training statistics in, a task-invariant observation out.

One piece of code, versioned: the control decision (:mod:`rlhpo.control.decision`) calls it for
the environment and :class:`rlhpo.Controller` alike; a policy artifact records
:data:`FEATURE_VERSION` and the controller refuses a mismatch. :class:`FeatureExtractor` turns
interval summaries (:class:`~rlhpo.training.monitor.IntervalStats`), the validation loss and the
current hyperparameters into the observation vector, every entry finite and of about unit scale.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

from rlhpo.training.monitor import IntervalStats

FEATURE_VERSION = 1
FEATURE_NAMES: tuple[str, ...] = (
    "progress",  # fraction of the example budget spent
    "log_train_loss_ratio",  # log(train loss / train loss of the first interval)
    "log_val_loss_ratio",  # log(val loss / val loss after the first interval)
    "log_generalisation_gap",  # log(val loss / train loss)
    "log_val_over_best",  # log(val loss / best val loss so far) >= 0: overfitting or blow-up
    "log_val_change",  # log(val loss / previous val loss)
    "train_loss_trend",  # log(mean loss of second half of the interval / first half)
    "log_loss_noise",  # log of the coefficient of variation of minibatch losses
    "log_grad_norm_ratio",  # log(grad norm / grad norm of the first interval)
    "log10_update_ratio",  # log10(|update| / |params|), shifted and scaled
    "update_cosine",  # cosine of successive updates (+1 steady, -1 oscillating)
    "log_lr_ratio",  # log10(lr / starting lr)
    "log_batch_ratio",  # log2(batch size / starting batch size) / 3
    "log_wd_ratio",  # log10(wd / starting wd)
    "log10_lr",  # absolute log10 lr, shifted and scaled
    "adaptive_optimizer",  # 1 for Adam/AdamW, 0 for SGD
    "last_action_lr",
    "last_action_batch_size",
    "last_action_weight_decay",
)
N_FEATURES = len(FEATURE_NAMES)
CLIP = 5.0


def _log_ratio(a: float, b: float) -> float:
    """log(a / b) for positive losses; losses may be zero or negative for some tasks, so shift."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return CLIP if not math.isfinite(a) else 0.0
    a, b = max(a, 1e-12), max(b, 1e-12)
    return math.log(a / b)


class FeatureExtractor:
    """Builds observation vectors; stateful over one training run (call :meth:`reset` per run).

    :param initial_lr, initial_batch_size, initial_weight_decay: the run's starting hyperparameters
    :param adaptive: whether the optimizer is adaptive (Adam/AdamW)
    """

    version = FEATURE_VERSION
    names = FEATURE_NAMES

    def __init__(self) -> None:
        self.reset(1e-3, 32, 1e-4, True)

    def reset(self, initial_lr: float, initial_batch_size: int, initial_weight_decay: float, adaptive: bool) -> None:
        self.lr0 = max(float(initial_lr), 1e-12)
        self.bs0 = max(int(initial_batch_size), 1)
        self.wd0 = max(float(initial_weight_decay), 1e-8)
        self.adaptive = float(adaptive)
        self.train_ref: Optional[float] = None
        self.val_ref: Optional[float] = None
        self.grad_ref: Optional[float] = None
        self.best_val = math.inf
        self.prev_val: Optional[float] = None

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
        noise = stats.loss_std / abs(train) if (math.isfinite(train) and abs(train) > 1e-12) else 0.0
        lr = max(float(lr), 1e-12)
        wd = max(float(weight_decay), 1e-8)
        # Python floats throughout (numpy scalars make every comparison below slower)
        a = last_action.tolist() if isinstance(last_action, np.ndarray) else list(last_action)
        a += [0.0] * (3 - len(a))
        obs = [
            progress,
            _log_ratio(train, self.train_ref or train),
            _log_ratio(val_loss, self.val_ref or val_loss),
            _log_ratio(val_loss, train),
            _log_ratio(val_loss, self.best_val if math.isfinite(self.best_val) else val_loss),
            _log_ratio(val_loss, prev_val) * 5.0,
            _log_ratio(stats.loss_second_half, stats.loss_first_half) * 5.0,
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
        if math.isfinite(val_loss):
            self.prev_val = val_loss
        # NaN -> 0, then clip (inf -> +-CLIP); plain Python: np.nan_to_num costs more than all the
        # rest, and comparisons cost less than min()/max() calls
        hi, lo = CLIP, -CLIP
        return np.array([0.0 if v != v else (hi if v > hi else (lo if v < lo else v)) for v in obs], dtype=np.float32)
