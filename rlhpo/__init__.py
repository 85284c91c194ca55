"""rlhpo: a learned controller of learning rate, batch size and weight decay."""

from __future__ import annotations

from rlhpo import recommend  # the warm start: a callable module, rlhpo.recommend(model, data, ...)
from rlhpo.control.actions import ActionConfig, ControlConfig
from rlhpo.controller import Controller
from rlhpo.envs import ENV_ID, EnvConfig, HyperparamControlEnv, make_env
from rlhpo.errors import ConfigError, ControllerError
from rlhpo.recommend import Recommendation
from rlhpo.tasks import Hyperparams, Split, Task, TaskError, TaskFamily, register_family
from rlhpo.training.sampler import MutableBatchSampler
from rlhpo.training.session import TrainingSession

__version__ = "0.1.0"

__all__ = [
    "ENV_ID",
    "ActionConfig",
    "ConfigError",
    "Controller",
    "ControllerError",
    "ControlConfig",
    "EnvConfig",
    "HyperparamControlEnv",
    "Hyperparams",
    "MutableBatchSampler",
    "Recommendation",
    "Split",
    "Task",
    "TaskError",
    "TaskFamily",
    "TrainingSession",
    "make_env",
    "recommend",
    "register_family",
]
