"""rlhpo: a learned controller of learning rate, batch size and weight decay.

``import rlhpo`` and applying a controller need torch and numpy only: the environment (gymnasium),
the warm start, the task families and the training session are imported when first used
(``rlhpo.make_env``, ``rlhpo.recommend``, ``rlhpo.Task``, ``rlhpo.TrainingSession``).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from rlhpo.control.actions import ActionConfig, ControlConfig
from rlhpo.controller import Controller
from rlhpo.errors import ConfigError, ControllerError, TaskError
from rlhpo.training.sampler import MutableBatchSampler
from rlhpo.types import Hyperparams, Split


class _FallbackHandler(logging.StreamHandler):
    """Prints rlhpo's lines (the Controller's start line and run summary) to stderr when the
    application configured no logging; an application that did gets them through its own handlers.
    Quiet: ``logging.getLogger("rlhpo").setLevel(logging.WARNING)``."""

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


_logger = logging.getLogger("rlhpo")
if not any(isinstance(h, _FallbackHandler) for h in _logger.handlers):
    _handler = _FallbackHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    _logger.addHandler(_handler)
if _logger.level == logging.NOTSET:
    _logger.setLevel(logging.INFO)

#: names imported on first use: the module that defines each
_LAZY = {
    "ENV_ID": "rlhpo.envs", "EnvConfig": "rlhpo.envs", "HyperparamControlEnv": "rlhpo.envs", "make_env": "rlhpo.envs",
    "Recommendation": "rlhpo.recommend", "Task": "rlhpo.tasks", "TaskFamily": "rlhpo.tasks", "register_family": "rlhpo.tasks",
    "TrainingSession": "rlhpo.training.session",
}


def __getattr__(name: str) -> Any:
    if name == "recommend":  # the warm start: a callable module, rlhpo.recommend(model, data, ...)
        return importlib.import_module("rlhpo.recommend")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rlhpo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | {"recommend"})

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
