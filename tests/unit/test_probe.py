"""The branching probe's state machine (rlhpo.control.probe) on a scripted loop: the branches run
in order from one snapshot, share the same cooldown, and the winner's end state is kept."""

from __future__ import annotations

import math

import pytest

from rlhpo.control.probe import Probe, ProbeConfig
from rlhpo.errors import ConfigError


class State:
    """A Restorable whose whole state is one number (the loop's 'weights')."""

    def __init__(self) -> None:
        self.w = 0.0
        self.restores = 0

    def capture(self) -> dict:
        return {"w": self.w}

    def restore(self, state: dict) -> None:
        self.w = state["w"]
        self.restores += 1


def _run(probe: Probe, target: State, losses: dict[float, float], seen: int, validate=None):
    """Drive one whole probe a step (one budget unit) at a time; each branch moves w by its factor
    and reports the loss ``losses[factor]``. Returns the outcome and the multipliers seen."""
    probe.begin(seen, target)
    multipliers = []
    while True:
        m = probe.multiplier(seen, 1)
        factor = probe.config.factors[probe.branch]
        multipliers.append((factor, m))
        target.w += factor
        seen += 1
        outcome = probe.after_step(seen, losses[factor], target, validate)
        if outcome is not None:
            return outcome, multipliers, seen


def test_the_best_branch_wins_and_its_end_state_is_kept():
    cfg = ProbeConfig(at=(1,), factors=(1.0, 0.5, 2.0), length=0.1, cooldown=0.5, margin=0.0)
    probe, target = Probe(cfg, total=100), State()
    target.w = 7.0
    outcome, multipliers, seen = _run(probe, target, {1.0: 0.3, 0.5: 0.2, 2.0: 0.4}, seen=10)
    assert outcome.chosen == 0.5 and outcome.scores == pytest.approx([0.3, 0.2, 0.4]) and outcome.by == "training loss"
    assert target.w == pytest.approx(7.0 + 10 * 0.5)  # the x0.5 branch's end state, from the snapshot
    assert seen == 10 + 3 * probe.span and not probe.active
    assert outcome.spent == 2 * probe.span  # the branches not kept
    # every branch: its factor, flat then a linear cooldown to 0 over its last half, the same for each
    shapes = {}
    for factor, m in multipliers:
        shapes.setdefault(factor, []).append(m / factor)
    assert shapes[1.0] == shapes[0.5] == shapes[2.0]
    ramp = shapes[1.0]
    assert ramp[:5] == [1.0] * 5 and ramp[-1] == pytest.approx(0.1) and all(a > b for a, b in zip(ramp[5:], ramp[6:]))
    assert probe.multiplier(seen, 1) == 1.0  # idle


def test_a_tie_keeps_the_level_and_validation_scores_when_given():
    probe, target = Probe(ProbeConfig(at=(1,), length=0.05, margin=0.0), total=200), State()
    vals = iter([0.5, 0.5, 0.5])
    outcome, _, _ = _run(probe, target, {1.0: 9.0, 0.5: 1.0, 2.0: 1.0}, seen=0, validate=lambda: next(vals))
    assert outcome.chosen == 1.0 and outcome.by == "validation"  # validation, not the training losses


def test_a_challenger_must_beat_the_level_as_it_is_by_the_margin():
    cfg = ProbeConfig(at=(1,), length=0.05, margin=0.1)
    outcome, _, _ = _run(Probe(cfg, total=200), State(), {1.0: 1.0, 0.5: 0.95, 2.0: 0.92}, seen=0)
    assert outcome.chosen == 1.0  # 5% and 8% better: not enough
    outcome, _, _ = _run(Probe(cfg, total=200), State(), {1.0: 1.0, 0.5: 0.85, 2.0: 0.8}, seen=0)
    assert outcome.chosen == 2.0  # both beat it; the better one wins


def test_branches_that_all_fail_go_back_to_the_start_at_the_smallest_factor():
    probe, target = Probe(ProbeConfig(at=(1,), length=0.05), total=200), State()
    target.w = 3.0
    outcome, _, _ = _run(probe, target, {1.0: math.nan, 0.5: math.inf, 2.0: math.nan}, seen=0)
    assert outcome.chosen == 0.5 and target.w == 3.0 and outcome.scores == [math.inf] * 3


def test_a_probe_is_due_only_at_its_decisions_with_room_before_the_budget():
    probe = Probe(ProbeConfig(at=(2, 5), length=0.05), total=100)
    assert probe.due(2, 10) and probe.due(5, 25) and not probe.due(3, 15)
    assert not probe.due(5, 80)  # three branches of 5 would end too close to the budget
    assert ProbeConfig().share == pytest.approx(2 * 2 * 0.01)  # the default spends 4% of the budget


def test_state_round_trips_mid_probe():
    cfg = ProbeConfig(at=(1,), length=0.1)
    a, target = Probe(cfg, total=100), State()
    a.begin(0, target)
    for s in range(1, 14):  # into the second branch
        target.w += 1
        a.after_step(s, 0.1, target)
    b = Probe(cfg, total=100)
    b.load_state_dict(a.state_dict())
    assert (b.branch, b.start, b.multiplier(14, 1)) == (a.branch, a.start, a.multiplier(14, 1))


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"at": ()}, "probe.at"),
        ({"factors": (1.0,)}, "probe.factors"),
        ({"factors": (1.0, -2.0)}, "probe.factors"),
        ({"length": 0.5}, "probe.length"),
        ({"cooldown": 0.0}, "probe.cooldown"),
    ],
)
def test_bad_settings_are_one_clear_error(kwargs, pattern):
    with pytest.raises(ConfigError, match=pattern):
        ProbeConfig(**kwargs)
