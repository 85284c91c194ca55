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
  (``finish()``, or, through :meth:`Budget.report_end`, when the controller is collected or the
  interpreter exits), naming where the schedule stopped;
* batches drawn through ``controller.batches()`` with no ``controller.step()``: refused once the
  loader has handed out more than the remaining budget and an interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rlhpo.errors import ControllerError, is_int, warn_user


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


@dataclass
class Budget:
    """The run's budget, its progress, and the misuse reports (see the module docstring).

    :param total: the budget in ``unit``
    :param unit: ``"steps"`` or ``"examples"``
    :param n_intervals: the run's intervals (its decisions + 1)
    :param group: the optimizer's first param group, whose lr the end-of-run report names

    :attr:`seen` is the run's one count of what was trained (``Controller.examples_seen``). It
    holds no reference to the controller: the controller has :meth:`report_end` called when it
    is collected (``weakref.finalize``).
    """

    total: int
    unit: str
    n_intervals: int
    group: Optional[dict] = None
    seen: int = 0
    decisions: int = 0  # taken so far (for the end-of-run report)
    started: bool = False  # counted by advance(): a loop that calls step()
    reported_end: bool = False
    past_warned: bool = False

    @property
    def done(self) -> bool:
        return self.seen >= self.total

    @property
    def interval(self) -> int:
        return max(self.total // self.n_intervals, 1)

    def in_examples(self, batch_size: int) -> None:
        """A budget of steps becomes one of examples at the starting batch size (the controller
        sets the batch size through its loader: a larger batch must not buy more examples)."""
        if self.unit == "steps":
            self.total, self.unit = self.total * int(batch_size), "examples"

    def check_first_step(self, per_step: int) -> None:
        """Refuse a budget of fewer steps than the policy's decisions."""
        steps = self.total // max(per_step, 1)
        if steps >= self.n_intervals:
            return
        hint = (
            f"; if {self.total:,} is a number of optimizer steps, pass total_steps={self.total:,}"
            if self.unit == "examples" else ""
        )
        raise ControllerError(
            f"Controller: total_{self.unit}={self.total:,} is {steps} step(s) of {per_step} example(s), fewer than the "
            f"policy's {self.n_intervals} decisions; give a budget of at least {self.n_intervals * per_step:,} {self.unit}"
            + hint
        )

    def advance(self, n: int, decisions: int) -> None:
        """Count ``n`` more; warn once when the loop is a whole interval past its budget."""
        self.started = True
        self.seen += n
        self.decisions = decisions
        if not self.past_warned and self.seen >= self.total + self.interval:
            self.past_warned = True
            warn_user(
                f"rlhpo Controller: the loop has trained {self.seen:,} {self.unit}, past its total_{self.unit}={self.total:,}: "
                "the controller's schedule ended there and its last values hold. Stop the loop at the budget "
                "(controller.done, or controller.batches(loader)) or give the budget the loop really trains"
                + (" (a budget in optimizer steps is total_steps=)" if self.unit == "examples" else "")
            )

    def check_drawn(self, drawn: int) -> None:
        """``drawn``: examples handed out by ``batches()`` since the last ``step()``."""
        if drawn > self.total - self.seen + self.interval:
            raise ControllerError(
                f"controller.batches(): {drawn:,} examples handed out since the last controller.step(loss) "
                f"(the budget is {self.total:,}); call controller.step(loss) after each optimizer.step()"
            )

    def report_end(self) -> None:
        """The run is over (``finish()``, or the controller collected): say once that it ended
        short of its budget (the schedule was cut mid-way)."""
        if self.reported_end or not self.started or self.seen >= self.total:
            return
        self.reported_end = True
        lr_now = float(self.group["lr"]) if self.group is not None else float("nan")
        if self.total - self.seen < self.interval:  # the last partial interval: an epoch's rounding, not a mistake
            return
        warn_user(
            f"rlhpo Controller: the run ended after {self.seen:,} of its total_{self.unit}={self.total:,} "
            f"({self.seen / self.total:.0%}; {self.decisions} of its {self.n_intervals - 1} decisions), so its schedule stopped "
            f"mid-way (at lr {lr_now:.3g}, before the cosine's decay). Give total_{self.unit} = what the loop trains."
        )

    def state_dict(self) -> dict:
        return {"total": self.total, "unit": self.unit, "seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.total, self.unit, self.seen = int(state["total"]), str(state["unit"]), int(state["seen"])
