"""The time-to-result reward (issue 33): the reference reward plus, at the episode's end, the lead
in optimizer steps to the reference's final validation loss."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rlhpo.envs import EnvConfig, HyperparamControlEnv
from rlhpo.envs.reference import Reference, lead
from rlhpo.errors import ConfigError


def ttr_env(tmp_path=None, **kw) -> HyperparamControlEnv:
    kw.setdefault("budget_scale", 0.05)
    cfg = EnvConfig(families=["synthetic_classification"], n_intervals=6, reward="time_to_result",
                    reference_cache=str(tmp_path) if tmp_path else None, **kw)
    return HyperparamControlEnv(cfg)


def episode(env, action, options):
    _, info = env.reset(seed=0, options=options)
    rewards, infos = [], [info]
    while True:
        _, r, term, trunc, info = env.step(np.asarray(action, dtype=np.float32))
        rewards.append(r)
        infos.append(info)
        if term or trunc:
            return rewards, infos


def test_steps_to_result_is_the_first_point_at_the_final_loss():
    ref = Reference.of([3.0, 2.0, 1.5, 1.6, 1.5], [10, 20, 30, 40, 50], steps=[1, 2, 3, 4, 5])
    assert ref.steps_to_result() == 3  # reached at the 3rd point, before the end
    assert Reference.of([3.0, 2.0], [1, 2]).steps_to_result() is None  # no steps kept
    assert Reference.of([3.0, math.inf], [1, 2], steps=[1, 2]).steps_to_result() == 1  # a lost run keeps its last finite loss
    assert Reference.of([math.inf, math.inf], [1, 2], steps=[1, 2]).steps_to_result() is None


def test_zero_actions_earn_zero_and_the_reference_keeps_its_steps(tmp_path):
    env = ttr_env(tmp_path)
    rewards, infos = episode(env, [0.0, 0.0, 0.0], {"task_seed": 3})
    assert all(r == 0.0 for r in rewards)  # same run as the reference: no lead in loss nor in steps
    ref = env._reference
    assert ref.steps == [i["steps"] for i in infos] and ref.steps[-1] > ref.steps[0] > 0
    cached = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert cached["steps"] == ref.steps


def test_a_larger_batch_earns_the_log_speedup_in_steps_on_top_of_the_lead(tmp_path):
    env = ttr_env(tmp_path, ttr_weight=0.5, budget_scale=0.2)
    enabled = env.config.actions.enabled
    action = np.zeros(len(enabled))
    action[enabled.index("batch_size")] = action[enabled.index("lr")] = 0.3  # a larger batch and lr at every decision
    rewards, infos = episode(env, action, {"task_seed": 4})
    ref, first, last = env._reference, infos[0], infos[-1]
    assert last["steps"] < ref.steps[-1]
    final_lead = lead(ref, last["examples"], last["val_loss"]) - lead(ref, first["examples"], first["val_loss"])
    reached = next((i["steps"] for i in infos if not i["diverged"] and i["val_loss"] <= ref.curve[-1]), None)
    assert reached is not None and reached < ref.steps_to_result()  # the reference's result in fewer steps
    bonus = 0.5 * math.log(ref.steps_to_result() / reached)
    assert bonus > 0.1
    assert sum(rewards) == pytest.approx(final_lead + bonus, abs=1e-6)
    assert env._time_to_result() == pytest.approx(bonus)


def test_an_old_cache_file_without_steps_is_computed_again(tmp_path):
    env = ttr_env(tmp_path)
    episode(env, [0.0, 0.0, 0.0], {"task_seed": 3})
    path = next(tmp_path.glob("*.json"))
    old = json.loads(path.read_text())
    del old["steps"]
    path.write_text(json.dumps(old))
    fresh = ttr_env(tmp_path)
    episode(fresh, [0.0, 0.0, 0.0], {"task_seed": 3})
    assert fresh.references.computed == 1 and fresh._reference.steps is not None


def test_bad_ttr_weight_is_one_line():
    with pytest.raises(ConfigError, match="ttr_weight"):
        EnvConfig(ttr_weight=-1.0).validate()
