"""Do no harm: a run under the controller never ends diverged, nor far worse than its best point.

At every decision whose interval passes the health check the guard keeps a snapshot of the
training state (model parameters and buffers, optimizer state, sampler position) in host
memory. When an interval diverges (:func:`divergence_reason`: a non-finite
loss, gradient or parameter, a validation loss above ``factor`` times the best so far, or a
*collapse*: a validation loss that jumps far beyond the run's own recent interval-to-interval
variation and well above the best) it restores the best snapshot (the last good state with the
lowest validation loss) and the decision path cuts the learning rate; after ``freeze_after``
rollbacks the policy may no longer move any hyperparameter upwards. The examples spent since
the snapshot are not refunded: the run's clock goes on.

The environment, :class:`rlhpo.Controller` and the evaluation runner all guard through this one
class, so a policy is meta-trained under the rules it is deployed with. What it snapshots is
any object with ``capture() -> state`` and ``restore(state)`` (:class:`Restorable`): the
training session, one row of the stacked trainer, or a user's model + optimizer + sampler
(:class:`rlhpo.training.snapshot.LoopState`).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

from rlhpo.errors import check_fields, is_int, is_number

#: the collapse rule's defaults (``python -m bench.divergence_rule``, docs/results/divergence_rule.txt)
JUMP, JUMP_MIN = 5.0, 0.2


@dataclass
class GuardConfig:
    """How the guard decides and responds.

    :param enabled: snapshot and roll back (off: a diverged interval is only reported)
    :param factor: a validation loss above ``factor`` x the best so far is divergence (chosen by
        ``python -m bench.divergence_rule``; see README's reliability section)
    :param lr_cut: the learning rate is multiplied by this at a rollback
    :param freeze_after: after this many rollbacks no hyperparameter moves upwards again
    :param restore_best: at the end of the run, restore the best-validation snapshot when the
        final validation loss is worse (off by default: it acts like early stopping, which a
        fair comparison must then give every method)
    :param max_lr_ratio: the trust region: the lr level stays within [start / r, start * r]
        around the prior (None: only the policy's bounds)
    :param jump: the collapse rule: an interval whose validation loss is above the best so far by
        more than ``jump`` x the median interval-to-interval change over the last ``jump_window``
        healthy intervals, and by more than ``jump_min`` x |best|, diverged (None: off). Chosen
        by ``python -m bench.divergence_rule``
    :param jump_min: see ``jump``
    :param jump_window: see ``jump``; the rule needs at least 3 healthy intervals
    :param min_lost: besides the 2x or the collapse rule, a divergence must have lost more than
        this share of the run's progress so far (its first healthy loss minus its best): noise on a
        loss that has come far down (0.01 -> 0.024 after a start at 2.3) is not a divergence; a
        real blow-up loses most of it. Non-finite values are divergence whatever this is
    :param proxy_factor: the factor rule's factor when the loss judged is the interval's mean
        *training* loss (a Controller without a validation source): minibatch noise on heavy-tailed
        data doubles it in healthy runs (robust regression), a blow-up multiplies it far more
        (``python -m bench.divergence_rule``, the last table)
    """

    enabled: bool = True
    factor: float = 2.0
    lr_cut: float = 0.5
    freeze_after: int = 2
    restore_best: bool = False
    max_lr_ratio: Optional[float] = 4.0
    jump: Optional[float] = JUMP
    jump_min: float = JUMP_MIN
    jump_window: int = 5
    min_lost: float = 0.2
    proxy_factor: float = 10.0

    def validate(self, where: str = "guard") -> "GuardConfig":
        check_fields(self, f"{where}.", (
            ("enabled restore_best", lambda v: isinstance(v, bool), "true or false"),
            ("factor", lambda v: is_number(v) and v > 1, "a finite number > 1"),
            ("lr_cut", lambda v: is_number(v) and 0 < v < 1, "a number in (0, 1)"),
            ("freeze_after", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
            ("max_lr_ratio", lambda v: v is None or (is_number(v) and v > 1), "null or a number > 1"),
            ("jump", lambda v: v is None or (is_number(v) and v > 0), "null (off) or a number > 0"),
            ("jump_min", lambda v: is_number(v) and v >= 0, "a number >= 0"),
            ("proxy_factor", lambda v: is_number(v) and v > 1, "a finite number > 1"),
            ("min_lost", lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
            ("jump_window", lambda v: is_int(v) and v >= 2, "an integer >= 2"),
        ))
        return self


def divergence_reason(
    nonfinite: bool,
    val_loss: float,
    best_val: float,
    factor: float,
    recent: Sequence[float] = (),
    jump: Optional[float] = None,
    jump_min: float = JUMP_MIN,
    first: float = math.nan,
    min_lost: float = 0.0,
    what: str = "validation loss",
) -> str:
    """The one divergence rule; why an interval diverged, '' if it did not.

    Diverged: a non-finite training loss, gradient or parameter in the interval, a non-finite
    validation loss, a validation loss above ``factor`` x the best so far, or (with ``jump``) a
    collapse: the validation loss is above the best by more than ``jump`` x the median
    interval-to-interval change of ``recent`` (the run's recent healthy validation losses, oldest
    first, at least 3; the median: one fast early fall in the window does not hide a jump) and by
    more than ``jump_min`` x |best|.
    Relative to the best, not to the first interval: a run that has come far down and then jumps
    has lost what it gained, whatever its start was. Either rule also needs the rise to exceed
    ``min_lost`` x the progress so far (``first`` - best, ``first`` the run's first healthy loss):
    noise on a small loss is not a divergence. ``factor``, ``jump``, ``jump_min`` and ``min_lost``
    are chosen by measurement (``python -m bench.divergence_rule``). ``what`` names the loss
    in the reason (``training loss`` when the interval's mean training loss stands in).
    """
    if nonfinite:
        return "non-finite training loss, gradient or parameter"
    if not math.isfinite(val_loss):
        return f"non-finite {what}"
    if not math.isfinite(best_val):
        return ""
    if math.isfinite(first) and val_loss - best_val <= min_lost * max(first - best_val, 0.0):
        return ""  # within the noise of a run that has come down: it kept most of its progress
    scale = max(abs(best_val), 1e-12)
    # val > factor x best, written so that it also holds for losses that can be negative
    if val_loss - best_val > (factor - 1.0) * scale:
        return f"{what} {val_loss:.4g} above {factor:g} x the best so far ({best_val:.4g})"
    if jump is not None and len(recent) >= 3 and val_loss - best_val > jump_min * scale:
        spread = statistics.median(abs(b - a) for a, b in zip(recent[:-1], recent[1:]))
        rise = val_loss - best_val
        if rise > jump * spread:
            return (
                f"{what} {val_loss:.4g} jumped {100 * rise / scale:.0f}% above the best so far ({best_val:.4g}), "
                f"{rise / max(spread, 1e-300):.3g} x the run's recent interval-to-interval change ({spread:.3g})"
            )
    return ""


class Restorable(Protocol):
    """What the guard snapshots: the training state, never the run's clock."""

    def capture(self) -> dict: ...
    def restore(self, state: dict) -> None: ...


@dataclass
class Verdict:
    """What the guard made of one interval."""

    diverged: bool
    rolled_back: bool = False
    val_loss: float = float("nan")  # the validation loss in effect after the verdict
    reason: str = ""


class Guard:
    """Snapshots and rollbacks for one run (see the module docstring).

    :param config: the rule and the response
    :param target: what to snapshot and restore
    """

    def __init__(self, config: GuardConfig, target: Optional[Restorable]) -> None:
        self.config = config.validate()
        self.target = target
        self.best_val = math.inf
        self.first_val = math.nan  # the first healthy loss: the progress a divergence must lose is measured from it
        self.rollbacks = 0
        self.recent: list[float] = []  # the last healthy validation losses (the collapse rule's window)
        self._last: Optional[tuple[dict, float]] = None  # the last good state and its val loss
        self._best: Optional[tuple[dict, float]] = None  # the good state with the lowest val loss
        #: the collapse rule judges a real validation loss; a caller whose "validation loss" is the
        #: interval's mean training loss (a noisy proxy) turns it off for that interval
        self.watch_jumps = True

    @property
    def frozen(self) -> bool:
        """Whether upward moves are over for this run (divergence repeated)."""
        return self.rollbacks >= self.config.freeze_after

    def start(self) -> None:
        """Snapshot the starting state: a first interval that diverges goes back to it."""
        if self.active:
            self._last = (self.target.capture(), math.inf)

    @property
    def active(self) -> bool:
        """Whether it snapshots and rolls back (enabled, and given something to snapshot)."""
        return self.config.enabled and self.target is not None

    def reason(self, nonfinite: bool, val_loss: float) -> str:
        """Why the interval that just ended diverged under this guard's rule ('' if it did not)."""
        c = self.config
        jump = c.jump if self.watch_jumps else None
        what = "validation loss" if self.watch_jumps else "training loss (the interval's mean; no validation source)"
        factor = c.factor if self.watch_jumps else c.proxy_factor
        return divergence_reason(nonfinite, val_loss, self.best_val, factor, self.recent, jump, c.jump_min,
                                 self.first_val, c.min_lost, what)

    def review(self, nonfinite: bool, val_loss: float) -> Verdict:
        """Judge an interval that just ended: snapshot a healthy state, restore the best one after
        divergence."""
        why = self.reason(nonfinite, val_loss)
        if not why:
            self.recent = [*self.recent, val_loss][-(self.config.jump_window + 1) :]
            improved = val_loss <= self.best_val
            self.best_val = min(self.best_val, val_loss)
            if not math.isfinite(self.first_val):
                self.first_val = val_loss
            if self.active:
                self._last = (self.target.capture(), val_loss)
                if improved:
                    self._best = self._last  # the same snapshot: no second copy
            return Verdict(False, val_loss=val_loss)
        if not self.active or self._last is None:
            return Verdict(True, val_loss=val_loss, reason=why)
        state, good_val = self._best or self._last
        self.target.restore(state)
        self.rollbacks += 1
        return Verdict(True, rolled_back=True, val_loss=good_val, reason=why)

    def finish(self, final_val: float) -> Optional[float]:
        """At the end of the run, restore the best-validation snapshot when ``restore_best`` is
        on and the final state is worse; returns the validation loss then in effect if restored."""
        if not (self.active and self.config.restore_best and self._best is not None):
            return None
        state, best_val = self._best
        if math.isfinite(final_val) and final_val <= best_val:
            return None
        self.target.restore(state)
        return best_val

    def state_dict(self) -> dict:
        return {
            "best_val": self.best_val,
            "first_val": self.first_val,
            "rollbacks": self.rollbacks,
            "recent": list(self.recent),
            "last": None if self._last is None else {"state": self._last[0], "val": self._last[1]},
            "best": None if self._best is None else {"state": self._best[0], "val": self._best[1]},
        }

    def load_state_dict(self, state: dict) -> None:
        """Load :meth:`state_dict`'s output; a state saved before the collapse rule (no
        ``recent``) loads with an empty window (the rule starts again after 3 healthy intervals)."""
        self.best_val = float(state["best_val"])
        self.first_val = float(state.get("first_val", math.nan))
        self.rollbacks = int(state["rollbacks"])
        self.recent = [float(v) for v in state.get("recent", [])]
        last, best = state.get("last"), state.get("best")
        self._last = None if last is None else (last["state"], float(last["val"]))
        self._best = None if best is None else (best["state"], float(best["val"]))
