"""The workload families (rlhpo.tasks.workloads): each builds and trains at its tiny size, its
default size is of realistic length, the size knob is checked, and the groups stay out of
meta-training and the short held-out split."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import rlhpo
from rlhpo.errors import TaskError
from rlhpo.tasks import FAMILIES, FAMILY_GROUPS, SENSIBLE_STARTS, resolve_families
from rlhpo.tasks.workloads import WORKLOAD_FAMILIES, WORKLOADS_DEV, WORKLOADS_FINAL
from rlhpo.tasks.workloads.lm import LMSize, WorkloadLM
from rlhpo.training.session import TrainingSession


@pytest.mark.parametrize("family", WORKLOAD_FAMILIES, ids=lambda f: f.name)
def test_each_workload_builds_and_trains_a_few_steps_at_its_tiny_size(family):
    task = family(size="tiny").sample(0)
    session = TrainingSession(task, seed=0)
    before = session.evaluate("val")[0]
    stats = session.train(5 * task.default_hparams.batch_size)
    after, metric = session.evaluate("val")
    assert session.steps == 5 and math.isfinite(stats.loss_mean)
    assert math.isfinite(before) and math.isfinite(after) and math.isfinite(metric)
    assert math.isfinite(session.evaluate("test")[0])
    # the start is the kind's usual optimizer at its usual default and batch size: both start regimes agree
    assert task.default_hparams == task.sensible_hparams()
    assert (task.default_hparams.lr, task.default_hparams.weight_decay) == SENSIBLE_STARTS[task.optimizer]


@pytest.mark.parametrize("family", WORKLOAD_FAMILIES, ids=lambda f: f.name)
def test_each_workload_runs_an_env_episode_at_its_tiny_size(family):
    env = rlhpo.make_env(n_intervals=4)
    obs, info = env.reset(seed=0, options={"task": family(size="tiny").sample(0), "session_seed": 0})
    done = False
    while not done:
        obs, reward, term, trunc, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        assert np.isfinite(obs).all() and np.isfinite(reward)
        done = term or trunc
    assert info["examples"] == info["budget"]


@pytest.mark.parametrize("family", WORKLOAD_FAMILIES, ids=lambda f: f.name)
def test_default_size_is_of_realistic_length_and_sampling_is_deterministic(family):
    fam = family(size="tiny")
    a, b = fam.sample(3), fam.sample(3)
    assert a.name == b.name and torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)
    default = family.SIZES["default"]
    assert 1000 <= default.steps <= 10000
    assert family(budget_scale=0.5).budget() == default.steps * family.usual_batch_size
    assert family.SIZES["large"].steps >= default.steps


def test_the_size_knob_takes_a_name_or_a_size_object_and_names_what_is_allowed():
    assert WorkloadLM(size=LMSize(d_model=8, n_layers=1, n_heads=2, context=8, steps=10)).size.d_model == 8
    with pytest.raises(TaskError, match=r"workload_lm: size must be one of \['default', 'large', 'tiny'\] or a LMSize"):
        WorkloadLM(size="huge")
    with pytest.raises(TaskError, match="size.context must be an integer >= 1"):
        WorkloadLM(size=LMSize(context=0))


def test_the_language_model_is_split_by_package():
    task = WorkloadLM(size="tiny").sample(1)
    packages = [task.info["val_package"], task.info["test_package"]]
    assert len(set(packages)) == 2 and not set(packages) & set(task.info["train_packages"])
    x, y = task.train.x, task.train.y
    assert torch.equal(x[:, 1:], y[:, :-1])  # next-byte targets


def test_workload_groups_are_registered_and_outside_meta_training_and_the_short_splits():
    assert set(WORKLOADS_DEV) and set(WORKLOADS_FINAL) and not set(WORKLOADS_DEV) & set(WORKLOADS_FINAL)
    assert resolve_families("workloads") == list(WORKLOADS_DEV) + list(WORKLOADS_FINAL)
    assert len({FAMILIES[n].architecture for n in resolve_families("workloads")}) == 5  # five kinds
    for group in ("meta_train", "dev", "final", "near", "held_out"):
        assert not set(FAMILY_GROUPS[group]) & set(resolve_families("workloads")), group
    for name in resolve_families("workloads"):
        assert FAMILIES[name].novelty and FAMILIES[name].data_source
