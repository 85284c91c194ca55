"""Bad configuration raises a clear error naming the field and what is allowed."""

from __future__ import annotations

import pytest

import rlhpo
from rlhpo.actions import ConfigError
from rlhpo.envs import EnvConfig
from rlhpo.tasks import TaskError

from conftest import make_tiny_task


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        (dict(budget_examples=-5), r"env\.budget_examples must be null or an integer > 0"),
        (dict(budget_scale=0.0), r"env\.budget_scale must be a finite number > 0"),
        (dict(families=["imagenet"]), r"unknown task family 'imagenet'; allowed: .*digits_mlp"),
        (dict(n_intervals=0), r"env\.n_intervals must be an integer >= 1"),
        (dict(device="tpu"), r"env\.device must be 'cpu', 'cuda'"),
        (dict(divergence_factor=0.5), r"env\.divergence_factor must be a number > 1"),
    ],
)
def test_bad_env_config(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        rlhpo.make_env(**overrides)


def test_inverted_bounds():
    cfg = EnvConfig()
    cfg.actions.lr.min, cfg.actions.lr.max = 1.0, 1e-3
    with pytest.raises(ConfigError, match=r"env\.actions\.lr: min \(1\.0\) must be below max \(0\.001\)"):
        rlhpo.make_env(cfg)


def test_all_controls_off():
    cfg = EnvConfig()
    for c in (cfg.actions.lr, cfg.actions.batch_size, cfg.actions.weight_decay):
        c.enabled = False
    with pytest.raises(ConfigError, match="at least one of lr, batch_size, weight_decay"):
        rlhpo.make_env(cfg)


def test_unknown_override_field():
    with pytest.raises(TypeError, match="unknown EnvConfig field 'budjet'"):
        rlhpo.make_env(budjet=3)


def test_bad_task_is_named():
    task = make_tiny_task(budget=-1)
    with pytest.raises(TaskError, match="task 'tiny-0': budget_examples must be an integer > 0"):
        task.validate()
    task = make_tiny_task(lr=-1.0)
    with pytest.raises(TaskError, match=r"lr must be a finite number > 0"):
        task.validate()
