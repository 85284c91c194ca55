"""The training-control environment: API conformance, seeding, ranges, divergence."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import make_tiny_task, run_episode
from stable_baselines3.common.env_checker import check_env

import rlhpo
from rlhpo.control.features import CLIP, N_FEATURES
from rlhpo.envs import ENV_ID, EnvConfig, HyperparamControlEnv
from rlhpo.tasks import FAMILIES, FAMILY_GROUPS


class TinyEnv(HyperparamControlEnv):
    """The env on the tiny task, so check_env's dozen steps cost milliseconds."""

    def reset(self, *, seed=None, options=None):
        return super().reset(seed=seed, options={"task": make_tiny_task(), **(options or {})})


def test_sb3_check_env_passes():
    env = TinyEnv(EnvConfig(n_intervals=5))
    check_env(env, warn=True)


def test_registered_with_gymnasium():
    env = gym.make(ENV_ID, families=["noisy_quadratic"], budget_scale=0.05, n_intervals=4)
    obs, info = env.reset(seed=1)
    assert obs.shape == (N_FEATURES,)
    assert env.action_space.shape == (3,)
    env.close()


def test_same_seed_same_episode():
    def episode(seed):
        env = rlhpo.make_env(families=["meta_train"], budget_scale=0.05, n_intervals=5)
        env.action_space.seed(123)
        return run_episode(env, seed=seed)

    o1, r1, i1 = episode(7)
    o2, r2, i2 = episode(7)
    assert i1[0]["task"] == i2[0]["task"]
    np.testing.assert_array_equal(np.stack(o1), np.stack(o2))
    np.testing.assert_array_equal(r1, r2)
    o3, _, i3 = episode(8)
    assert i3[0]["task"] != i1[0]["task"] or not np.array_equal(np.stack(o1), np.stack(o3))


@pytest.mark.parametrize("family", sorted(set(FAMILIES) - set(FAMILY_GROUPS["workloads"])))
def test_every_family_gives_finite_observations_in_range(family):
    """(The workloads take 6-30 s each at this budget: tests/unit/test_workloads.py runs their
    tiny sizes through the env.)"""
    env = rlhpo.make_env(families=[family], budget_scale=0.08, n_intervals=6)
    env.action_space.seed(0)
    for seed in range(2):
        observations, rewards, infos = run_episode(env, seed=seed)
        obs = np.stack(observations)
        assert np.isfinite(obs).all(), family
        assert (np.abs(obs) <= CLIP).all()
        assert env.observation_space.contains(observations[-1])
        assert np.isfinite(rewards).all()
        last = infos[-1]
        assert last["diverged"] or last["examples"] >= last["budget"]
        assert last["diverged"] or last["examples"] == last["budget"]  # exactly the budget


def test_budget_is_counted_in_examples_not_steps():
    """Doubling the batch size every interval must not buy extra examples."""
    env = TinyEnv(EnvConfig(n_intervals=5))
    _, _, infos = run_episode(env, actions=[[0.0, 1.0, 0.0]])
    assert infos[-1]["batch_size"] > 16
    assert infos[-1]["examples"] == 640
    env_small = TinyEnv(EnvConfig(n_intervals=5))
    _, _, infos_small = run_episode(env_small, actions=[[0.0, -1.0, 0.0]])
    assert infos_small[-1]["examples"] == 640


def test_without_the_guard_divergence_terminates_with_penalty_and_flag():
    cfg = EnvConfig(n_intervals=8)
    cfg.guard.enabled = False
    env = TinyEnv(cfg)
    obs, info = env.reset(options={"task": make_tiny_task(lr=5.0, optimizer="sgd", regression=True)})
    terminated = False
    for _ in range(8):
        obs, r, terminated, truncated, info = env.step(np.ones(3, dtype=np.float32))
        assert np.isfinite(obs).all()
        if terminated or truncated:
            break
    assert terminated and info["diverged"] and not info["rolled_back"]
    assert r == -env.config.divergence_penalty


def test_a_diverging_episode_rolls_back_and_goes_on_with_the_examples_charged():
    env = TinyEnv(EnvConfig(n_intervals=8))
    obs, info = env.reset(options={"task": make_tiny_task(lr=5.0, optimizer="sgd", regression=True)})
    infos, rewards = [info], []
    while True:
        obs, r, terminated, truncated, info = env.step(np.ones(3, dtype=np.float32))
        infos.append(info)
        rewards.append(r)
        assert np.isfinite(obs).all() and np.isfinite(r)
        if terminated or truncated:
            break
    assert truncated and not terminated
    rolled = [i for i in infos if i["rolled_back"]]
    assert rolled and all(i["diverged"] for i in rolled)
    assert -env.config.divergence_penalty in rewards
    examples = [i["examples"] for i in infos]
    assert examples == sorted(examples) and examples[-1] == 640  # the budget is not refunded
    assert all(torch.isfinite(p).all() for p in env.session.model.parameters())
    # after a rollback the lr is cut, and once divergence repeated it never rises again
    k = infos.index(rolled[0])
    assert infos[k + 1]["lr"] < infos[k]["lr"] if k + 1 < len(infos) else True


def test_controls_can_be_switched_off():
    cfg = EnvConfig(n_intervals=4, base_schedule="none")  # the lr is the policy's level alone
    cfg.actions.batch_size.enabled = False
    cfg.actions.weight_decay.enabled = False
    env = TinyEnv(cfg)
    assert env.action_space.shape == (1,)
    _, _, infos = run_episode(env, actions=[[1.0]])
    assert infos[-1]["batch_size"] == 16 and infos[-1]["weight_decay"] == pytest.approx(1e-4)
    assert infos[-1]["lr"] > 1e-2


def test_reward_never_reads_the_test_split(monkeypatch):
    from rlhpo.training.session import TrainingSession

    seen = []
    original = TrainingSession.evaluate

    def spy(self, split="val"):
        seen.append(split)
        return original(self, split)

    monkeypatch.setattr(TrainingSession, "evaluate", spy)
    run_episode(TinyEnv(EnvConfig(n_intervals=4)))
    assert seen and "test" not in seen


@pytest.mark.parametrize("family", ["digits_mlp", "digits_cnn", "tabular", "synthetic_classification"])
def test_validation_and_test_inputs_are_on_the_training_scale(family):
    """Standardising by training statistics must not blow up held-out inputs (digits' border
    pixels are constant on some training splits)."""
    for seed in range(5):
        task = FAMILIES[family]().sample(seed)
        scale = float(task.train.x.abs().max())
        for split in (task.val, task.test):
            assert float(split.x.abs().max()) <= 3 * scale + 1e-6


def test_sampling_a_task_leaves_the_global_torch_rng_alone():
    """Task sampling in the driver must not shift PPO's random stream (in-process vector envs)."""
    from rlhpo.tasks import FAMILIES

    for name, family in FAMILIES.items():
        torch.manual_seed(0)
        expected = torch.rand(3)
        torch.manual_seed(0)
        family(budget_scale=0.01).sample(5)
        assert torch.equal(torch.rand(3), expected), name
