"""Structured-config schemas for the ``python -m`` entry points.

Every Hydra group has a dataclass here (or in :mod:`rlhpo.envs.config` / :mod:`rlhpo.control.actions`),
registered with Hydra's ConfigStore, so a wrong type or an unknown key is an error before any
training starts. The library API takes these dataclasses as plain Python objects: no Hydra needed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from rlhpo.envs.config import EnvConfig
from rlhpo.errors import ConfigError, check_fields, check_seeds, is_int, is_number
from rlhpo.policy.legacy import REMOVED
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
    eval_families: list[str] = field(default_factory=lambda: ["dev"])  # never "final": the evaluation's split
    budget_scale: float = 0.5
    eval_task_seeds: list[int] = field(default_factory=lambda: [1000, 1001, 1002, 1003])

    def validate(self) -> "TasksConfig":
        for name in ("train_families", "eval_families"):
            try:
                setattr(self, name, resolve_families(_names(getattr(self, name), f"tasks.{name}")))
            except TaskError as e:
                raise ConfigError(f"tasks.{name}: {e}") from None
        check_fields(self, "tasks.", (("budget_scale", lambda v: is_number(v) and v > 0, "a finite number > 0"),))
        check_seeds("tasks.eval_task_seeds", self.eval_task_seeds, allow_empty=False)
        return self


def _names(value: Any, where: str) -> list[str]:
    """A list of family names (a single name is a list of one)."""
    if isinstance(value, str):
        return [value]
    if not hasattr(value, "__iter__") or any(not isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be a list of task family names, got {value!r}")
    return list(value)


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
        check_fields(self, "ppo.", (
            ("learning_rate clip_range max_grad_norm", lambda v: is_number(v) and v > 0, "a finite number > 0"),
            ("gamma gae_lambda", lambda v: is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
            ("n_steps n_epochs", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
            ("batch_size", lambda v: is_int(v) and v >= 2, "an integer >= 2"),  # SB3 normalises advantages per minibatch
            ("ent_coef vf_coef", lambda v: is_number(v) and v >= 0, "a finite number >= 0"),
            ("target_kl", lambda v: v is None or (is_number(v) and v > 0), "null or a finite number > 0"),
            ("normalize_obs normalize_reward", lambda v: isinstance(v, bool), "true or false"),
        ))
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
        arch = self.net_arch
        if isinstance(arch, (str, bytes)) or not hasattr(arch, "__iter__") or not list(arch) or any(
            not (is_int(w) and w >= 1) for w in arch
        ):
            raise ConfigError(f"policy.net_arch must be a non-empty list of positive integers, got {arch!r}")
        if not (is_int(self.lstm_hidden_size) and self.lstm_hidden_size >= 1):
            raise ConfigError(f"policy.lstm_hidden_size must be an integer >= 1, got {self.lstm_hidden_size!r}")
        return self


#: vector-environment kinds of ``vec_env.kind``
VEC_ENV_KINDS: tuple[str, ...] = ("dummy", "subproc", "batched", "ray")
_RAY_ADDRESS = re.compile(r"(ray://)?[A-Za-z0-9_.\-]+:\d{1,5}")


@dataclass
class VecEnvConfig:
    """How environments run in parallel.

    :param kind: ``dummy`` (in process, one after another), ``subproc`` (one process per env),
        ``batched`` (in process; the target networks of a group train as one batched
        computation, see :mod:`rlhpo.envs.vec.batched`) or ``ray`` (one Ray actor per env:
        :class:`rlhpo.envs.vec.ray.RayVecEnv`)
    :param n_envs: number of environments
    :param start_method: multiprocessing start method for ``subproc``
    :param group_size: ``batched`` only: environments that share a task per episode (default:
        all ``n_envs``); must divide ``n_envs``
    :param max_restarts: ``subproc`` and ``ray``: dead worker processes / environment actors
        replaced (their episodes discarded) in all before meta-training stops with an error
    :param address: ``ray``: the Ray cluster to join (``auto``, ``host:port``,
        ``ray://host:port``); null starts a local Ray instance
    :param num_cpus_per_env: ``ray``: logical CPUs each environment actor reserves (fractions allowed)
    :param num_gpus_per_env: ``ray``: GPUs each actor reserves (a fraction below 1 shares a GPU)
    :param start_timeout_s: ``ray``: seconds to wait for the actors to be placed and started
    """

    kind: str = "subproc"
    n_envs: int = 4
    start_method: str = "forkserver"
    group_size: Optional[int] = None
    max_restarts: int = 10
    address: Optional[str] = None
    num_cpus_per_env: float = 1.0
    num_gpus_per_env: float = 0.0
    start_timeout_s: float = 300.0

    def validate(self) -> "VecEnvConfig":
        import multiprocessing as mp

        allowed = [m for m in ("fork", "forkserver", "spawn") if m in mp.get_all_start_methods()]
        check_fields(self, "vec_env.", (
            ("kind", lambda v: v in VEC_ENV_KINDS, f"one of {list(VEC_ENV_KINDS)}"),
            ("n_envs", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
            ("start_method", lambda v: v in allowed, f"one of {allowed} on this platform"),
            ("max_restarts", lambda v: is_int(v) and v >= 0, "an integer >= 0"),
        ))
        if self.group_size is not None:
            if self.kind != "batched":
                raise ConfigError(f"vec_env.group_size is only used with vec_env.kind=batched, not {self.kind!r}")
            g = self.group_size
            if not (is_int(g) and 1 <= g <= self.n_envs and self.n_envs % g == 0):
                raise ConfigError(
                    f"vec_env.group_size must be null or an integer that divides vec_env.n_envs={self.n_envs}, got {g!r}"
                )
        self._validate_ray()
        return self

    def _validate_ray(self) -> None:
        defaults = VecEnvConfig()
        if self.kind != "ray":
            for name in ("address", "num_cpus_per_env", "num_gpus_per_env", "start_timeout_s"):
                if getattr(self, name) != getattr(defaults, name):
                    raise ConfigError(f"vec_env.{name} is only used with vec_env.kind=ray (vec_env=ray), not {self.kind!r}")
            return
        a = self.address
        if a is not None and not (isinstance(a, str) and (a in ("auto", "local") or _RAY_ADDRESS.fullmatch(a))):
            raise ConfigError(
                f"vec_env.address must be null (start a local Ray), 'auto', 'host:port' or 'ray://host:port', got {a!r}"
            )
        for name in ("num_cpus_per_env", "num_gpus_per_env"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0):
                raise ConfigError(f"vec_env.{name} must be a finite number >= 0, got {v!r}")
            if v != 0 and round(v, 4) == 0:
                raise ConfigError(f"vec_env.{name}: Ray resolves fractions to 0.0001, got {v!r}")
        g = self.num_gpus_per_env
        if g > 1 and g != int(g):
            raise ConfigError(f"vec_env.num_gpus_per_env above 1 must be a whole number (Ray's rule for GPUs), got {g!r}")
        if self.num_cpus_per_env == 0 and g == 0:
            raise ConfigError(
                "vec_env.num_cpus_per_env and vec_env.num_gpus_per_env are both 0: the actors would reserve "
                "nothing and Ray would pack any number of them onto one node; give each env a share of a CPU"
            )
        check_fields(self, "vec_env.", (("start_timeout_s", lambda v: is_number(v) and v > 0, "a finite number > 0"),))

    def ray_options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`rlhpo.envs.vec.ray.RayVecEnv` (besides the factories)."""
        return dict(
            num_cpus=float(self.num_cpus_per_env),
            num_gpus=float(self.num_gpus_per_env),
            address=self.address,
            max_restarts=self.max_restarts,
            start_timeout_s=float(self.start_timeout_s),
        )


@dataclass
class TrainConfig:
    """``python -m rlhpo.train``: meta-train a controller.

    The defaults (here and in every group's dataclass) are the shipped policy's recipe
    (``rlhpo/pretrained/default``: controller v3, 102,400 environment steps, the meta-training
    families at half their budget; its ``best/`` checkpoint at 80,000 ships); the YAML files under
    ``conf/`` only override.

    :param seed: fixes PPO, the environments' task sampling and the target networks
    :param total_timesteps: environment steps (control intervals) to meta-train for
    :param checkpoint_every: environment steps between checkpoints
    :param keep_checkpoints: how many recent checkpoints to keep
    :param eval_every: environment steps between held-out evaluations (0: never)
    :param resume: a run directory to continue from its last good checkpoint
    :param torch_threads: threads per process for the target networks
    :param progress_bar: show a progress bar on the terminal

    Where the target networks train is ``env.device``; the PPO policy, a small MLP, stays on the CPU.
    """

    seed: int = 0
    total_timesteps: int = 102_400
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
        if not (is_int(self.seed) and 0 <= self.seed < 2**32):
            raise ConfigError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")
        for name in ("total_timesteps", "checkpoint_every", "keep_checkpoints", "torch_threads"):
            v = getattr(self, name)
            if not (is_int(v) and v >= 1):
                raise ConfigError(f"{name} must be an integer >= 1, got {v!r}")
        if not (is_int(self.eval_every) and self.eval_every >= 0):
            raise ConfigError(f"eval_every must be an integer >= 0, got {self.eval_every!r}")
        if self.resume is not None and not (isinstance(self.resume, str) and self.resume):
            raise ConfigError(f"resume must be null or the path of a run directory, got {self.resume!r}")
        if not isinstance(self.progress_bar, bool):
            raise ConfigError(f"progress_bar must be true or false, got {self.progress_bar!r}")
        for name in ("tasks", "env", "ppo", "policy", "vec_env"):
            if not hasattr(getattr(self, name), "validate"):
                raise ConfigError(f"{name} must be a config group, got {getattr(self, name)!r}")
        self.tasks.validate()
        # meta-training sets the env's families and budget scale from tasks.*: a different value
        # set on env.* would be silently replaced, so it is an error (the defaults are fine)
        defaults = EnvConfig()
        self.env.validate()
        if self.env.families not in (resolve_families(defaults.families), self.tasks.train_families):
            raise ConfigError(
                f"env.families={self.env.families} is set from tasks.train_families in meta-training; "
                "set tasks.train_families instead"
            )
        if self.env.budget_scale not in (defaults.budget_scale, self.tasks.budget_scale):
            raise ConfigError(
                f"env.budget_scale={self.env.budget_scale} is set from tasks.budget_scale in meta-training; "
                "set tasks.budget_scale instead"
            )
        self.env.families = list(self.tasks.train_families)
        self.env.budget_scale = self.tasks.budget_scale
        self.vec_env.validate()
        self.ppo.validate(self.vec_env.n_envs)
        self.policy.validate()
        return self


def override_error(overrides: list[str]) -> Optional[str]:
    """The one-line error for the first command-line override that sets a removed setting or
    names an unknown vector env (Hydra's own errors name no replacement, or take many lines).
    The removed settings: :data:`rlhpo.policy.legacy.REMOVED`."""
    for arg in overrides:
        if "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+~")
        if key in REMOVED:
            return f"{key} was removed: {REMOVED[key]}"
        if key == "vec_env" and value not in VEC_ENV_KINDS:
            return f"vec_env={value}: unknown vector env; allowed: {', '.join(VEC_ENV_KINDS)}"
    return None


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (the YAML files in conf/ extend them)."""
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="tasks", name="tasks_schema", node=TasksConfig)
    cs.store(group="env", name="env_schema", node=EnvConfig)
    cs.store(group="ppo", name="ppo_schema", node=PPOConfig)
    cs.store(group="policy", name="policy_schema", node=PolicyConfig)
    cs.store(group="vec_env", name="vec_env_schema", node=VecEnvConfig)
