"""The two policy algorithms rlhpo meta-trains, by the name a config or an artifact uses."""

from __future__ import annotations

from typing import Any

#: artifact name -> (module, class, SB3 policy alias); ``policy.name`` in the config picks one
ALGORITHMS: dict[str, tuple[str, str, str]] = {
    "PPO": ("stable_baselines3", "PPO", "MlpPolicy"),
    "RecurrentPPO": ("sb3_contrib", "RecurrentPPO", "MlpLstmPolicy"),
}
#: the config's ``policy.name`` -> the artifact's algorithm name
BY_POLICY_NAME = {"mlp": "PPO", "recurrent": "RecurrentPPO"}


def algorithm(name: str) -> tuple[Any, str]:
    """The algorithm class and its policy alias for ``name`` (``"PPO"``/``"RecurrentPPO"``, or the
    config's ``"mlp"``/``"recurrent"``); imported on demand (sb3-contrib only for the LSTM)."""
    import importlib

    module, cls, alias = ALGORITHMS[BY_POLICY_NAME.get(name, name)]
    return getattr(importlib.import_module(module), cls), alias
