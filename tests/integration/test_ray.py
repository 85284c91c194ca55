"""vec_env=ray: meta-training with one Ray actor per environment, actor crashes, Ray options.

One local Ray instance (2 CPUs) serves the whole module; RayVecEnv joins it and leaves it running.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from conftest import tiny_train_config  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402

import rlhpo.metatrain.trainer  # noqa: E402
from rlhpo.envs import EnvConfig, make_env  # noqa: E402
from rlhpo.envs.vec.ray import RayVecEnv  # noqa: E402
from rlhpo.errors import (  # noqa: E402
    ActorRestartLimitError,
    ConfigError,
)
from rlhpo.metatrain.callbacks import ThroughputCallback  # noqa: E402
from rlhpo.policy.artifact import load_artifact  # noqa: E402
from rlhpo.train import build_vec_env, run  # noqa: E402

pytestmark = pytest.mark.slow  # subprocesses, Ray or minutes of meta-training


def ray_config(**overrides):
    cfg = tiny_train_config(**overrides)
    cfg.vec_env.kind = "ray"
    return cfg


class _KillActorOne(ThroughputCallback):
    """meta-training's own callback, which also kills environment actor 1 at the 40th step and
    counts the steps that report a restarted actor."""

    restarted_infos = 0

    def _on_step(self) -> bool:
        type(self).restarted_infos += sum(bool(i.get("actor_restarted")) for i in self.locals["infos"])
        if self.num_timesteps == 40:
            ray.kill(self.training_env.unwrapped.actors[1])
        return super()._on_step()


def test_meta_training_on_ray_actors_goes_on_when_an_actor_dies(ray_instance, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(rlhpo.metatrain.trainer, "ThroughputCallback", _KillActorOne)
    with caplog.at_level(logging.WARNING, logger="rlhpo.envs.vec.ray"):
        path = run(ray_config(seed=3), tmp_path)
    assert _KillActorOne.restarted_infos == 1
    assert "environment actor 1 died" in caplog.text
    art = load_artifact(path)
    assert art.spec.timesteps == 128 and (tmp_path / "checkpoints").is_dir()
    assert ray.is_initialized()  # RayVecEnv did not start this Ray, so it left it running


def _actions(venv, rng=None):
    shape = (venv.num_envs, venv.action_space.shape[0])
    return np.zeros(shape, np.float32) if rng is None else rng.uniform(-1, 1, shape).astype(np.float32)


def _trajectory(venv, steps=7):
    """Observations, rewards, dones, terminal observations and truncation flags under fixed actions."""
    rng = np.random.default_rng(0)
    out = [venv.reset()]
    for _ in range(steps):  # episodes of 5 intervals: every env ends one and auto-resets
        obs, rewards, dones, infos = venv.step(_actions(venv, rng))
        terminal = [i.get("terminal_observation", np.zeros_like(obs[0])) for i in infos]
        out += [obs, rewards, dones, np.stack(terminal), np.array([i["TimeLimit.truncated"] for i in infos])]
    return out


def test_ray_vec_env_steps_like_dummy_and_replaces_killed_actors_until_the_cap(ray_instance, caplog):
    cfg = ray_config(seed=3)
    cfg.vec_env.max_restarts = 2
    venv = build_vec_env(cfg.validate()).venv  # the RayVecEnv under VecNormalize
    try:
        assert isinstance(venv, RayVecEnv)
        pids = venv.actor_pids()
        assert len(set(pids)) == 2 and os.getpid() not in pids
        assert venv.env_is_wrapped(Monitor) == [True, True] and venv.get_attr("render_mode") == [None, None]

        # same seed, same actions: exactly what DummyVecEnv gives, auto-resets included, because
        # each actor builds and seeds its environment as DummyVecEnv does
        dummy_cfg = tiny_train_config(seed=3)
        dummy = build_vec_env(dummy_cfg.validate()).venv
        expected = _trajectory(dummy)
        dummy.close()
        got = _trajectory(venv)
        assert sum(d.sum() for d in expected[3::5]) >= 2
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)

        venv.reset()
        obs, _, dones, _ = venv.step(_actions(venv))
        assert not dones.any()
        # 1. an actor dies between steps: the next step reports its episode as ended
        ray.kill(venv.actors[0])
        with caplog.at_level(logging.WARNING, logger="rlhpo.envs.vec.ray"):
            obs2, rewards, dones, infos = venv.step(_actions(venv))
        assert dones.tolist() == [True, False]
        assert infos[0]["actor_restarted"] is True and infos[0]["TimeLimit.truncated"] is True
        np.testing.assert_array_equal(infos[0]["terminal_observation"], obs[0])
        assert rewards[0] == 0.0 and np.isfinite(obs2).all()
        assert "actor_restarted" not in infos[1]
        assert "environment actor 0 died" in caplog.text and "restart 1 of at most 2" in caplog.text
        assert venv.restarts == 1 and venv.actor_pids()[0] != pids[0]

        # 2. an actor dies while its step is in flight: a call queued ahead keeps the actor busy, so
        # the step has surely not run when the kill lands (without it the step could finish first)
        venv.actors[1].__ray_call__.remote(lambda self: time.sleep(5))
        venv.step_async(_actions(venv))
        ray.kill(venv.actors[1])
        obs3, _, dones, infos = venv.step_wait()
        assert dones[1] and infos[1]["actor_restarted"]
        np.testing.assert_array_equal(infos[1]["terminal_observation"], obs2[1])
        assert venv.restarts == 2

        # stepping goes on: the replacements run whole episodes (5 intervals) with auto-reset
        ended = []
        for _ in range(6):
            _, _, dones, infos = venv.step(_actions(venv))
            ended += [i for i, d in enumerate(dones) if d]
            assert not any(info.get("actor_restarted") for info in infos)
        assert set(ended) == {0, 1}

        # 3. one death beyond vec_env.max_restarts stops with a clear error
        ray.kill(venv.actors[0])
        with pytest.raises(ActorRestartLimitError, match=r"limit vec_env.max_restarts=2"):
            venv.step(_actions(venv))
    finally:
        venv.close()


def test_an_env_that_cannot_be_built_fails_at_once_without_restarts(ray_instance):
    # the factory is fine to send; only the actor finds out that its config is bad
    factory = functools.partial(make_env, EnvConfig(n_intervals=0))
    with pytest.raises(RuntimeError, match=r"environment 0 could not be built in its actor(.|\n)*env.n_intervals must be"):
        RayVecEnv([factory], num_cpus=0.5, max_restarts=5)


@pytest.mark.parametrize(
    "n_envs, cpus, gpus, pattern",
    [
        (4, 1.0, 0.0, r"4 environment actors need 4 CPUs in total .* the Ray cluster has 2"),
        (2, 0.5, 0.5, r"2 environment actors need 1 GPUs in total .* the Ray cluster has 0"),
    ],
)
def test_more_than_the_local_ray_has_is_an_error_not_a_hang(ray_instance, n_envs, cpus, gpus, pattern):
    cfg = ray_config()
    cfg.vec_env.n_envs, cfg.vec_env.num_cpus_per_env, cfg.vec_env.num_gpus_per_env = n_envs, cpus, gpus
    with pytest.raises(RuntimeError, match=pattern):
        build_vec_env(cfg.validate())
    assert ray.is_initialized()


@pytest.mark.parametrize(
    "field, value, pattern",
    [
        ("kind", "gpu", r"vec_env.kind must be one of \['dummy', 'subproc', 'batched', 'ray'\]"),
        ("address", "my cluster", r"vec_env.address must be null .* 'auto', 'host:port' or 'ray://host:port'"),
        ("address", "10.0.0.1", r"vec_env.address must be null"),
        ("num_cpus_per_env", -1.0, r"vec_env.num_cpus_per_env must be a finite number >= 0"),
        ("num_cpus_per_env", float("nan"), r"vec_env.num_cpus_per_env must be a finite number >= 0"),
        ("num_cpus_per_env", 0.00001, r"vec_env.num_cpus_per_env: Ray resolves fractions to 0.0001"),
        ("num_gpus_per_env", 1.5, r"vec_env.num_gpus_per_env above 1 must be a whole number"),
        ("max_restarts", -1, r"vec_env.max_restarts must be an integer >= 0"),
        ("start_timeout_s", 0.0, r"vec_env.start_timeout_s must be a finite number > 0"),
    ],
)
def test_bad_ray_options_are_rejected_before_training(field, value, pattern, tmp_path):
    cfg = ray_config()
    setattr(cfg.vec_env, field, value)
    with pytest.raises(ConfigError, match=pattern):
        run(cfg, tmp_path)
    assert not (tmp_path / "tb").exists()


def test_ray_options_need_the_ray_kind_and_some_resources():
    cfg = tiny_train_config()  # kind=dummy
    cfg.vec_env.num_gpus_per_env = 0.5
    with pytest.raises(ConfigError, match=r"vec_env.num_gpus_per_env is only used with vec_env.kind=ray"):
        cfg.validate()
    cfg = ray_config()
    cfg.vec_env.num_cpus_per_env = 0
    with pytest.raises(ConfigError, match=r"num_cpus_per_env and vec_env.num_gpus_per_env are both 0"):
        cfg.validate()
    for good in ("auto", "127.0.0.1:6379", "head-node.local:6379", "ray://10.1.2.3:10001", None):
        cfg = ray_config()
        cfg.vec_env.address = good
        cfg.validate()


def test_cli_vec_env_ray_with_an_address_where_no_cluster_answers(tmp_path):
    with socket.socket() as s:  # a free loopback port, closed again: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "rlhpo.train", "+experiment=smoke", "vec_env=ray", f"vec_env.address=127.0.0.1:{port}"]
    proc = subprocess.run([*cmd, f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert proc.returncode != 0  # fast, instead of Ray's minutes of retries
    assert f"vec_env.address='127.0.0.1:{port}': nothing answers there" in proc.stderr
    assert "ray start --head" in proc.stderr
