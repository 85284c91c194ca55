"""The base schedule is set every optimizer step, as every scheduler does (issue 30): with every
action zero the controller's run *is* the calibrated baseline, step for step, in the evaluation
runner, in the environment and in a user's own loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_tiny_task
from torch.utils.data import TensorDataset

import rlhpo
from rlhpo.control.decision import step_factor
from rlhpo.control.prior import CALIBRATED
from rlhpo.controller import Controller
from rlhpo.evaluation.baselines import Calibrated
from rlhpo.evaluation.runner import ControllerSchedule, run_task
from rlhpo.policy.artifact import load_artifact
from rlhpo.policy.driver import PolicyDriver
from rlhpo.tasks import make_family
from rlhpo.training.session import make_optimizer


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_prior_only_equals_the_calibrated_baseline_run_for_run(optimizer):
    """The parity test: the shipped policy's decision path with every action zero (``prior_only``)
    and the ``calibrated`` baseline give the same validation loss at every interval and the same
    test loss, to 1e-6, on the same seed."""
    task = make_tiny_task(optimizer=optimizer, budget=960, weight_decay=1e-3)
    calibrated = run_task(task, Calibrated(CALIBRATED), seed=3)
    prior = run_task(task, ControllerSchedule(load_artifact("default"), null_action=True), seed=3, method="prior_only")
    assert calibrated.steps == prior.steps and len(calibrated.history) == len(prior.history) == 20
    np.testing.assert_allclose([h["val_loss"] for h in prior.history], [h["val_loss"] for h in calibrated.history], rtol=1e-6)
    assert prior.test_loss == pytest.approx(calibrated.test_loss, rel=1e-6)


def test_prior_only_equals_calibrated_on_a_real_family():
    task = make_family("code_bow", budget_scale=0.3).sample(2001)  # a `final` family, a run of ~40 steps
    a = run_task(task, Calibrated(CALIBRATED), seed=1)
    b = run_task(task, ControllerSchedule(load_artifact("default"), null_action=True), seed=1)
    assert a.test_loss == pytest.approx(b.test_loss, rel=1e-6) and a.final_val_loss == pytest.approx(b.final_val_loss, rel=1e-6)


def test_a_users_loop_gets_the_calibrated_lr_at_every_step(monkeypatch):
    """A user's loop (their optimizer, their DataLoader) under the Controller with every action
    zero: the lr of every optimizer step is the calibrated warm-up + cosine's, no staircase."""
    monkeypatch.setattr(PolicyDriver, "act", lambda self, obs, deterministic=True: np.zeros(3, np.float32))
    task = make_tiny_task(optimizer="adamw", budget=1600, batch_size=16, weight_decay=1e-2)
    torch.manual_seed(0)
    model = task.model_fn()
    opt = make_optimizer("adamw", model.parameters(), task.default_hparams)
    total = 100  # optimizer steps
    c = Controller(opt, total_steps=total, control_batch_size=False)
    seen = []
    opt.register_step_pre_hook(lambda o, a, k: seen.append(o.param_groups[0]["lr"]))  # after the controller's own hook
    loader = torch.utils.data.DataLoader(TensorDataset(task.train.x, task.train.y), batch_size=16, shuffle=True)
    steps = 0
    while steps < total:
        for x, y in loader:
            loss = task.loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            c.step(loss)
            steps += 1
            if steps == total:
                break
    peak = CALIBRATED["adamw"]["lr"]
    expected = [peak * step_factor("cosine", t, 1, total) for t in range(total)]
    np.testing.assert_allclose(seen, expected, rtol=1e-12)
    assert all(a != b for a, b in zip(seen, seen[1:]))  # a new lr every step
    assert seen[0] < 0.2 * peak and max(seen) > 0.95 * peak and seen[-1] < 1e-3 * peak


def test_the_env_trains_the_base_schedule_every_step():
    """The environment's null action trains the same per-step schedule: its reference runs (the
    reward's baseline) are the calibrated default's."""
    art = load_artifact("default")
    task = make_tiny_task(optimizer="adam", budget=960)
    env = rlhpo.make_env(**vars(art.spec.decision_spec()))
    _, info = env.reset(seed=0, options={"task": task, "session_seed": 3})
    infos = [info]
    done = False
    while not done:
        _, _, term, trunc, info = env.step(np.zeros(env.action_space.shape, np.float32))
        infos.append(info)
        done = term or trunc
    calibrated = run_task(task, Calibrated(CALIBRATED), seed=3)
    np.testing.assert_allclose([i["val_loss"] for i in infos], [h["val_loss"] for h in calibrated.history], rtol=1e-6)
    assert all(math.isclose(i["level"], CALIBRATED["adam"]["lr"]) for i in infos)
