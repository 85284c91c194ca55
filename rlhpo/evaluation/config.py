"""The configuration of ``python -m rlhpo.evaluate``: the method names, :class:`EvaluateConfig`
(a plain dataclass, checked by :meth:`EvaluateConfig.validate`) and its Hydra registration."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Sequence

from rlhpo.errors import ConfigError, check_device, is_int
from rlhpo.tasks import TaskError, resolve_families

#: every method, in the order the summary lists them
METHODS: tuple[str, ...] = (
    "constant",
    "cosine",
    "step",
    "plateau",
    "hypergradient",
    "optuna",
    "pbt",
    "controller",
    "replay",
)
#: methods that need the policy artifact
POLICY_METHODS: tuple[str, ...] = ("controller", "replay")
#: optional methods: (module to import, pip extra that provides it)
OPTIONAL_METHODS: dict[str, tuple[str, str]] = {"optuna": ("optuna", "search"), "pbt": ("ray.tune", "ray")}
#: the replay ablation runs on these fresh seeds (seed + offset), never seen by the main runs
REPLAY_SEED_OFFSET = 1000
LAUNCHERS: tuple[str, ...] = ("joblib", "ray")


@dataclass
class EvaluateConfig:
    """``python -m rlhpo.evaluate``: the controller against baselines on held-out tasks.

    :param methods: methods to run, from ``METHODS``; ``replay`` also runs the controller
    :param families: task families (or groups "held_out", "meta_train", "all") to evaluate on
    :param n_tasks: task seeds per family
    :param task_seed_start: the first task seed (2000+: apart from meta-training's evaluation seeds)
    :param seeds: run seeds per task (0 .. seeds-1): model initialisation and batch order
    :param budget_scale: multiplies every task's example budget
    :param n_intervals: control intervals per run (the controller decides once per interval)
    :param policy: the controller's artifact: a pretrained name ("default") or a folder
    :param optuna_trials: Optuna trials per task and seed
    :param pbt_population: PBT population size
    :param pbt_interval: control intervals between PBT's exploit/explore steps
    :param hypergradient_beta: the hypergradient learning rate of hypergradient descent
    :param n_jobs: runs in parallel (-1: one per CPU); also the CPUs of a Ray instance started here
    :param launcher: ``joblib`` (loky processes) or ``ray`` (Ray remote tasks)
    :param device: where target networks train ("cpu", "cuda", "cuda:N")
    """

    methods: list[str] = field(default_factory=lambda: list(METHODS))
    families: list[str] = field(default_factory=lambda: ["held_out"])
    n_tasks: int = 2
    task_seed_start: int = 2000
    seeds: int = 5
    budget_scale: float = 1.0
    n_intervals: int = 20
    policy: str = "default"
    optuna_trials: int = 20
    pbt_population: int = 4
    pbt_interval: int = 4
    hypergradient_beta: float = 0.02
    n_jobs: int = 2
    launcher: str = "joblib"
    device: str = "cpu"

    def validate(self) -> "EvaluateConfig":
        """Check every field; raise :class:`ConfigError` naming the field and what is allowed."""
        self._validate_methods_and_families()
        self._validate_counts()
        self._validate_numbers_and_names()
        return self

    def _validate_methods_and_families(self) -> None:
        if isinstance(self.methods, str) or not isinstance(self.methods, Sequence) or not self.methods:
            raise ConfigError(f"methods must be a non-empty list of {list(METHODS)}, got {self.methods!r}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"methods: unknown method(s) {unknown}; allowed: {list(METHODS)}")
        self.methods = list(dict.fromkeys(self.methods))
        try:
            self.families = resolve_families(list(self.families))
        except TaskError as e:
            raise ConfigError(f"families: {e}") from None

    def _validate_counts(self) -> None:
        for name, low in (
            ("n_tasks", 1),
            ("task_seed_start", 0),
            ("seeds", 1),
            ("n_intervals", 1),
            ("optuna_trials", 1),
            ("pbt_population", 2),
            ("pbt_interval", 1),
        ):
            v = getattr(self, name)
            if not is_int(v) or v < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}")
        if "pbt" in self.methods and self.pbt_interval >= self.n_intervals:
            raise ConfigError(
                f"pbt_interval ({self.pbt_interval}) must be below n_intervals ({self.n_intervals}), "
                "or PBT never exploits"
            )

    def _validate_numbers_and_names(self) -> None:
        if not (isinstance(self.budget_scale, (int, float)) and math.isfinite(self.budget_scale) and self.budget_scale > 0):
            raise ConfigError(f"budget_scale must be a finite number > 0, got {self.budget_scale!r}")
        if not (isinstance(self.hypergradient_beta, (int, float)) and 0 < self.hypergradient_beta < 1):
            raise ConfigError(f"hypergradient_beta must be a number in (0, 1), got {self.hypergradient_beta!r}")
        if not isinstance(self.policy, str) or not self.policy:
            raise ConfigError(f"policy must be a pretrained name or an artifact folder, got {self.policy!r}")
        if not is_int(self.n_jobs) or not (self.n_jobs >= 1 or self.n_jobs == -1):
            raise ConfigError(f"n_jobs must be an integer >= 1, or -1 for one per CPU, got {self.n_jobs!r}")
        if self.launcher not in LAUNCHERS:
            raise ConfigError(f"launcher must be one of {list(LAUNCHERS)}, got {self.launcher!r}")
        check_device(self.device)

    @property
    def workers(self) -> int:
        """``n_jobs`` with -1 resolved to the CPU count."""
        return (os.cpu_count() or 1) if self.n_jobs == -1 else self.n_jobs


def register_configs() -> None:
    """Register the schema with Hydra's ConfigStore (conf/evaluate/evaluate.yaml extends it)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)
