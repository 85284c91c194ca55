"""Every vector env runs the shipped recipe, and runs it the same: for the same seed, the dummy,
subprocess, batched and Ray vector envs give the same observations, rewards and episode returns
(the batched env up to float rounding: its target networks train as one ``vmap``-ed computation,
float32 sums in another order), guard rollbacks included.

The recipe is the defaults' (reference reward, cosine base schedule, sensible starts, the guard)
on the tiny meta-training families at 3% of their budget (``tiny_train_config``)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_train_config

from rlhpo.envs import EnvConfig
from rlhpo.metatrain.trainer import make_vec

pytestmark = pytest.mark.slow  # subprocesses and Ray

#: the batched env's tolerance (relative and absolute) against the others, which agree up to the
#: float32 rounding of DummyVecEnv's reward buffer
BATCHED_RTOL, BATCHED_ATOL = 1e-3, 1e-3
STEPS = 16  # four episodes of each of the two environments (5 intervals: a reset and 4 steps)


SEED = 0  # its fixed actions roll back twice (both environments)


def parity_config(kind: str, seed: int = SEED):
    cfg = tiny_train_config(seed=seed)
    cfg.vec_env.kind, cfg.vec_env.n_envs = kind, 2
    if kind == "batched":
        cfg.vec_env.group_size = 1  # each slot draws its own tasks, as a single env does
    if kind == "ray":
        cfg.vec_env.num_cpus_per_env = 0.5
    return cfg.validate()


def rollout(kind: str, seed: int = SEED) -> dict:
    """The raw (unnormalised) vector env of meta-training, driven by fixed actions that push every
    control upwards most of the time, so that some interval diverges and the guard rolls back."""
    venv = make_vec(parity_config(kind, seed))
    try:
        rng = np.random.default_rng(0)
        obs, rewards, rolled, returns, tasks = [venv.reset()], [], [], [], []
        tasks.append([i["task"] for i in venv.unwrapped.reset_infos])  # VecMonitor keeps none
        for _ in range(STEPS):
            actions = rng.uniform(0.5, 1.0, (2, 3)).astype(np.float32)
            o, r, done, infos = venv.step(actions)
            obs.append(o)
            rewards.append(r)
            rolled.append([i["rolled_back"] for i in infos])
            returns += [(k, float(i["episode"]["r"])) for k, i in enumerate(infos) if "episode" in i]
        return dict(obs=np.stack(obs), rewards=np.stack(rewards), rolled=np.array(rolled), returns=returns, tasks=tasks)
    finally:
        venv.close()


def test_every_vec_env_gives_the_same_rollout_for_the_same_seed(ray_instance):
    assert EnvConfig().reward == "reference" and EnvConfig().base_schedule == "cosine"  # the shipped recipe
    runs = {kind: rollout(kind) for kind in ("dummy", "subproc", "ray", "batched")}
    base = runs["dummy"]
    assert base["rolled"].any(), "the fixed actions must make some interval diverge and roll back"
    assert len(base["returns"]) >= 4
    for kind, run in runs.items():
        assert run["tasks"] == base["tasks"], kind
        np.testing.assert_array_equal(run["rolled"], base["rolled"], err_msg=kind)
        assert [k for k, _ in run["returns"]] == [k for k, _ in base["returns"]], kind
        if kind == "batched":
            tol = dict(rtol=BATCHED_RTOL, atol=BATCHED_ATOL)
        else:  # the same computation; only DummyVecEnv's float32 reward buffer rounds
            tol = dict(rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(run["obs"], base["obs"], err_msg=kind, **tol)
        np.testing.assert_allclose(run["rewards"], base["rewards"], err_msg=kind, **tol)
        np.testing.assert_allclose([r for _, r in run["returns"]], [r for _, r in base["returns"]], err_msg=kind, **tol)
