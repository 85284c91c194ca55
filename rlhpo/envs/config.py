"""The environment's configuration: a plain dataclass (Hydra's ``env`` group uses it as schema)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from rlhpo.control.actions import ActionConfig
from rlhpo.control.decision import BASE_SCHEDULES
from rlhpo.control.features import FEATURE_SETS, FEATURE_VERSION
from rlhpo.control.guard import GuardConfig
from rlhpo.control.prior import PRIORS
from rlhpo.errors import ConfigError, check_device, is_int, is_number
from rlhpo.tasks import TaskError, resolve_families

#: the environment's rewards (see :class:`EnvConfig`)
REWARDS: tuple[str, ...] = ("delta", "reference")


@dataclass
class EnvConfig:
    """Configuration of :class:`~rlhpo.envs.HyperparamControlEnv`.

    The defaults are the shipped recipe (the environment ``rlhpo/pretrained/default`` was
    meta-trained in, controller v3): ``EnvConfig()``, ``rlhpo.make_env()``,
    ``gymnasium.make("rlhpo/HyperparamControl-v0")`` and ``python -m rlhpo.train`` all build it;
    the YAML files under ``conf/`` only override. Earlier policies' environments are in their
    ``spec.json`` (``rlhpo/pretrained/v1``, ``v2``): v1 had ``reward="delta"``,
    ``base_schedule="none"``, ``prior="user"``, no trust region and ``feature_version=1``.

    :param families: task families (or groups "meta_train", "held_out", "all") to sample from
    :param n_intervals: control intervals per episode; the budget is split evenly between them
    :param budget_scale: multiplies every task's example budget (tests use small values)
    :param budget_examples: if set, overrides every task's example budget
    :param actions: which hyperparameters are controlled, and their bounds
    :param divergence_penalty: reward on a step that diverges (the guard's rule)
    :param guard: the divergence rule and the rollback (:class:`~rlhpo.control.guard.GuardConfig`);
        with ``guard.enabled`` false a diverged episode ends instead. ``guard.restore_best`` must
        stay false: an episode never restores its best snapshot (it is a deployment option of
        :class:`rlhpo.Controller`)
    :param reward_clip: per-step rewards are clipped to [-reward_clip, reward_clip]
    :param task_seeds: a fixed instance set of task seeds (DACBench style); empty: any seed
    :param device: where target networks train ("cpu", "cuda", "cuda:N")
    :param feature_version: the observation's feature set (:data:`rlhpo.control.features.FEATURE_SETS`)
    :param base_schedule: what the policy's lr level multiplies: ``none`` or ``cosine``
        (:func:`rlhpo.control.decision.base_factor`: a function of the fraction of the budget)
    :param reward: ``delta``: the decrease of the log validation loss per interval (version 1);
        ``reference``: the change, per interval, of the run's lead over a reference run on the
        same task from the same start and seed with all-zero actions (warm-up + cosine under the
        ``cosine`` base schedule), compared at the same examples seen; the return is the final lead
    :param reference_cache: a directory where reference curves are kept between episodes and
        processes (None: in memory, per process)
    :param sensible_fraction: the fraction of episodes that start from the task's sensible
        defaults (:meth:`rlhpo.tasks.Task.with_start`), the lr multiplied by one of
        ``sensible_lr_jitter``; the others start from the family's wide random start
    :param sensible_lr_jitter: lr factors of the sensible starts (small perturbations)
    :param prior: where an episode's lr and weight decay start (:mod:`rlhpo.control.prior`):
        ``calibrated`` (controller v3: the calibrated default of the task's optimizer kind, the
        sampled start's lr bounding the trust region from below) or ``user`` (v1/v2: the
        sampled start)
    """

    families: list[str] = field(default_factory=lambda: ["meta_train"])
    n_intervals: int = 20
    budget_scale: float = 1.0
    budget_examples: Optional[int] = None
    actions: ActionConfig = field(default_factory=ActionConfig)
    divergence_penalty: float = 5.0
    guard: GuardConfig = field(default_factory=lambda: GuardConfig(max_lr_ratio=4.0))  # v3: the trust region
    reward_clip: float = 5.0
    task_seeds: list[int] = field(default_factory=lambda: list(range(24)))
    device: str = "cpu"
    feature_version: int = FEATURE_VERSION
    base_schedule: str = "cosine"
    reward: str = "reference"
    reference_cache: Optional[str] = None
    sensible_fraction: float = 0.5
    sensible_lr_jitter: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    prior: str = "calibrated"

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
        if self.guard.restore_best:
            raise ConfigError(
                "env.guard.restore_best is not an environment setting: an episode never restores its best "
                "snapshot; remove it (to deploy with it: rlhpo.Controller(..., "
                "policy=load_artifact(...).with_guard(restore_best=True)))"
            )
        seeds = self.task_seeds
        if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__") or any(
            not (is_int(x) and x >= 0) for x in seeds
        ):
            raise ConfigError(f"env.task_seeds must be a list of integers >= 0 (empty: any seed), got {seeds!r}")
        check_device(self.device, "env.device")
        if not isinstance(self.actions, ActionConfig):
            raise ConfigError(f"env.actions must be an ActionConfig (lr, batch_size, weight_decay), got {self.actions!r}")
        self.actions.validate("env.actions")
        if self.feature_version not in FEATURE_SETS:
            raise ConfigError(f"env.feature_version must be one of {sorted(FEATURE_SETS)}, got {self.feature_version!r}")
        if self.base_schedule not in BASE_SCHEDULES:
            raise ConfigError(f"env.base_schedule must be one of {list(BASE_SCHEDULES)}, got {self.base_schedule!r}")
        if self.reward not in REWARDS:
            raise ConfigError(f"env.reward must be one of {list(REWARDS)}, got {self.reward!r}")
        if self.reference_cache is not None and not (isinstance(self.reference_cache, str) and self.reference_cache):
            raise ConfigError(f"env.reference_cache must be null or a directory path, got {self.reference_cache!r}")
        if not (is_number(self.sensible_fraction) and 0 <= self.sensible_fraction <= 1):
            raise ConfigError(f"env.sensible_fraction must be a number in [0, 1], got {self.sensible_fraction!r}")
        jit = self.sensible_lr_jitter
        if isinstance(jit, (str, bytes)) or not hasattr(jit, "__iter__") or not list(jit) or any(
            not (is_number(x) and x > 0) for x in jit
        ):
            raise ConfigError(f"env.sensible_lr_jitter must be a non-empty list of numbers > 0, got {jit!r}")
        if self.prior not in PRIORS:
            raise ConfigError(f"env.prior must be one of {list(PRIORS)}, got {self.prior!r}")
        return self
