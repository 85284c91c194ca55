"""The lr level from Prodigy's estimate in a user's own loop (``policy="estimate"``): on a run long
enough for it to settle the level follows it (within the trust region) after the first fifth; on a
short run, with SGD, or where it is still growing, the prior's level stays; a checkpoint taken in
the stretch resumes to the same run; the evaluation runner goes through the same controller."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import make_tiny_task

from rlhpo.control.lr_estimate import EstimateConfig
from rlhpo.controller import Controller
from rlhpo.evaluation.runner import ControllerSchedule, run_task
from rlhpo.policy.artifact import load_artifact

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _data(n: int = 2048):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    return x, x @ torch.linspace(-1, 1, 8)[:, None] + 0.1 * torch.randn(n, 1, generator=g)


def _run(steps: int, opt_cls=torch.optim.Adam, policy="estimate", stop_at=None, state=None):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    opt = opt_cls(model.parameters(), lr=1e-3)
    c = Controller(opt, total_steps=steps, policy=policy, model=model)
    x, y = _data()
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        c.load_state_dict(state["controller"])
        start = state["i"]
    for i in range(start, steps):
        idx = torch.arange(i * 16, i * 16 + 16) % len(x)
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        c.step(loss)
        if stop_at is not None and i + 1 == stop_at:
            return c, {"model": model.state_dict(), "opt": opt.state_dict(), "controller": c.state_dict(), "i": i + 1}
    return c, model


def test_on_a_long_run_the_level_follows_the_settled_estimate():
    c, _ = _run(1500)
    est = [h for h in c.history if h.get("estimate")]
    assert len(est) == 1 and est[0]["settled"] and est[0]["examples"] == 300  # the first decision after a fifth
    prior = c.history[0]["level"]
    assert est[0]["level"] == pytest.approx(min(max(est[0]["d"], prior / 4), prior * 4))
    assert est[0]["level"] != prior and c.decision.level == est[0]["level"]
    assert c.lr_at(1499, 1) == pytest.approx(c.decision.lr_at(1499, 1))  # after the stretch: the base schedule at the level
    decision = next(h for h in c.decisions if h["examples"] == 300)
    assert decision["level"] == est[0]["level"] == est[0]["before"] * (est[0]["level"] / prior)  # the decision there is at it
    assert c.estimate is None and not c.optimizer._optimizer_step_pre_hooks.keys() - {c._hook.id}  # unhooked


def test_short_runs_and_sgd_keep_the_prior():
    for steps, opt in ((600, torch.optim.Adam), (1200, torch.optim.SGD)):
        c, _ = _run(steps, opt)
        assert not [h for h in c.history if h.get("estimate")] and c.decision.level == c.history[0]["level"]


def test_an_estimate_still_growing_keeps_the_prior(caplog):
    strict = replace(load_artifact("estimate"), lr_estimate=EstimateConfig(settle=1.0, fraction=0.05))
    c, _ = _run(1200, policy=strict)
    est = [h for h in c.history if h.get("estimate")]
    assert len(est) == 1 and not est[0]["settled"] and est[0]["level"] == c.history[0]["level"]


def test_a_checkpoint_in_the_stretch_resumes_to_the_same_run():
    whole, model = _run(1200)
    _, state = _run(1200, stop_at=70)  # inside the first fifth
    resumed, model2 = _run(1200, state=state)
    assert [h.get("d") for h in resumed.history if h.get("estimate")] == [h.get("d") for h in whole.history if h.get("estimate")]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))


def test_the_runner_takes_the_estimate_through_the_same_controller():
    task = make_tiny_task(budget=20_000)  # 20,000 examples at batch 16: 1,250 steps
    schedule = ControllerSchedule(load_artifact("estimate"))
    run_task(task, schedule, seed=0)
    est = [h for h in schedule.controller.history if h.get("estimate")]
    assert len(est) == 1 and est[0]["d"] > 1e-6


def test_probes_and_the_estimate_together_are_refused():
    from rlhpo.control.probe import ProbeConfig
    from rlhpo.errors import ControllerError

    both = replace(load_artifact("estimate"), probe=ProbeConfig())
    opt = torch.optim.Adam(torch.nn.Linear(2, 1).parameters(), lr=1e-3)
    with pytest.raises(ControllerError, match="both branching probes and the lr estimate"):
        Controller(opt, total_steps=2000, policy=both)


def test_a_run_that_ends_inside_the_stretch_unhooks():
    c, _ = _run(1200, stop_at=50)
    c.finish()
    assert c.estimate is None and not c.optimizer._optimizer_step_post_hooks
