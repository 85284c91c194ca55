"""Structured-config schemas for the ``python -m`` entry points.

Every Hydra group has a dataclass here (or in :mod:`rlhpo.envs.config` / :mod:`rlhpo.actions`),
registered with Hydra's ConfigStore, so a wrong type or an unknown key is an error before any
training starts. The library API takes these dataclasses as plain Python objects: no Hydra needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from rlhpo.actions import ConfigError
from rlhpo.envs.config import EnvConfig
from rlhpo.tasks import TaskError, resolve_families


@dataclass
class TasksConfig:
    """The task suite.

    :param train_families: families (or groups) meta-training samples from
    :param eval_families: families the periodic evaluation runs on (held out from training)
    :param budget_scale: multiplies every task's example budget
    :param eval_task_seeds: the task seeds of the evaluation set (the same tasks every round)
    """

    train_families: list[str] = field(default_factory=lambda: ["meta_train"])
    eval_families: list[str] = field(default_factory=lambda: ["held_out"])
    budget_scale: float = 1.0
    eval_task_seeds: list[int] = field(default_factory=lambda: [1000, 1001])

    def validate(self) -> "TasksConfig":
        for name in ("train_families", "eval_families"):
            try:
                setattr(self, name, resolve_families(list(getattr(self, name))))
            except TaskError as e:
                raise ConfigError(f"tasks.{name}: {e}") from None
        if not (math.isfinite(self.budget_scale) and self.budget_scale > 0):
            raise ConfigError(f"tasks.budget_scale must be a finite number > 0, got {self.budget_scale!r}")
        if not self.eval_task_seeds:
            raise ConfigError("tasks.eval_task_seeds must list at least one seed")
        return self


@dataclass
class PPOConfig:
    """stable-baselines3 PPO hyperparameters (see ``stable_baselines3.PPO``)."""

    learning_rate: float = 3e-4
    n_steps: int = 256
    batch_size: int = 128
    n_epochs: int = 10
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: Optional[float] = None
    normalize_obs: bool = True
    normalize_reward: bool = True

    def validate(self, n_envs: int) -> "PPOConfig":
        for name in ("learning_rate", "clip_range", "max_grad_norm"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ConfigError(f"ppo.{name} must be a finite number > 0, got {v!r}")
        for name in ("gamma", "gae_lambda"):
            v = getattr(self, name)
            if not (0 < v <= 1):
                raise ConfigError(f"ppo.{name} must be in (0, 1], got {v!r}")
        for name in ("n_steps", "batch_size", "n_epochs"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ConfigError(f"ppo.{name} must be an integer >= 1, got {v!r}")
        if self.ent_coef < 0 or self.vf_coef < 0:
            raise ConfigError("ppo.ent_coef and ppo.vf_coef must be >= 0")
        if (self.n_steps * n_envs) % self.batch_size != 0:
            raise ConfigError(
                f"ppo.n_steps * vec_env.n_envs ({self.n_steps} * {n_envs} = {self.n_steps * n_envs}) must be "
                f"divisible by ppo.batch_size ({self.batch_size})"
            )
        return self


@dataclass
class PolicyConfig:
    """The policy network.

    :param name: ``mlp`` (PPO, MlpPolicy) or ``recurrent`` (sb3-contrib RecurrentPPO, LSTM)
    :param net_arch: hidden layer sizes of the policy and value networks
    :param lstm_hidden_size: LSTM size for ``recurrent``
    """

    name: str = "mlp"
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    lstm_hidden_size: int = 64

    def validate(self) -> "PolicyConfig":
        if self.name not in ("mlp", "recurrent"):
            raise ConfigError(f"policy.name must be 'mlp' or 'recurrent', got {self.name!r}")
        if not self.net_arch or any((not isinstance(w, int)) or w < 1 for w in self.net_arch):
            raise ConfigError(f"policy.net_arch must be a list of positive integers, got {list(self.net_arch)!r}")
        return self


@dataclass
class VecEnvConfig:
    """How environments run in parallel.

    :param kind: ``dummy`` (in process) or ``subproc`` (one process per env)
    :param n_envs: number of environments
    :param start_method: multiprocessing start method for ``subproc``
    :param max_restarts: ``subproc`` restarts a worker process that dies; this many times in
        all, then meta-training stops with an error
    """

    kind: str = "subproc"
    n_envs: int = 4
    start_method: str = "forkserver"
    max_restarts: int = 10

    def validate(self) -> "VecEnvConfig":
        if self.kind not in ("dummy", "subproc"):
            raise ConfigError(f"vec_env.kind must be 'dummy' or 'subproc', got {self.kind!r}")
        if not (isinstance(self.n_envs, int) and self.n_envs >= 1):
            raise ConfigError(f"vec_env.n_envs must be an integer >= 1, got {self.n_envs!r}")
        if self.start_method not in ("fork", "forkserver", "spawn"):
            raise ConfigError(f"vec_env.start_method must be fork, forkserver or spawn, got {self.start_method!r}")
        if not (isinstance(self.max_restarts, int) and self.max_restarts >= 0):
            raise ConfigError(f"vec_env.max_restarts must be an integer >= 0, got {self.max_restarts!r}")
        return self


@dataclass
class TrainConfig:
    """``python -m rlhpo.train``: meta-train a controller.

    :param seed: fixes PPO, the environments' task sampling and the target networks
    :param total_timesteps: environment steps (control intervals) to meta-train for
    :param checkpoint_every: environment steps between checkpoints
    :param keep_checkpoints: how many recent checkpoints to keep
    :param eval_every: environment steps between held-out evaluations (0: never)
    :param resume: a run directory to continue from its last good checkpoint
    :param torch_threads: threads per process for the target networks
    :param progress_bar: show a progress bar on the terminal
    """

    seed: int = 0
    total_timesteps: int = 100_000
    checkpoint_every: int = 10_000
    keep_checkpoints: int = 3
    eval_every: int = 20_000
    resume: Optional[str] = None
    torch_threads: int = 1
    progress_bar: bool = True
    tasks: TasksConfig = field(default_factory=TasksConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    vec_env: VecEnvConfig = field(default_factory=VecEnvConfig)

    def validate(self) -> "TrainConfig":
        for name in ("total_timesteps", "checkpoint_every", "keep_checkpoints", "torch_threads"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
        if not (isinstance(self.eval_every, int) and self.eval_every >= 0):
            raise ConfigError(f"eval_every must be an integer >= 0, got {self.eval_every!r}")
        self.tasks.validate()
        self.env.families = list(self.tasks.train_families)
        self.env.budget_scale = self.tasks.budget_scale
        self.env.validate()
        self.vec_env.validate()
        self.ppo.validate(self.vec_env.n_envs)
        self.policy.validate()
        return self


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (the YAML files in conf/ extend them)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="tasks", name="tasks_schema", node=TasksConfig)
    cs.store(group="env", name="env_schema", node=EnvConfig)
    cs.store(group="ppo", name="ppo_schema", node=PPOConfig)
    cs.store(group="policy", name="policy_schema", node=PolicyConfig)
    cs.store(group="vec_env", name="vec_env_schema", node=VecEnvConfig)


def to_dataclass(cfg: Any, schema: type) -> Any:
    """A Hydra DictConfig (already typed by ``schema``) as the plain dataclass."""
    from omegaconf import OmegaConf

    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj, schema):
        raise ConfigError(f"expected a {schema.__name__} config, got {type(obj).__name__}")
    return obj
