"""Branching probes: look before leaping.

At chosen decisions the run is snapshotted and continued briefly under each candidate lr level
(the level x ``factors``), every branch from the same state, for the same length and with the same
linear cooldown at its end, so the comparison is fair between a large and a small lr (a greedy
comparison without a cooldown favours small lrs: the short-horizon bias). The branch with the
lowest score wins; its end state is kept (its steps were training, not waste), and the level moves
by its factor. The branches are consecutive stretches of the same loop and their examples count in
the budget: the probe share of compute is ``(len(factors) - 1) * length`` per probe.

The score of a branch is the validation loss at its end when the loop has a validation source,
else the mean training loss of its last ``cooldown / 2`` share (the most annealed steps). A
branch that produced a non-finite loss scores ``inf``.

:class:`Probe` is a small state machine the Controller (a user's loop, the evaluation runner)
drives: :meth:`Probe.begin` at a decision, :meth:`Probe.multiplier` before every optimizer step,
:meth:`Probe.after_step` after it; the snapshot and restore are the guard's
(:class:`~rlhpo.control.guard.Restorable`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

from rlhpo.control.guard import Restorable
from rlhpo.errors import ConfigError


@dataclass(frozen=True)
class ProbeConfig:
    """When and how to probe. The defaults are the best of five settings on the ``dev`` split
    (docs/evaluation.md, "Branching probes"): two probes, after the 2nd and 5th decisions, branches of
    1% of the budget (4% of the budget on branches not kept), a move only for a 2% better score.

    :param at: the decisions (1-based: after interval ``k``) at which a probe starts
    :param factors: the branches' lr multipliers of the level, in the order they run (``1.0``, the
        level as it is, first: it wins ties)
    :param length: each branch's length, as a fraction of the budget
    :param cooldown: the last share of each branch over which its lr decays linearly to 0
    :param margin: another factor wins only with a score below ``(1 - margin)`` x the first's
        (the level as it is): a move must be worth its risk
    """

    at: tuple[int, ...] = (2, 5)
    factors: tuple[float, ...] = (1.0, 0.5, 2.0)
    length: float = 0.01
    cooldown: float = 0.5
    margin: float = 0.02

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", tuple(int(a) for a in self.at))
        object.__setattr__(self, "factors", tuple(float(f) for f in self.factors))
        if not self.at or any(a < 1 for a in self.at):
            raise ConfigError(f"probe.at must name decisions >= 1, got {list(self.at)}")
        if len(self.factors) < 2 or any(not (f > 0 and math.isfinite(f)) for f in self.factors):
            raise ConfigError(f"probe.factors must be at least two positive lr multipliers, got {list(self.factors)}")
        if not 0 < self.length <= 0.1:
            raise ConfigError(f"probe.length must be a fraction of the budget in (0, 0.1], got {self.length}")
        if not 0 < self.cooldown <= 1:
            raise ConfigError(f"probe.cooldown must be in (0, 1], got {self.cooldown}")
        if not 0 <= self.margin < 1:
            raise ConfigError(f"probe.margin must be in [0, 1), got {self.margin}")

    @property
    def share(self) -> float:
        """The fraction of the budget a run spends on branches it does not keep."""
        return len(self.at) * (len(self.factors) - 1) * self.length

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class Outcome:
    """One finished probe: the factors tried, their scores, the one kept."""

    start: int
    factors: list[float]
    scores: list[float]
    chosen: float
    by: str  # "validation" or "training loss"
    spent: int = 0  # budget units of the branches not kept


@dataclass
class Probe:
    """The probe state machine of one run (see the module doc).

    :param config: when and how
    :param total: the run's budget (examples, or optimizer steps)
    """

    config: ProbeConfig
    total: int
    branch: int = -1  # -1: idle
    start: int = 0  # budget units seen when the current branch started
    _origin: Optional[dict] = None  # the state every branch starts from
    _best: Optional[tuple[float, int, dict]] = None  # (score, branch, end state)
    _scores: list = field(default_factory=list)
    _tail: list = field(default_factory=list)  # the current branch's tail losses
    _first: int = 0  # budget units seen when the probe began
    outcomes: list = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.branch >= 0

    @property
    def span(self) -> int:
        """A branch's length in budget units (at least one)."""
        return max(1, int(round(self.config.length * self.total)))

    def due(self, decision: int, seen: int) -> bool:
        """Whether a probe starts at ``decision`` (with room for every branch before the budget)."""
        room = len(self.config.factors) * self.span
        return not self.active and decision in self.config.at and seen + 2 * room <= self.total

    def begin(self, seen: int, target: Restorable) -> None:
        """Snapshot ``target`` and start the first branch."""
        self._origin = target.capture()
        self._best, self._scores, self._first = None, [], seen
        self._open(0, seen)

    def _open(self, branch: int, seen: int) -> None:
        self.branch, self.start, self._tail = branch, seen, []

    def multiplier(self, seen: int, n: int) -> float:
        """The lr multiplier of the step that trains units ``[seen, seen + n)``: the branch's factor
        times its cooldown (1 when idle)."""
        if self.branch < 0:
            return 1.0
        u = (seen + 0.5 * n - self.start) / self.span  # the step's midpoint, as a share of the branch
        c = self.config.cooldown
        return self.config.factors[self.branch] * min(1.0, max(0.0, (1.0 - u) / c))

    def after_step(self, seen: int, loss: Any, target: Restorable, validate: Optional[Callable[[], float]] = None,
                   agree: Optional[Callable[[float], float]] = None) -> Optional[Outcome]:
        """Record the step that brought the run to ``seen`` (its training ``loss`` before the
        step's update: a number or a scalar tensor, read only in the branch's tail); at a branch's
        end score it, keep its end state if it leads, and start the next branch from the snapshot;
        after the last, restore the winner's end state and return the :class:`Outcome` (None until
        then). ``agree`` maps a branch's score to the one every process uses (under
        ``torch.distributed``: the mean over ranks), so every rank keeps the same branch."""
        if self.branch < 0:
            return None
        if loss is not None and seen - self.start > (1.0 - self.config.cooldown / 2) * self.span:
            self._tail.append(float(loss.detach() if hasattr(loss, "detach") else loss))
        if seen - self.start < self.span:
            return None
        score = self._score(validate)
        if agree is not None:
            score = float(agree(score))
            score = score if math.isfinite(score) else math.inf
        self._scores.append(score)
        if self.branch == 0:  # the incumbent: a challenger must beat it by the margin
            self._best = (score, 0, target.capture())
        elif self._best is not None and score < self._best[0] * (1.0 - self.config.margin if self._best[1] == 0 else 1.0):
            self._best = (score, self.branch, target.capture())
        if self.branch + 1 < len(self.config.factors):
            assert self._origin is not None
            target.restore(self._origin)
            self._open(self.branch + 1, seen)
            return None
        assert self._best is not None
        best_score, best_branch, state = self._best
        factors = list(self.config.factors)
        if not math.isfinite(best_score):  # every branch failed: back to the start, the level halved
            target.restore(self._origin)  # type: ignore[arg-type]
            chosen = min(factors)
        else:
            if best_branch != self.branch:
                target.restore(state)
            chosen = factors[best_branch]
        outcome = Outcome(self._first, factors, list(self._scores), chosen,
                          "validation" if validate is not None else "training loss",
                          spent=(len(factors) - 1) * self.span)
        self.outcomes.append(outcome)
        self.branch, self._origin, self._best, self._tail = -1, None, None, []
        return outcome

    def abort(self, target: Restorable) -> None:
        """End a probe the run cannot finish (the loop stopped): the best branch so far comes back
        if it scored better than the one in progress would have to beat; its factor is not taken."""
        if self.branch >= 0 and self._best is not None and self._best[1] != self.branch and math.isfinite(self._best[0]):
            target.restore(self._best[2])
        self.branch, self._origin, self._best, self._tail = -1, None, None, []

    def _score(self, validate: Optional[Callable[[], float]]) -> float:
        if validate is not None:
            v = float(validate())
        elif self._tail:
            v = sum(self._tail) / len(self._tail)
        else:
            v = math.inf
        return v if math.isfinite(v) else math.inf

    def state_dict(self) -> dict:
        """The probe's clock and outcomes; a checkpoint taken mid-probe keeps its snapshots."""
        return {"branch": self.branch, "start": self.start, "first": self._first, "origin": self._origin,
                "best": None if self._best is None else list(self._best), "scores": list(self._scores),
                "tail": list(self._tail), "outcomes": [asdict(o) for o in self.outcomes]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.branch, self.start, self._first = int(state["branch"]), int(state["start"]), int(state["first"])
        self._origin = state["origin"]
        self._best = None if state["best"] is None else (float(state["best"][0]), int(state["best"][1]), state["best"][2])
        self._scores, self._tail = list(state["scores"]), list(state["tail"])
        self.outcomes = [Outcome(**o) for o in state["outcomes"]]
