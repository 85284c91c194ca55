"""The training-control environment, registered with Gymnasium as ``rlhpo/HyperparamControl-v0``."""

from __future__ import annotations

from typing import Any, Optional

import gymnasium as gym

from rlhpo.envs.config import EnvConfig
from rlhpo.envs.hyperparam_env import HyperparamControlEnv

ENV_ID = "rlhpo/HyperparamControl-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="rlhpo.envs.hyperparam_env:HyperparamControlEnv")


def make_env(config: Optional[EnvConfig] = None, **overrides: Any) -> HyperparamControlEnv:
    """Build the environment from an :class:`EnvConfig` and/or keyword overrides of its fields."""
    return HyperparamControlEnv(config, **overrides)


__all__ = ["ENV_ID", "EnvConfig", "HyperparamControlEnv", "make_env"]
