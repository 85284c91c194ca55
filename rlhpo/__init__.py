"""rlhpo: a learned controller of learning rate, batch size and weight decay."""

from __future__ import annotations

from rlhpo.actions import ActionConfig, ConfigError, ControlConfig
from rlhpo.controller import Controller, ControllerError
from rlhpo.envs import ENV_ID, EnvConfig, HyperparamControlEnv, make_env
from rlhpo.session import MutableBatchSampler, TrainingSession
from rlhpo.tasks import Hyperparams, Split, Task, TaskError, TaskFamily, register_family

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
    "Split",
    "Task",
    "TaskError",
    "TaskFamily",
    "TrainingSession",
    "make_env",
    "register_family",
]
