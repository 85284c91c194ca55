"""Snapshot episodes (issue 33): an episode that starts part-way through a long run, from the
reference run's state there, scored against the reference's continuation from that state."""

from __future__ import annotations

import numpy as np
import pytest

from rlhpo.envs import EnvConfig, HyperparamControlEnv
from rlhpo.envs.vec.batched import BatchedVecEnv
from rlhpo.errors import ConfigError


def snap_env(tmp_path=None, **kw) -> HyperparamControlEnv:
    kw.setdefault("budget_scale", 0.05)
    cfg = EnvConfig(families=["synthetic_classification"], n_intervals=8, reward="reference", task_seeds=[2],
                    sensible_fraction=0.0, snapshot_budget_scale=3.0, snapshot_at=[0.5, 0.75],
                    reference_cache=str(tmp_path) if tmp_path else None, **kw)
    return HyperparamControlEnv(cfg)


def episode(env, action, options):
    _, first = env.reset(seed=0, options=options)
    rewards, info = [], first
    while True:
        _, r, term, trunc, info = env.step(np.asarray(action, dtype=np.float32))
        rewards.append(r)
        if term or trunc:
            return first, rewards, info


def test_zero_actions_from_a_snapshot_replay_the_reference_exactly():
    env = snap_env()
    plain = env.reset(seed=0)[1]["budget"]
    first, rewards, last = episode(env, [0.0, 0.0, 0.0], {"snapshot": 0.5})
    assert first["budget"] == 3 * plain  # the long run
    assert env.snapshot_interval == 4 and first["examples"] == env._reference.examples[4]  # trained interval 4 at reset
    assert first["steps"] == env._reference.steps[4]  # the steps before the snapshot count
    assert len(rewards) == 3 and all(r == 0.0 for r in rewards)  # the reference's own continuation
    assert last["val_loss"] == env._reference.curve[-1] and last["steps"] == env._reference.steps[-1]


def test_a_different_continuation_earns_its_lead_over_the_reference():
    env = snap_env()
    first, rewards, last = episode(env, [-1.0, 0.0, 0.0], {"snapshot": 0.75})
    assert env.snapshot_interval == 6 and len(rewards) == 1
    ref = env._reference
    assert last["val_loss"] != ref.curve[-1]
    assert sum(rewards) == pytest.approx(np.log(ref.curve[-1] / last["val_loss"]) - np.log(ref.curve[6] / first["val_loss"]))


def test_snapshots_are_kept_on_disk_and_reused(tmp_path):
    a = snap_env(tmp_path)
    obs_a, _ = a.reset(seed=0, options={"snapshot": 0.5})
    assert len(list(tmp_path.glob("*.snap4.pt"))) == 1
    b = snap_env(tmp_path)  # another process: reads the curve and the snapshot
    obs_b, _ = b.reset(seed=0, options={"snapshot": 0.5})
    assert b.references.computed == 0 and np.array_equal(obs_a, obs_b)


def test_snapshot_fraction_mixes_snapshot_and_whole_episodes():
    env = snap_env(snapshot_fraction=0.5)
    starts = []
    for k in range(12):
        env.reset(seed=k)
        starts.append(env.snapshot_interval)
    assert set(starts) == {0, 4, 6}


def test_snapshot_episodes_need_a_reference_and_one_network_per_env():
    with pytest.raises(ConfigError, match=r"env.snapshot_fraction=0.5 needs a reference run .* env.reward must be one of"):
        EnvConfig(reward="delta", snapshot_fraction=0.5).validate()
    with pytest.raises(ValueError, match=r"options\['snapshot'\] must be a fraction in \[0, 1\)"):
        snap_env().reset(seed=0, options={"snapshot": 1.0})
    with pytest.raises(ValueError, match=r"snapshot_fraction=0.5: .* use vec_env.kind dummy, subproc or ray"):
        BatchedVecEnv(EnvConfig(families=["synthetic_classification"], snapshot_fraction=0.5), n_envs=2)


def test_one_long_run_keeps_every_snapshot_and_a_lost_one_is_not_rerun(tmp_path):
    env = snap_env(tmp_path)
    env.reset(seed=0, options={"snapshot": 0.5})
    assert env.references.computed == 1  # the long run, keeping both snapshots
    assert len(list(tmp_path.glob("*.snap4.pt"))) == len(list(tmp_path.glob("*.snap6.pt"))) == 1
    env.reset(seed=0, options={"snapshot": 0.75})
    assert env.references.computed == 1  # the second start was kept by the first run
    refs = env.references
    key = refs.key(env.task, 0)
    refs._put_snapshot(key, 7, b"")  # a run that ended before interval 7 (kept empty)
    assert refs.snapshot(env.task, 0, 7) is None and refs.computed == 1
