"""The clock: a run cut into K intervals (Controller, ``rlhpo.apply n_intervals=K``, the
evaluation runner) ends its base schedule at the budget whatever K is; a K the policy cannot
honour is one clear error."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_task

from rlhpo import Controller
from rlhpo.control.decision import WARMUP_FRACTION, base_factor, interval_end, step_factor
from rlhpo.errors import ControllerError
from rlhpo.evaluation.runner import ControllerSchedule, run_task
from rlhpo.policy.artifact import load_artifact


def test_the_base_factor_is_a_function_of_the_fraction_of_the_budget():
    for total, n in ((1000, 1), (20_000, 32), (777, 3)):  # in steps, or in examples with batches of n
        seen = list(range(0, total - n + 1, n))
        f = [step_factor("cosine", s, n, total) for s in seen]
        assert f == [base_factor("cosine", (s + n / 2) / total, WARMUP_FRACTION) for s in seen]  # the step's midpoint
        peak = max(range(len(f)), key=f.__getitem__)
        assert all(a < b for a, b in zip(f[:peak], f[1 : peak + 1]))  # a linear warm-up ...
        assert all(a >= b for a, b in zip(f[peak:], f[peak + 1 :]))  # then a decay ...
        assert f[-1] < 0.01 and f[peak] > 0.99  # ... to near 0 at the budget
    assert base_factor("cosine", 1.0, 0.05) == pytest.approx(0.0) and base_factor("none", 0.7, 0.05) == 1.0


@pytest.mark.parametrize("k", [5, 20, 40])
def test_a_controller_run_of_k_intervals_ends_its_schedule_at_the_budget(k):
    """The evaluation runner (and rlhpo.apply) cut the run into K intervals: the Controller decides
    on that clock, and the last interval trains at the end of the warm-up + cosine schedule."""
    artifact = load_artifact("default")
    assert artifact.spec.base_schedule == "cosine" and artifact.spec.n_intervals == 20
    task = make_tiny_task(budget=1600, batch_size=8)
    schedule = ControllerSchedule(artifact)
    result = run_task(task, schedule, seed=0, n_intervals=k)
    c = schedule.controller
    decisions = [h for h in c.history if "action" in h]  # history[0] is the start; finish() may add an end record
    assert c.history[0]["start"] and "action" not in c.history[0]
    assert c.decision.n_intervals == k and len(decisions) == k - 1 and result.examples == task.budget_examples
    level = c.decision.level  # the lr level the base schedule multiplies
    last = decisions[-1]
    boundary = interval_end(task.budget_examples, k, k - 2)  # the decision path's clock for the last decision
    assert last["lr"] == pytest.approx(level * step_factor("cosine", boundary, 1, task.budget_examples), rel=1e-6)
    # the lr is set every step: the run's last step trains near the end of the cosine, whatever K is
    assert schedule.controller.optimizer.param_groups[0]["lr"] < 0.01 * level


def test_a_controller_in_a_users_loop_defaults_to_the_policys_intervals():
    artifact = load_artifact("default")
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    assert Controller(opt, total_examples=1000, policy=artifact).decision.n_intervals == artifact.spec.n_intervals
    assert Controller.in_intervals(opt, total_examples=1000, policy=artifact, n_intervals=7).decision.n_intervals == 7


@pytest.mark.parametrize("k", [0, -3, 2.5, "5"])
def test_a_k_the_policy_cannot_honour_is_one_clear_error(k):
    artifact = load_artifact("default")
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    with pytest.raises(ControllerError, match=rf"^n_intervals={k!r} cannot be honoured: .*allowed: an integer >= 1 "
                                              r"\(the policy was meta-trained with 20\)$"):
        Controller.in_intervals(opt, total_examples=1000, policy=artifact, n_intervals=k)


@pytest.mark.slow  # a subprocess
def test_apply_with_one_interval_runs_the_schedule_alone(tmp_path):
    """One interval: no decision falls inside the run, the base schedule is set every step (the
    environment's config allows it too; before the per-step schedule it was refused)."""
    import subprocess
    import sys

    # its Hydra run folder (apply.log, .hydra/) in tmp_path, not outputs/ in the directory pytest runs from
    r = subprocess.run([sys.executable, "-m", "rlhpo.apply", "n_intervals=1", "budget_scale=0.01", f"hydra.run.dir={tmp_path}"],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "controller decisions" in r.stdout
