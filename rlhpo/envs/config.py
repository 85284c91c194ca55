"""The environment's configuration: a plain dataclass (Hydra's ``env`` group uses it as schema)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from rlhpo.actions import ActionConfig, ConfigError
from rlhpo.tasks import TaskError, resolve_families


@dataclass
class EnvConfig:
    """Configuration of :class:`~rlhpo.envs.HyperparamControlEnv`.

    :param families: task families (or groups "meta_train", "held_out", "all") to sample from
    :param n_intervals: control intervals per episode; the budget is split evenly between them
    :param budget_scale: multiplies every task's example budget (tests use small values)
    :param budget_examples: if set, overrides every task's example budget
    :param actions: which hyperparameters are controlled, and their bounds
    :param divergence_penalty: reward on the step that diverges (non-finite or exploding loss)
    :param divergence_factor: a validation loss above this multiple of the reference is divergence
    :param reward_clip: per-step rewards are clipped to [-reward_clip, reward_clip]
    :param task_seeds: a fixed instance set of task seeds (DACBench style); empty: any seed
    :param device: where target networks train ("cpu", "cuda", "cuda:N")
    """

    families: list[str] = field(default_factory=lambda: ["meta_train"])
    n_intervals: int = 20
    budget_scale: float = 1.0
    budget_examples: Optional[int] = None
    actions: ActionConfig = field(default_factory=ActionConfig)
    divergence_penalty: float = 5.0
    divergence_factor: float = 100.0
    reward_clip: float = 5.0
    task_seeds: list[int] = field(default_factory=list)
    device: str = "cpu"

    def validate(self) -> "EnvConfig":
        try:
            self.families = resolve_families(list(self.families))
        except TaskError as e:
            raise ConfigError(f"env.families: {e}") from None
        if not isinstance(self.n_intervals, int) or self.n_intervals < 1:
            raise ConfigError(f"env.n_intervals must be an integer >= 1, got {self.n_intervals!r}")
        if not (isinstance(self.budget_scale, (int, float)) and math.isfinite(self.budget_scale) and self.budget_scale > 0):
            raise ConfigError(f"env.budget_scale must be a finite number > 0, got {self.budget_scale!r}")
        if self.budget_examples is not None and (not isinstance(self.budget_examples, int) or self.budget_examples <= 0):
            raise ConfigError(f"env.budget_examples must be null or an integer > 0, got {self.budget_examples!r}")
        for name in ("divergence_penalty", "reward_clip"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"env.{name} must be a finite number >= 0, got {v!r}")
        if not (isinstance(self.divergence_factor, (int, float)) and self.divergence_factor > 1):
            raise ConfigError(f"env.divergence_factor must be a number > 1, got {self.divergence_factor!r}")
        if not (self.device == "cpu" or str(self.device).startswith("cuda")):
            raise ConfigError(f"env.device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if str(self.device).startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(f"env.device={self.device!r} but torch sees no CUDA device; use device=cpu")
        self.actions.validate("env.actions")
        return self
