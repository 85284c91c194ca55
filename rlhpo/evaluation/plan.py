"""What ``python -m rlhpo.evaluate`` runs: which methods can run (optional dependencies, the
policy), and :class:`_Plan`, the jobs per task, start regime, method and seed."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from rlhpo.errors import ArtifactError, ConfigError
from rlhpo.evaluation.config import (
    OPTIONAL_METHODS,
    POLICY_METHODS,
    REPLAY_SEED_OFFSET,
    EvaluateConfig,
)
from rlhpo.evaluation.worker import ANY_START, Job, JobResult, TaskSpec
from rlhpo.policy.artifact import load_artifact

# -- availability ----------------------------------------------------------------------------


def _check_optional(methods: list[str]) -> dict[str, str]:
    """Which optional methods cannot run, and why."""
    import importlib

    skipped = {}
    for method, (module, extra) in OPTIONAL_METHODS.items():
        if method not in methods:
            continue
        try:
            importlib.import_module(module)
        except Exception as e:  # not only ImportError: a broken install fails in many ways
            skipped[method] = f"`import {module}` failed ({type(e).__name__}: {e}); install it with pip install 'rlhpo[{extra}]'"
    return skipped


def _check_policy(config: EvaluateConfig) -> tuple[Optional[str], dict[str, str]]:
    """The policy artifact's absolute path (a rule, ``rule`` or ``probe``: its name), or the
    controller methods to skip and why.

    :raises ArtifactError: when only controller methods were asked for and the policy cannot load
    """
    wanted = [m for m in config.methods if m in POLICY_METHODS]
    if not wanted:
        return None, {}
    try:
        artifact = load_artifact(config.policy)
    except ArtifactError as e:
        if set(config.methods) <= set(POLICY_METHODS):
            raise
        return None, {m: f"the policy could not be loaded: {e}" for m in wanted}
    if artifact.spec.n_intervals != config.n_intervals:
        print(
            f"[rlhpo] note: the policy was meta-trained with {artifact.spec.n_intervals} control intervals; "
            f"this evaluation uses n_intervals={config.n_intervals}"
        )
    if artifact.rule or artifact.probe is not None:  # a decision rule over a folder, not the folder's policy
        return str(config.policy), {}
    return str(Path(artifact.path).resolve()), {}


def _runnable_methods(config: EvaluateConfig) -> tuple[list[str], dict[str, str], Optional[str]]:
    """The methods that can run, the skipped ones with why, and the policy's path.

    :raises ConfigError: when Ray is the launcher but missing, or when no method can run
    """
    if config.launcher == "ray":
        try:
            import ray  # noqa: F401
        except ImportError as e:
            raise ConfigError(f"launcher=ray needs Ray ({e}); pip install 'rlhpo[ray]', or use launcher=joblib") from None
    skipped = _check_optional(config.methods)
    policy, policy_skipped = _check_policy(config)
    skipped.update(policy_skipped)
    for method, why in skipped.items():
        print(f"[rlhpo] skipping {method}: {why}")
    methods = [m for m in config.methods if m not in skipped]
    if not methods:
        raise ConfigError(f"no method can run: {'; '.join(f'{m}: {w}' for m, w in skipped.items())}")
    return methods, skipped, policy


# -- the plan --------------------------------------------------------------------------------


@dataclass
class _Plan:
    """What :func:`run` runs: the tasks, start regimes, seeds and methods, and how each job is
    configured."""

    config: EvaluateConfig
    methods: list[str]
    specs: list[TaskSpec]  # one per task and start regime
    search_specs: list[TaskSpec]  # one per task, start "any" (the search methods)
    seeds: list[int]
    tb_root: str
    policy: Optional[str]

    @classmethod
    def make(cls, config: EvaluateConfig, methods: list[str], tb_root: str, policy: Optional[str]) -> "_Plan":
        tasks = [(family, config.task_seed_start + i) for family in config.families for i in range(config.n_tasks)]
        scale = float(config.budget_scale)
        specs = [TaskSpec(f, t, scale, start) for f, t in tasks for start in config.starts]
        search_specs = [TaskSpec(f, t, scale, ANY_START) for f, t in tasks]
        for spec in specs:  # fail here, naming the task, rather than in a worker
            spec.make()
        return cls(config, methods, specs, search_specs, list(range(config.seeds)), tb_root, policy)

    def job(self, spec: TaskSpec, method: str, seed: int, group: str = "main", **kw: Any) -> Job:
        c = self.config
        return Job(
            spec, method, seed, group, c.n_intervals, c.device, self.tb_root, policy=self.policy,
            beta=c.hypergradient_beta, optuna_trials=c.optuna_trials, calibrated=dict(c.calibrated), **kw,
        )

    def independent_jobs(self) -> list[Job]:
        """The jobs that need no other job's result, the longest (Optuna, the lr grid) first.

        The replay ablation needs the controller's schedules on the main seeds, and the
        controller on the fresh seeds to compare with. Optuna searches once per task (start
        "any"); the lr grid once per task and start (the calibrated default keeps the start's
        batch size); both on the search seeds."""
        single = [m for m in self.methods if m not in ("pbt", "replay", "optuna", "lr_grid")]
        if "replay" in self.methods and "controller" not in single:
            single.append("controller")
        jobs = []
        if "optuna" in self.methods:
            jobs += [self.job(s, "optuna", k) for s in self.search_specs for k in self.search_seeds]
        if "lr_grid" in self.methods:
            jobs += [self.job(s, "lr_grid", k) for s in self.specs for k in self.search_seeds]
        jobs += [self.job(s, m, k) for s in self.specs for k in self.seeds for m in single]
        if "replay" in self.methods:
            jobs += [self.job(s, "controller", k + REPLAY_SEED_OFFSET, "replay") for s in self.specs for k in self.seeds]
        return jobs

    def replay_jobs(self, results: list[JobResult]) -> list[Job]:
        """The open-loop replays of the controller's schedules on the main seeds."""
        by_key = {(r.job.task, r.job.seed): r.result for r in results if r.job.method == "controller" and r.job.group == "main"}
        return [
            self.job(s, "replay", k + REPLAY_SEED_OFFSET, "replay", replay=by_key[(s, k)].schedule())
            for s in self.specs
            for k in self.seeds
        ]

    def pbt_jobs(self) -> list[Job]:
        return [self.job(s, "pbt", k) for s in self.search_specs for k in self.search_seeds] if "pbt" in self.methods else []

    @property
    def search_seeds(self) -> list[int]:
        n = self.config.search_seeds
        return self.seeds if n is None else self.seeds[:n]

    def fingerprint(self) -> str:
        """What makes a stored result reusable: the settings that change a run's outcome."""
        c = self.config
        keys = dict(
            budget_scale=c.budget_scale, n_intervals=c.n_intervals, policy=self.policy, optuna_trials=c.optuna_trials,
            pbt_population=c.pbt_population, pbt_interval=c.pbt_interval, beta=c.hypergradient_beta,
            calibrated=c.calibrated, device=c.device,
        )
        return hashlib.sha1(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:12]
