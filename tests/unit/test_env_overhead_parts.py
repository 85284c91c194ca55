"""The environment's speed-ups change nothing: cached task checks, lighter probe steps, the
benchmark's like-for-like loops."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import make_tiny_task

import rlhpo
from bench.env_overhead import measure, plain_loop
from rlhpo.tasks import Hyperparams, Split, Task, TaskError
from rlhpo.training.session import TrainingSession


@pytest.fixture
def validations(monkeypatch):
    """Counts the calls of Task.validate."""
    calls = []
    original = Task.validate

    def counted(self):
        calls.append(self.name)
        return original(self)

    monkeypatch.setattr(Task, "validate", counted)
    return calls


def test_a_task_is_checked_again_only_when_something_it_checks_changed(validations):
    task = make_tiny_task()
    TrainingSession(task, seed=0)
    TrainingSession(task, seed=1)
    assert len(validations) == 1
    task.loss_fn = lambda out, y: torch.nn.functional.cross_entropy(out, y)  # a new field value
    TrainingSession(task)
    task.val = Split(task.val.x.clone(), task.val.y.clone())  # a new split
    TrainingSession(task)
    task.eval_max_examples = 7
    TrainingSession(task)
    assert len(validations) == 4
    task.train.x[3, 1] = float("nan")  # an in-place write: the tensor's version moves
    with pytest.raises(TaskError, match=r"train.x has 1 non-finite values"):
        TrainingSession(task)
    twin = dataclasses.replace(task, train=Split(task.train.x.nan_to_num(), task.train.y))
    TrainingSession(twin)  # another task object: checked on its own
    assert len(validations) == 6


def test_a_sampled_task_is_checked_once(validations):
    # random starts only: a sensible start is a new task object (new hyperparameters), checked once more
    env = rlhpo.make_env(n_intervals=2, families=["noisy_quadratic"], budget_scale=0.01, sensible_fraction=0.0)
    env.reset(seed=0)
    assert len(validations) == 1  # by TaskFamily.sample; the session and the reference run trust it


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_light_probe_steps_give_the_same_statistics(optimizer):
    """Without hooks the session skips what a following probe step overwrites; with a (no-op)
    hook it measures every probe step in full: the same statistics, to the bit."""
    task = make_tiny_task(optimizer=optimizer, budget=600, batch_size=7, lr=0.05)
    light, full = TrainingSession(task, seed=3), TrainingSession(task, seed=3)
    cosines = []
    for k, target in enumerate([40, 48, 95, 230, 400, 600]):  # 48: an interval of one step
        if k == 3:
            for s in (light, full):
                s.set_hparams(Hyperparams(0.02, 5, 1e-3))
        a = light.train_until(target)
        b = full.train_until(target, after_step=lambda session: None)
        assert dataclasses.astuple(a) == pytest.approx(dataclasses.astuple(b), rel=0, abs=0, nan_ok=True)
        assert a.steps > 0
        cosines.append(a.update_cosine)
    assert any(c != 0.0 for c in cosines)
    assert light.evaluate("val") == full.evaluate("val")


def test_plain_loop_trains_the_given_examples_and_the_bench_compares_like_with_like():
    task = make_tiny_task(budget=200, batch_size=16)
    steps = []

    class Count:
        def __init__(self, optimizer):
            pass

        def step(self, loss):
            steps.append(1)

    plain_loop(task, 0, controller_factory=Count, n_examples=50)
    assert len(steps) == 4  # 16 + 16 + 16 + 2: the last batch is cut, as the environment's
    r = measure(task, n_intervals=4, repeats=1)
    assert r["examples_trained"] == r["examples"] == 200 and r["env_s"] > 0 and r["plain_val_s"] > 0
