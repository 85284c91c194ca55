"""The batched vector environment: same semantics as the single environment, SB3-compatible."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from conftest import make_tiny_task, tiny_train_config
from torch import nn

from rlhpo.envs import EnvConfig, make_env
from rlhpo.envs.vec.batched import BatchedVecEnv
from rlhpo.errors import ConfigError
from rlhpo.tasks import Hyperparams, Task
from rlhpo.training.rows import stack_check
from rlhpo.training.session import TrainingSession
from rlhpo.training.stacked import StackedTrainer


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_stacked_rows_train_exactly_like_sessions(optimizer):
    """Each row of a StackedTrainer is a TrainingSession: batches, budget cut, optimizer, probes."""
    task = make_tiny_task(optimizer=optimizer, budget=300, lr=0.05, batch_size=7)
    hps = [
        Hyperparams(0.05, 7, 1e-4),
        Hyperparams(0.01, 13, 0.0),
        Hyperparams(0.2, 32, 1e-2),  # larger than a third of the tiny task's 32 training examples
    ]
    trainer = StackedTrainer(task, capacity=2)  # grows to 3 rows
    rows = [trainer.add_row(100 + k) for k in range(3)]
    sessions = [TrainingSession(task, seed=100 + k) for k in range(3)]
    for row, session, hp in zip(rows, sessions, hps):
        trainer.set_hparams(row, hp)
        session.set_hparams(hp)
    for k, target in enumerate([40, 95, 95, 210, 300, 300]):
        if k == 3:  # change the batch sizes mid-run, as a controller would
            for row, session in zip(rows, sessions):
                hp = Hyperparams(trainer.hparams(row).lr * 0.5, 5 + row, trainer.hparams(row).weight_decay)
                trainer.set_hparams(row, hp)
                session.set_hparams(hp)
        stats = trainer.train_until({row: target for row in rows})
        evals = trainer.evaluate(rows)
        for row, session in zip(rows, sessions):
            expected = session.train_until(target)
            got = stats[row]
            assert got.steps == expected.steps
            assert trainer.examples_seen(row) == session.examples_seen
            for field in ("loss_mean", "loss_first_half", "loss_second_half", "loss_std", "grad_norm", "update_ratio", "update_cosine"):
                a, b = getattr(expected, field), getattr(got, field)
                assert a == pytest.approx(b, rel=2e-4, abs=1e-6, nan_ok=True), (k, row, field)
            assert evals[row][0] == pytest.approx(session.evaluate("val")[0], rel=2e-4)
    assert all(trainer.examples_seen(r) == task.budget_examples for r in rows)


def test_a_new_row_reuses_a_freed_one_and_starts_fresh():
    task = make_tiny_task(budget=200)
    trainer = StackedTrainer(task, capacity=2)
    a, b = trainer.add_row(1), trainer.add_row(2)
    trainer.train_until({a: 100, b: 100})
    trainer.remove_row(a)
    c = trainer.add_row(1)
    assert c == a and trainer.examples_seen(c) == 0 and trainer.live_rows() == 2
    session = TrainingSession(task, seed=1)
    assert trainer.train_until({c: 64})[c].loss_mean == pytest.approx(session.train_until(64).loss_mean, rel=1e-4)
    trainer.remove_row(c)
    with pytest.raises(KeyError, match="not in use"):
        trainer.examples_seen(c)


def test_tasks_that_cannot_be_stacked_say_why():
    task = make_tiny_task()
    assert stack_check(task) is None
    dropout = Task(**{**vars(task), "model_fn": lambda: nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 2))})
    assert "Dropout" in stack_check(dropout)
    summed = Task(**{**vars(task), "loss_fn": lambda o, y: nn.functional.cross_entropy(o, y, reduction="sum")})
    assert "not a mean over examples" in stack_check(summed)


@pytest.mark.parametrize("reward", ["reference", "delta"])  # every reward runs in the batched env
def test_batched_env_matches_the_single_env_for_the_same_seeds_and_actions(reward):
    task = make_tiny_task(budget=400, batch_size=8)
    config = EnvConfig(n_intervals=5, reward=reward)
    n = 4
    venv = BatchedVecEnv(config, n_envs=n)
    venv.set_options([{"task": task, "session_seed": 10 + i} for i in range(n)])
    obs = venv.reset()
    singles = [make_env(EnvConfig(n_intervals=5, reward=reward)) for _ in range(n)]
    expected = [env.reset(seed=i, options={"task": task, "session_seed": 10 + i})[0] for i, env in enumerate(singles)]
    np.testing.assert_allclose(obs, np.stack(expected), rtol=1e-4, atol=1e-4)
    rng = np.random.default_rng(0)
    for t in range(5):
        actions = rng.uniform(-1, 1, (n, 3)).astype(np.float32)
        obs, rewards, dones, infos = venv.step(actions)
        for i, env in enumerate(singles):
            o, r, term, trunc, info = env.step(actions[i])
            assert dones[i] == (term or trunc)
            assert rewards[i] == pytest.approx(r, rel=1e-3, abs=1e-4)
            assert infos[i]["batch_size"] == info["batch_size"] and infos[i]["lr"] == pytest.approx(info["lr"])
            np.testing.assert_allclose(infos[i]["terminal_observation"] if dones[i] else obs[i], o, rtol=1e-3, atol=1e-3)
        if dones.all():
            break
    assert dones.all() and t == 3  # five intervals: one at reset, four steps, truncated at the budget


def test_batched_env_rolls_back_like_the_single_env():
    """The guard in the batched env: a row that diverges is restored from its own snapshot, exactly
    as a single env restores its session (weights, optimizer state, batch order)."""
    # an lr so large that every row overflows at once: the verdicts cannot hinge on float noise
    task = make_tiny_task(lr=1e4, optimizer="sgd", budget=480, batch_size=8, regression=True)
    n = 3
    # no base schedule: under cosine the lr falls into a range where these runs are chaotic (loss
    # 1e22..1e35, overflow or not hinges on float rounding); here every interval overflows
    config = EnvConfig(n_intervals=6, base_schedule="none", prior="user")  # the task's lr, not the calibrated one
    venv = BatchedVecEnv(config, n_envs=n)
    venv.set_options([{"task": task, "session_seed": 20 + i} for i in range(n)])
    venv.reset()
    singles = [make_env(config) for _ in range(n)]
    for i, env in enumerate(singles):
        env.reset(seed=i, options={"task": task, "session_seed": 20 + i})
    rolled = 0
    for _ in range(6):
        actions = np.ones((n, 3), dtype=np.float32)  # up and up: the rows blow up
        _, rewards, dones, infos = venv.step(actions)
        for i, env in enumerate(singles):
            _, r, term, trunc, info = env.step(actions[i])
            assert infos[i]["rolled_back"] == info["rolled_back"] and infos[i]["diverged"] == info["diverged"]
            assert infos[i]["lr"] == pytest.approx(info["lr"]) and rewards[i] == pytest.approx(r, rel=1e-3, abs=1e-4)
            rolled += info["rolled_back"]
        if dones.all():
            break
    assert rolled > 0 and dones.all()


def test_groups_share_a_task_and_sb3_auto_reset_works():
    config = EnvConfig(n_intervals=3, budget_scale=0.02)
    venv = BatchedVecEnv(config, n_envs=4, group_size=2)
    venv.seed(3)
    venv.reset()
    names = [s.task.name for s in venv.envs]
    assert names[0] == names[1] and names[2] == names[3]
    seen_done = False
    for _ in range(8):
        obs, rewards, dones, infos = venv.step(np.zeros((4, 3), dtype=np.float32))
        assert np.isfinite(obs).all() and np.isfinite(rewards).all()
        for i in np.flatnonzero(dones):
            seen_done = True
            assert "terminal_observation" in infos[i]
    assert seen_done
    venv.close()


def test_same_seed_same_batched_rollout():
    def rollout():
        venv = BatchedVecEnv(EnvConfig(n_intervals=3, budget_scale=0.02), n_envs=2)
        venv.seed(7)
        out = [venv.reset()]
        for _ in range(4):
            out.append(venv.step(np.full((2, 3), 0.3, dtype=np.float32))[0])
        return np.stack(out)

    np.testing.assert_array_equal(rollout(), rollout())


def test_unstackable_family_falls_back_with_a_warning(caplog):
    venv = BatchedVecEnv(EnvConfig(families=["char_lm"], n_intervals=2, budget_scale=0.01), n_envs=2)
    venv.seed(0)
    with caplog.at_level(logging.WARNING):
        venv.reset()
        obs, *_ = venv.step(np.zeros((2, 3), dtype=np.float32))
    assert np.isfinite(obs).all()
    assert "char_lm tasks train one network at a time" in caplog.text


def test_meta_training_with_the_batched_env(tmp_path):
    from rlhpo.policy.artifact import load_artifact
    from rlhpo.train import run

    cfg = tiny_train_config()
    cfg.vec_env.kind, cfg.vec_env.n_envs = "batched", 4
    path = run(cfg, tmp_path)
    assert load_artifact(path).spec.timesteps >= 128


@pytest.mark.parametrize("n_envs, group_size", [(4, 3), (4, 0), (4, 8)])
def test_bad_group_size_is_a_config_error(n_envs, group_size, tmp_path):
    from rlhpo.train import run

    cfg = tiny_train_config()
    cfg.vec_env.kind, cfg.vec_env.n_envs, cfg.vec_env.group_size = "batched", n_envs, group_size
    with pytest.raises(ConfigError, match="vec_env.group_size must be null or an integer that divides"):
        run(cfg, tmp_path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_stacked_trainer_on_cuda_matches_cpu():
    task = make_tiny_task(budget=200)
    results = []
    for device in ("cpu", "cuda"):
        trainer = StackedTrainer(task, capacity=2, device=device)
        rows = [trainer.add_row(1), trainer.add_row(2)]
        trainer.train_until({r: 200 for r in rows})
        results.append([trainer.evaluate(rows)[r][0] for r in rows])
    assert results[0] == pytest.approx(results[1], rel=1e-3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_device_cuda_without_a_gpu_is_a_config_error(tmp_path):
    from rlhpo.train import run

    cfg = tiny_train_config()
    cfg.env.device = "cuda"
    with pytest.raises(ConfigError, match="^env.device='cuda' but torch sees no CUDA device; use env.device=cpu"):
        run(cfg, tmp_path)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_meta_training_with_target_networks_on_cuda(tmp_path):
    from rlhpo.train import run

    cfg = tiny_train_config()
    cfg.env.device = "cuda"
    cfg.vec_env.kind, cfg.vec_env.n_envs = "batched", 2
    assert run(cfg, tmp_path).exists()
