"""The controller in a user's loop, through run_task, and against the environment."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import make_tiny_task
from torch.utils.data import TensorDataset

import rlhpo
from rlhpo.controller import Controller
from rlhpo.errors import ControllerError
from rlhpo.evaluation.runner import ControllerSchedule, run_task
from rlhpo.policy.artifact import load_artifact
from rlhpo.policy.driver import PolicyDriver
from rlhpo.tasks import make_family


def _user_loop(artifact, total=600, steps_before_checkpoint=None):
    """The README's plain PyTorch loop."""
    task = make_tiny_task()
    torch.manual_seed(0)
    model = task.model_fn()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    controller = Controller(opt, policy=artifact, total_examples=total)
    loader = controller.make_loader(TensorDataset(task.train.x, task.train.y), batch_size=16)
    steps = 0
    for x, y in controller.batches(loader):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        controller.step(loss)
        steps += 1
        if steps_before_checkpoint is not None and steps == steps_before_checkpoint:
            return controller, model, opt, loader
    return controller, model, opt, loader


def test_controller_drives_a_plain_pytorch_loop(smoke_policy):
    controller, _, opt, loader = _user_loop(load_artifact(smoke_policy))
    assert controller.done and 600 <= controller.examples_seen < 600 + 64
    n = controller.spec.n_intervals
    assert len(controller.history) == n and controller.history[0]["start"]  # the start, then one decision per boundary but the last
    last = controller.history[-1]
    # the base schedule set the lr every step from the last level: the run's last step near the end of the cosine
    assert opt.param_groups[0]["lr"] == pytest.approx(controller.lr_at(controller.examples_seen - 16, 16))
    assert opt.param_groups[0]["lr"] < 0.01 * last["level"]
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(last["weight_decay"])
    assert loader.batch_sampler.batch_size == last["batch_size"]


def test_controller_state_dict_resumes_identically(smoke_policy):
    """A run checkpointed mid-way (controller, model, optimizer) and resumed in fresh objects makes
    the same decisions, counts the same examples and ends at the same weights as the unbroken run."""
    art = load_artifact(smoke_policy)
    full, full_model, *_ = _user_loop(art)
    part, model, opt, _ = _user_loop(art, steps_before_checkpoint=12)
    assert 0 < len(part.history) < len(full.history)  # the checkpoint falls between two decisions of the run
    state = copy.deepcopy(part.state_dict())
    task = make_tiny_task()
    model2 = task.model_fn()
    model2.load_state_dict(copy.deepcopy(model.state_dict()))
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2, weight_decay=1e-4)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    fresh = Controller(opt2, total_examples=600, policy=art)
    loader = fresh.make_loader(TensorDataset(task.train.x, task.train.y), batch_size=16)
    fresh.load_state_dict(state)
    for x, y in fresh.batches(loader):
        loss = torch.nn.functional.cross_entropy(model2(x), y)
        opt2.zero_grad()
        loss.backward()
        opt2.step()
        fresh.step(loss)
    assert fresh.done and fresh.examples_seen == full.examples_seen
    assert [h["lr"] for h in fresh.history] == pytest.approx([h["lr"] for h in full.history])
    assert [h["batch_size"] for h in fresh.history] == [h["batch_size"] for h in full.history]
    for a, b in zip(model2.parameters(), full_model.parameters()):
        torch.testing.assert_close(a, b)


def test_weight_decay_control_turns_off_with_a_warning(smoke_policy):
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.Rprop(model.parameters(), lr=1e-2)
    with pytest.warns(UserWarning, match="Rprop has no weight_decay: weight-decay control is off"):
        controller = Controller(opt, policy=load_artifact(smoke_policy), total_examples=100, batch_size=10)
    x, y = torch.randn(10, 4), torch.randint(0, 2, (10,))
    for _ in range(10):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        controller.step(loss)
    assert "weight_decay" not in opt.param_groups[0]


def test_bad_inputs_are_named(smoke_policy):
    art = load_artifact(smoke_policy)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ControllerError, match="optimizer must be a torch.optim.Optimizer, got Linear"):
        Controller(model, policy=art, total_examples=10)  # type: ignore[arg-type]
    with pytest.raises(ControllerError, match="total_examples must be an integer > 0"):
        Controller(opt, policy=art, total_examples=0)
    c = Controller(opt, policy=art, total_examples=100, batch_size=10)
    with pytest.raises(ControllerError, match=r"loss must be a scalar tensor, got Tensor of shape \(3,\)"):
        c.step(torch.ones(3))
    with pytest.raises(ControllerError, match="loss must be a scalar tensor, got float"):
        c.step(1.0)  # type: ignore[arg-type]


def test_diverging_user_run_backs_off_without_raising(smoke_policy):
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    c = Controller(opt, policy=load_artifact(smoke_policy), total_examples=200, batch_size=10)
    for i in range(20):
        loss = torch.tensor(float("nan"), requires_grad=True) if i < 12 else model(torch.ones(1, 4)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        c.step(loss.detach())
    assert any(h.get("diverged") for h in c.history)
    assert opt.param_groups[0]["lr"] < 0.5


def test_controller_makes_the_same_decisions_as_the_env(smoke_policy):
    """One feature extractor, one action mapping: run_task + Controller == env + policy."""
    art = load_artifact(smoke_policy)
    task = make_family("tabular", budget_scale=0.05).sample(3)
    n = art.spec.n_intervals
    schedule = ControllerSchedule(art)
    via_controller = run_task(task, schedule, seed=11, n_intervals=n)
    env = rlhpo.make_env(n_intervals=n, actions=art.spec.action_config())
    driver = PolicyDriver.from_artifact(art)
    obs, info = env.reset(seed=0, options={"task": task, "session_seed": 11})
    infos = [info]
    while True:
        obs, _, term, trunc, info = env.step(driver.act(obs))
        infos.append(info)
        if term or trunc:
            break
    levels = [h["level"] for h in schedule.controller.history if not h.get("end")]  # the start, then each decision's
    np.testing.assert_allclose(levels, [i["level"] for i in infos], rtol=1e-6)
    np.testing.assert_allclose([h["val_loss"] for h in via_controller.history], [i["val_loss"] for i in infos], rtol=1e-5)
