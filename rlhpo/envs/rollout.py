"""Run one episode of the environment with a given action function (a policy, or a constant)."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from rlhpo.envs.hyperparam_env import HyperparamControlEnv
from rlhpo.tasks import Task

ActFn = Callable[[np.ndarray], np.ndarray]


def rollout(env: HyperparamControlEnv, task: Task, act: Optional[ActFn] = None, seed: int = 0) -> list[dict]:
    """The infos of every interval (the reset one first). ``act=None`` keeps the task's starting
    hyperparameters constant (the "default constant" baseline)."""
    obs, info = env.reset(seed=seed, options={"task": task})
    infos = [info]
    zero = np.zeros(env.action_space.shape, dtype=np.float32)
    while True:
        action = zero if act is None else act(obs)
        obs, _, terminated, truncated, info = env.step(action)
        infos.append(info)
        if terminated or truncated:
            return infos


def final_val_loss(infos: list[dict]) -> float:
    """The last validation loss of a run; a diverged run counts as infinitely bad."""
    last = infos[-1]
    return float("inf") if last["diverged"] else float(last["val_loss"])
