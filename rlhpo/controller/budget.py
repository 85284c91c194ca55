"""The run's budget as :class:`rlhpo.Controller` counts it (the one count of what was trained),
and the misuses it reports.

A budget is given once, the way a scheduler's is: ``total_steps`` (optimizer steps, like
``OneCycleLR``; nothing to count) or ``total_examples`` (training examples; each step's examples
are counted from the batches the controller sees, or the model's inputs). Whatever the unit, the
decision path runs on one clock, ``progress`` of ``total``.

What a loop can get wrong, and what is said, at the moment it becomes clear:

* a budget of fewer steps than the policy's decisions (``total_examples`` given a step count is
  the usual way there): refused at the first step, naming ``total_steps``;
* a loop that trains past its budget: one warning when it is a whole interval past, and the
  total at the end; the schedule's last values hold meanwhile;
* a loop that ends before its budget (the budget was too large): one warning at the end
  (``finish()``, or when the controller is collected or the interpreter exits), naming where
  the schedule stopped;
* batches drawn through ``controller.batches()`` with no ``controller.step()``: refused once the
  loader has handed out more than the remaining budget and an interval.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Optional

from rlhpo.errors import ControllerError, is_int, warn_user


@dataclass
class _Progress:
    """What the end-of-run report needs (no reference to the controller, so it can be collected)."""

    total: int
    unit: str
    n_intervals: int
    seen: int = 0
    decisions: int = 0
    started: bool = False
    finished: bool = False
    reported_end: bool = False
    lr_start: float = float("nan")
    group: Optional[dict] = None  # the optimizer's first param group: the lr in effect, read when reported


def _report_end(p: _Progress) -> None:
    """Say once that the run ended short of its budget (the schedule was cut mid-way)."""
    if p.reported_end or not p.started or p.seen >= p.total:
        return
    p.reported_end = True
    interval = max(p.total // p.n_intervals, 1)
    lr_now = float(p.group["lr"]) if p.group is not None else float("nan")
    if p.total - p.seen < interval:  # the last partial interval: an epoch's rounding, not a mistake
        return
    message = (
        f"rlhpo Controller: the run ended after {p.seen:,} of its total_{p.unit}={p.total:,} "
        f"({p.seen / p.total:.0%}; {p.decisions} of its {p.n_intervals - 1} decisions), so its schedule stopped mid-way "
        f"(at lr {lr_now:.3g}, before the cosine's decay). Give total_{p.unit} = what the loop trains."
    )
    warn_user(message)


def parse_budget(total_examples: Optional[int], total_steps: Optional[int]) -> tuple[int, str]:
    """``(total, unit)`` from the two ways of giving a budget; one clear error for anything else."""
    if (total_examples is None) == (total_steps is None):
        raise ControllerError(
            "Controller: give the run's budget as total_steps= (optimizer steps, like OneCycleLR) or "
            f"total_examples= (training examples), exactly one; got total_examples={total_examples!r}, total_steps={total_steps!r}"
        )
    value, unit = (total_steps, "steps") if total_steps is not None else (total_examples, "examples")
    if not (is_int(value) and value > 0):
        raise ControllerError(f"Controller: total_{unit} must be an integer > 0, got {value!r}")
    return int(value), unit


class Budget:
    """The run's budget, its progress, and the misuse reports (see the module docstring).

    :param total: the budget in ``unit``
    :param unit: ``"steps"`` or ``"examples"``
    :param n_intervals: the run's intervals (its decisions + 1)
    :param group: the optimizer's first param group, whose lr the end-of-run report names

    :attr:`seen` is the run's one count of what was trained (``Controller.examples_seen``).
    """

    def __init__(self, total: int, unit: str, n_intervals: int, group: Optional[dict] = None) -> None:
        self.p = _Progress(total, unit, n_intervals, group=group)
        self._past_warned = False
        self._finalizer = weakref.finalize(self, _report_end, self.p)

    @property
    def total(self) -> int:
        return self.p.total

    @property
    def unit(self) -> str:
        return self.p.unit

    @property
    def seen(self) -> int:
        return self.p.seen

    @seen.setter
    def seen(self, value: int) -> None:  # a loop that trains in whole intervals says what it trained
        self.p.seen = int(value)

    @property
    def done(self) -> bool:
        return self.p.seen >= self.p.total

    @property
    def n_intervals(self) -> int:
        return self.p.n_intervals

    @n_intervals.setter
    def n_intervals(self, value: int) -> None:
        self.p.n_intervals = int(value)

    @property
    def interval(self) -> int:
        return max(self.p.total // self.p.n_intervals, 1)

    def in_examples(self, batch_size: int) -> None:
        """A budget of steps becomes one of examples at the starting batch size (the controller
        sets the batch size through its loader: a larger batch must not buy more examples)."""
        if self.p.unit == "steps":
            self.p.total, self.p.unit = self.p.total * int(batch_size), "examples"

    def check_first_step(self, per_step: int) -> None:
        """Refuse a budget of fewer steps than the policy's decisions."""
        steps = self.p.total // max(per_step, 1)
        if steps >= self.p.n_intervals:
            return
        hint = (
            f"; if {self.p.total:,} is a number of optimizer steps, pass total_steps={self.p.total:,}"
            if self.p.unit == "examples" else ""
        )
        raise ControllerError(
            f"Controller: total_{self.p.unit}={self.p.total:,} is {steps} step(s) of {per_step} example(s), fewer than the "
            f"policy's {self.p.n_intervals} decisions; give a budget of at least {self.p.n_intervals * per_step:,} {self.p.unit}"
            + hint
        )

    def advance(self, n: int, decisions: int) -> None:
        """Count ``n`` more; warn once when the loop is a whole interval past its budget."""
        p = self.p
        if not p.started:
            p.started = True
            p.lr_start = float(p.group["lr"]) if p.group is not None else float("nan")
        p.seen += n
        p.decisions = decisions
        if not self._past_warned and p.seen >= p.total + self.interval:
            self._past_warned = True
            warn_user(
                f"rlhpo Controller: the loop has trained {p.seen:,} {p.unit}, past its total_{p.unit}={p.total:,}: "
                "the controller's schedule ended there and its last values hold. Stop the loop at the budget "
                "(controller.done, or controller.batches(loader)) or give the budget the loop really trains"
                + (" (a budget in optimizer steps is total_steps=)" if p.unit == "examples" else "")
            )

    def decided(self, decisions: int) -> None:
        """The decisions taken so far (for the end-of-run report)."""
        self.p.decisions = decisions

    def check_drawn(self, drawn: int) -> None:
        """``drawn``: examples handed out by ``batches()`` since the last ``step()``."""
        if drawn > self.p.total - self.p.seen + self.interval:
            raise ControllerError(
                f"controller.batches(): {drawn:,} examples handed out since the last controller.step(loss) "
                f"(the budget is {self.p.total:,}); call controller.step(loss) after each optimizer.step()"
            )

    def end(self) -> None:
        """The run is over (``finish()``): report a budget the loop did not reach."""
        self.p.finished = True
        _report_end(self.p)

    def state_dict(self) -> dict:
        return {"total": self.p.total, "unit": self.p.unit, "seen": self.p.seen}

    def load_state_dict(self, state: dict) -> None:
        self.p.total, self.p.unit, self.p.seen = int(state["total"]), str(state["unit"]), int(state["seen"])
