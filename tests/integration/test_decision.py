"""The one decision path: the env, the Controller in a plain loop and the runner decide alike."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import make_tiny_task
from torch.utils.data import TensorDataset

import rlhpo
from rlhpo.control.decision import (
    DIVERGENCE_FACTOR,
    DecisionPath,
    interval_end,
    is_diverged,
    step_factor,
    write_hparams,
)
from rlhpo.control.spec import DecisionSpec
from rlhpo.controller import Controller
from rlhpo.policy.artifact import load_artifact
from rlhpo.policy.driver import PolicyDriver
from rlhpo.tasks import Hyperparams, make_family
from rlhpo.training.monitor import IntervalStats
from rlhpo.training.sampler import MutableBatchSampler
from rlhpo.training.session import make_optimizer


def _env_trajectory(art, task, session_seed):
    env = rlhpo.make_env(**vars(art.spec.decision_spec()))
    driver = PolicyDriver.from_artifact(art)
    obs, info = env.reset(seed=0, options={"task": task, "session_seed": session_seed})
    infos = [info]
    while True:
        obs, _, term, trunc, info = env.step(driver.act(obs))
        infos.append(info)
        if term or trunc:
            return infos


def _plain_loop_trajectory(art, task, seed):
    """A user's loop: their model, their optimizer, the Controller told of every step."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = task.model_fn()
    opt = make_optimizer(task.optimizer, model.parameters(), task.default_hparams)
    xv, yv = task.val.x[: task.eval_max_examples], task.val.y[: task.eval_max_examples]

    @torch.no_grad()
    def val_loss() -> float:
        model.eval()
        try:
            return float(task.loss_fn(model(xv), yv))
        finally:
            model.train()

    c = Controller(opt, task.budget_examples, policy=art, val_loss_fn=val_loss)  # adaptive: not SGD, as the task says
    loader = c.make_loader(TensorDataset(task.train.x, task.train.y), batch_size=task.default_hparams.batch_size, seed=seed)
    c.begin()
    for x, y in c.batches(loader):
        loss = task.loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        c.step(loss, batch_size=len(x))  # the real batch: an epoch's last one is smaller
    trajectory = [h for h in c.history if not h.get("end")]  # the start, then one entry per decision
    return trajectory, c


@pytest.mark.parametrize("family,task_seed", [("tabular", 3), ("digits_mlp", 1)])
def test_env_episode_and_controller_plain_loop_give_the_same_trajectory(family, task_seed):
    """The parity test: same task, policy and seed -> the same hyperparameters at every interval."""
    art = load_artifact("default")
    task = make_family(family, budget_scale=0.05).sample(task_seed)
    infos = _env_trajectory(art, task, session_seed=5)
    trajectory, controller = _plain_loop_trajectory(art, task, seed=5)
    assert len(trajectory) == len(infos) <= art.spec.n_intervals  # a large last batch can spend the budget early
    # each interval's lr level (the base schedule multiplies it every step), weight decay and batch size
    np.testing.assert_allclose([h["level"] for h in trajectory], [i["level"] for i in infos], rtol=1e-6)
    np.testing.assert_allclose([h["weight_decay"] for h in trajectory], [i["weight_decay"] for i in infos], rtol=1e-6)
    assert [h["batch_size"] for h in trajectory] == [i["batch_size"] for i in infos]
    # the decisions saw the same validation losses (as measured: after a rollback the env's
    # "val_loss" is the restored state's, the Controller's history keeps the measured one)
    decisions = trajectory[1:]
    np.testing.assert_allclose([h["val_loss"] for h in decisions], [i["measured_val_loss"] for i in infos[:-1]], rtol=1e-5)
    assert [h["rolled_back"] for h in decisions] == [i["rolled_back"] for i in infos[:-1]]


def test_the_divergence_rule_is_the_same_in_the_env_and_the_controller():
    """A loss that blows up but stays finite is divergence in both, by the guard's rule; the env
    and the Controller both roll back and cut the lr."""
    stats = IntervalStats(steps=3, loss_mean=1.0)
    assert not is_diverged(stats, 5.0, reference=None)
    assert not is_diverged(stats, 99.0, reference=1.0)
    assert is_diverged(stats, 101.0, reference=1.0)
    assert is_diverged(stats, 2.5, reference=1.0, factor=art_factor()) and not is_diverged(stats, 1.9, 1.0, art_factor())
    assert is_diverged(stats, float("nan"), reference=None)
    assert is_diverged(IntervalStats(steps=3, loss_mean=float("nan"), nonfinite=True), 1.0, reference=1.0)

    art = load_artifact("default")
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    c = Controller(opt, policy=art, total_examples=2000, batch_size=10)
    before = c.hparams
    c.decide(IntervalStats(steps=5, loss_mean=1.0, loss_first_half=1.0, loss_second_half=1.0), 1.0, examples_seen=100)
    assert not c.history[-1]["diverged"]
    level = lambda: math.exp(c.decision.actions.z[0])  # noqa: E731  (the lr the base schedule multiplies)
    lr = level()
    c.decide(IntervalStats(steps=5, loss_mean=1.0), DIVERGENCE_FACTOR * 2.0, examples_seen=200)
    assert c.history[-1]["diverged"]
    # the guard's response, as in the env: the last good state back and the lr cut, the policy's action set aside
    assert level() == pytest.approx(lr * art.spec.guard.lr_cut) and c.history[-1]["action"] == [0.0, 0.0, 0.0]
    n = art.spec.n_intervals
    seen = interval_end(2000, n, c.decision.interval - 1)
    assert c.hparams.lr == pytest.approx(level() * step_factor(art.spec.base_schedule, seen, 1, 2000))
    assert before.lr == pytest.approx(1e-3)


