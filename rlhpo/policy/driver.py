"""Running a trained policy: normalise an observation, predict an action, keep LSTM state.

Used by the controller, the evaluation during meta-training and ``rlhpo.evaluate``.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from rlhpo.policy.artifact import ObsNormalization, PolicyArtifact


class PolicyDriver:
    """Turns observations into actions for one run at a time (call :meth:`reset` per run)."""

    def __init__(self, model: Any, normalization: ObsNormalization, recurrent: bool = False, deterministic: bool = True) -> None:
        self.model = model
        self.normalization = normalization
        self.recurrent = recurrent
        self.deterministic = deterministic  # the policy's mean action, else a sampled one
        self.reset()

    @classmethod
    def from_artifact(cls, artifact: PolicyArtifact, deterministic: bool = True) -> "PolicyDriver":
        """The driver of ``artifact``'s policy; the rule's (:attr:`PolicyArtifact.rule`): every action zero."""
        if getattr(artifact, "rule", False):
            return NullDriver(len(artifact.spec.action_config().enabled))
        return cls(artifact.model, artifact.normalization, artifact.recurrent, deterministic)

    def reset(self) -> None:
        self._state: Optional[Any] = None
        self._episode_start = np.ones((1,), dtype=bool)

    def act(self, obs: np.ndarray, deterministic: Optional[bool] = None) -> np.ndarray:
        """The action for ``obs`` (``deterministic``: None, the driver's own setting)."""
        deterministic = self.deterministic if deterministic is None else deterministic
        x = self.normalization(np.asarray(obs, dtype=np.float64))[None]
        if self.recurrent:
            action, self._state = self.model.predict(
                x, state=self._state, episode_start=self._episode_start, deterministic=deterministic
            )
            self._episode_start = np.zeros((1,), dtype=bool)
        else:
            action, _ = self.model.predict(x, deterministic=deterministic)
        return np.asarray(action, dtype=np.float32).reshape(-1)

    def state_dict(self) -> dict:
        return {"state": self._state, "episode_start": self._episode_start.copy()}

    def load_state_dict(self, state: dict) -> None:
        self._state = state["state"]
        self._episode_start = np.asarray(state["episode_start"], dtype=bool)


class NullDriver(PolicyDriver):
    """Every action zero: a policy's decision path (prior, base schedule, guard) without the
    policy. The evaluation's ``prior_only`` row; the reference run of the environment's reward."""

    def __init__(self, n_actions: int) -> None:
        self.n_actions = n_actions
        self.recurrent = False
        self.reset()

    def act(self, obs: np.ndarray, deterministic: Optional[bool] = None) -> np.ndarray:
        return np.zeros(self.n_actions, dtype=np.float32)
