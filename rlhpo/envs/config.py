"""The environment's configuration: a plain dataclass (Hydra's ``env`` group uses it as schema)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from rlhpo.control.actions import ActionConfig
from rlhpo.control.guard import GuardConfig
from rlhpo.errors import ConfigError, check_device, is_int, is_number
from rlhpo.tasks import TaskError, resolve_families


@dataclass
class EnvConfig:
    """Configuration of :class:`~rlhpo.envs.HyperparamControlEnv`.

    :param families: task families (or groups "meta_train", "held_out", "all") to sample from
    :param n_intervals: control intervals per episode; the budget is split evenly between them
    :param budget_scale: multiplies every task's example budget (tests use small values)
    :param budget_examples: if set, overrides every task's example budget
    :param actions: which hyperparameters are controlled, and their bounds
    :param divergence_penalty: reward on a step that diverges (the guard's rule)
    :param guard: the divergence rule and the rollback (:class:`~rlhpo.control.guard.GuardConfig`);
        with ``guard.enabled`` false a diverged episode ends instead
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
    guard: GuardConfig = field(default_factory=GuardConfig)
    reward_clip: float = 5.0
    task_seeds: list[int] = field(default_factory=list)
    device: str = "cpu"

    def validate(self) -> "EnvConfig":
        fams = self.families
        if isinstance(fams, str):
            fams = [fams]
        if not hasattr(fams, "__iter__") or any(not isinstance(f, str) for f in fams):
            raise ConfigError(f"env.families must be a list of task family names, got {self.families!r}")
        try:
            self.families = resolve_families(list(fams))
        except TaskError as e:
            raise ConfigError(f"env.families: {e}") from None
        if not is_int(self.n_intervals) or self.n_intervals < 1:
            raise ConfigError(f"env.n_intervals must be an integer >= 1, got {self.n_intervals!r}")
        if not (is_number(self.budget_scale) and self.budget_scale > 0):
            raise ConfigError(f"env.budget_scale must be a finite number > 0, got {self.budget_scale!r}")
        if self.budget_examples is not None and (not is_int(self.budget_examples) or self.budget_examples <= 0):
            raise ConfigError(f"env.budget_examples must be null or an integer > 0, got {self.budget_examples!r}")
        for name in ("divergence_penalty", "reward_clip"):
            v = getattr(self, name)
            if not (is_number(v) and v >= 0):
                raise ConfigError(f"env.{name} must be a finite number >= 0, got {v!r}")
        if not isinstance(self.guard, GuardConfig):
            raise ConfigError(f"env.guard must be a guard config (enabled, factor, lr_cut, ...), got {self.guard!r}")
        self.guard.validate("env.guard")
        seeds = self.task_seeds
        if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__") or any(
            not (is_int(x) and x >= 0) for x in seeds
        ):
            raise ConfigError(f"env.task_seeds must be a list of integers >= 0 (empty: any seed), got {seeds!r}")
        check_device(self.device, "env.device")
        if not isinstance(self.actions, ActionConfig):
            raise ConfigError(f"env.actions must be an ActionConfig (lr, batch_size, weight_decay), got {self.actions!r}")
        self.actions.validate("env.actions")
        return self