def art_factor() -> float:
    return load_artifact("default").spec.guard.factor


def test_interval_clock_lands_every_caller_on_the_same_example():
    assert [interval_end(1000, 3, k) for k in range(4)] == [333, 666, 1000, 1000]
    path = DecisionPath(DecisionSpec(n_intervals=3), total_examples=1000)
    path.start(Hyperparams(1e-3, 32, 1e-4), True, lambda hp: hp)
    ends = []
    for _ in range(3):
        ends.append(path.boundary)
        path.observe(IntervalStats(steps=1, loss_mean=1.0), 1.0, Hyperparams(1e-3, 32, 1e-4), path.boundary)
    assert ends == [333, 666, 1000]


def test_write_hparams_is_the_one_writer():
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias]}], lr=0.1, weight_decay=1e-3)
    sampler = MutableBatchSampler(50, 8)
    write_hparams(opt, Hyperparams(0.02, 100, 5e-4), sampler)
    assert [g["lr"] for g in opt.param_groups] == [0.02, 0.02]
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 5e-4]
    assert sampler.batch_size == 50  # clamped to the dataset
    write_hparams(opt, Hyperparams(0.5, 4, 0.1), sampler, weight_decay=False, batch_size=False)
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[0]["weight_decay"] == 5e-4 and sampler.batch_size == 50
    rprop = torch.optim.Rprop(model.parameters(), lr=0.1)
    write_hparams(rprop, Hyperparams(0.2, 4, 0.1))  # no weight_decay in its groups: nothing added
    assert "weight_decay" not in rprop.param_groups[0]


@pytest.mark.parametrize("name", ["v2", "default"])
def test_controller_start_clips_into_the_policy_bounds_like_the_env(name):
    art = load_artifact(name)
    task = make_tiny_task(lr=50.0, batch_size=16)  # lr above the policy's bound of 10
    env = rlhpo.make_env(**vars(art.spec.decision_spec()))
    _, info = env.reset(seed=0, options={"task": task})
    model = task.model_fn()
    opt = torch.optim.Adam(model.parameters(), lr=50.0)
    c = Controller(opt, task.budget_examples, policy=art, batch_size=16)
    c.begin()
    # v2: the level is clipped to the bound; v3: the calibrated prior replaces the user's lr.
    # The first step runs at the base schedule's warm-up factor
    first = step_factor(art.spec.base_schedule, 0, 1, task.budget_examples)
    level = art.spec.action_config().lr.max if art.spec.prior == "user" else art.spec.prior_table["adam"]["lr"]
    assert c.decision.level == info["level"] == pytest.approx(level)
    assert c.hparams.lr == pytest.approx(level * first)  # the first step's lr, set at the start
    assert math.isfinite(c.hparams.weight_decay)


def test_controller_guard_override_caps_the_lr_relative_to_the_start(monkeypatch):
    art = load_artifact("default")
    monkeypatch.setattr(PolicyDriver, "act", lambda self, obs, deterministic=True: np.ones(3, np.float32))
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    c = Controller(opt, policy=art.with_guard(max_lr_ratio=4.0), total_examples=2000, batch_size=10, control_batch_size=False)
    for k in range(6):
        c.decide(IntervalStats(steps=5, loss_mean=1.0, loss_first_half=1.0, loss_second_half=1.0), 1.0, examples_seen=100 * (k + 1))
    cap = 4 * art.spec.prior_table["adamw"]["lr"]  # 4x the start: v3 starts from the calibrated AdamW lr
    assert math.exp(c.decision.actions.z[0]) == pytest.approx(cap)  # the level, capped
    factor = step_factor(art.spec.base_schedule, interval_end(2000, art.spec.n_intervals, c.decision.interval - 1), 1, 2000)
    assert opt.param_groups[0]["lr"] == pytest.approx(cap * factor)
