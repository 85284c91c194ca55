"""The configuration of ``python -m rlhpo.evaluate``: the method names, :class:`EvaluateConfig`
(a plain dataclass, checked by :meth:`EvaluateConfig.validate`) and its Hydra registration."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional, Sequence

from rlhpo.control.spec import check_table
from rlhpo.errors import ConfigError, check_device, check_fields, is_int, is_number
from rlhpo.policy.artifact import DEFAULT_POLICY
from rlhpo.tasks import TaskError, resolve_families

#: every method, in the order the summary lists them
METHODS: tuple[str, ...] = (
    "constant",
    "cosine",
    "calibrated",
    "schedulefree",
    "prodigy",
    # warm-up + cosine at the calibrated lr with a batch-size ramp instead of each halving (Meterez et al. 2025)
    "seesaw",
    "step",
    "plateau",
    "hypergradient",
    "optuna",
    "pbt",
    # the calibrated default at 7 lrs (x 1/8 .. 8), the best by validation: the headroom row
    "lr_grid",
    "controller",
    "replay",
    # the learned policies by name, runs of the controller method (parse_method): rlhpo/pretrained/v1, v2;
    # v3 = the learned policy of rlhpo/pretrained/default; v4 = rlhpo/pretrained/v4 (issue 33: it fails the gate);
    # kept as rows so each change is visible beside the default
    "controller@v1",
    "controller@v2",
    "controller@v3",
    "controller@v4",
    # the batch rule with the lr level from Prodigy's estimate on long runs (rlhpo.control.lr_estimate, issue 33)
    "controller@estimate",
    # the shipped policy's null action through its own decision path (its prior and base schedule,
    # every action zero): what the learned policy adds over the schedule it starts from
    "prior_only",
    # warm start (rlhpo.evaluation.warm): the start replaced by rlhpo.recommend, or an LR range test
    "recommend_constant",
    "recommend_cosine",
    "recommend_controller",
    "lr_range_cosine",
)
#: the no-tuning baselines a user picks today: one run from the start, nothing searched per task.
#: "best no-tuning" is, per task-seed, the one of these with the lowest final VALIDATION loss
NO_TUNING: tuple[str, ...] = ("constant", "cosine", "calibrated", "schedulefree", "prodigy")
#: methods that search their own hyperparameters and ignore the start: one search per task and
#: seed, listed under every start regime
START_FREE_METHODS: tuple[str, ...] = ("optuna", "pbt")
#: methods that search over several runs, on the run seeds ``search_seeds`` only
SEARCH_METHODS: tuple[str, ...] = ("optuna", "pbt", "lr_grid")
#: methods that train from the calibrated defaults (``calibrated``: one per optimizer kind)
CALIBRATED_METHODS: tuple[str, ...] = ("calibrated", "seesaw", "lr_grid")
#: methods whose report needs the ``calibrated`` run beside them (lr_grid: the headroom and
#: capture; seesaw: its time to the calibrated run's result at fewer steps): it is added to them
NEEDS_CALIBRATED_RUN: tuple[str, ...] = ("seesaw", "lr_grid")
#: the start regimes (rlhpo.tasks.base.START_REGIMES), in the order the report lists them
STARTS: tuple[str, ...] = ("sensible", "random")
#: methods that need the policy artifact
POLICY_METHODS: tuple[str, ...] = ("controller", "replay", "recommend_controller", "prior_only")
#: optional methods: (module to import, pip extra that provides it)
OPTIONAL_METHODS: dict[str, tuple[str, str]] = {
    "optuna": ("optuna", "search"),
    "pbt": ("ray.tune", "ray"),
    "schedulefree": ("schedulefree", "baselines"),
    "prodigy": ("prodigyopt", "baselines"),
}
#: the replay ablation runs on these fresh seeds (seed + offset), never seen by the main runs
REPLAY_SEED_OFFSET = 1000
LAUNCHERS: tuple[str, ...] = ("joblib", "ray")


def parse_method(method: str) -> tuple[str, Optional[str]]:
    """``(method, policy)``: ``controller@<policy>`` is the ``controller`` method run with the named
    policy (a pretrained name); any other method runs with the config's ``policy`` (None here)."""
    base, sep, policy = method.partition("@")
    return ("controller", policy) if sep and base == "controller" and policy else (method, None)


def calibrated_defaults() -> dict:
    """The committed output of ``python -m rlhpo.evaluation.calibrate`` (conf/evaluate/calibrated.yaml):
    ``{"calibrated": {kind: {lr, weight_decay}}, "hypergradient_beta": beta}``; empty if missing."""
    from importlib import resources

    from omegaconf import OmegaConf

    try:
        text = (resources.files("rlhpo.conf.evaluate") / "calibrated.yaml").read_text()
    except (FileNotFoundError, ModuleNotFoundError):
        return {}
    return OmegaConf.to_container(OmegaConf.create(text))  # type: ignore[return-value]


@dataclass
class EvaluateConfig:
    """``python -m rlhpo.evaluate``: the controller against baselines on held-out tasks.

    The defaults are the CLI's run (docs/evaluation.md: every method, the ``final`` split, 5 tasks
    per family x 3 seeds from both starts, the searches on seed 0); conf/evaluate/ only overrides.

    :param methods: methods to run, from ``METHODS`` (``controller@v2``: the controller method with the
        policy ``v2``, see :func:`parse_method`); ``replay`` also runs the controller;
        ``seesaw`` and ``lr_grid`` add ``calibrated`` (their report compares with its run)
    :param families: task families or groups: "final" (the held-out split of docs/evaluation.md), "dev" (the
        held-out split for development decisions), "held_out", "meta_train", "all"
    :param starts: start regimes, reported separately: "sensible" (each optimizer's usual
        default) and/or "random" (the family's sampled start)
    :param n_tasks: task seeds per family
    :param task_seed_start: the first task seed (2000+: apart from meta-training's evaluation seeds)
    :param seeds: run seeds per task (0 .. seeds-1): model initialisation and batch order
    :param budget_scale: multiplies every task's example budget
    :param n_intervals: control intervals per run (the controller decides once per interval)
    :param policy: the controller's artifact: a pretrained name ("default") or a folder
    :param optuna_trials: Optuna trials per task and seed
    :param search_seeds: run seeds (0 .. search_seeds-1) on which the search methods (Optuna, PBT,
        lr_grid) run (their cost: seed 0 only by default); ``None``: every seed. Their comparisons
        use those task-seeds only
    :param pbt_population: PBT population size
    :param pbt_interval: control intervals between PBT's exploit/explore steps
    :param hypergradient_beta: the hypergradient learning rate of hypergradient descent
        (calibrated on meta-training tasks: conf/evaluate/calibrated.yaml)
    :param calibrated: the calibrated baseline's ``{optimizer kind: {lr, weight_decay}}``, chosen
        on meta-training tasks by ``python -m rlhpo.evaluation.calibrate`` (conf/evaluate/calibrated.yaml)
    :param n_jobs: runs in parallel (-1: one per CPU); also the CPUs of a Ray instance started here
    :param launcher: ``joblib`` (loky processes) or ``ray`` (Ray remote tasks)
    :param device: where target networks train ("cpu", "cuda", "cuda:N")
    """

    methods: list[str] = field(default_factory=lambda: list(METHODS))
    families: list[str] = field(default_factory=lambda: ["final"])
    starts: list[str] = field(default_factory=lambda: list(STARTS))
    n_tasks: int = 5
    task_seed_start: int = 2000
    seeds: int = 3
    budget_scale: float = 1.0
    n_intervals: int = 20
    policy: str = DEFAULT_POLICY
    optuna_trials: int = 20
    search_seeds: Optional[int] = 1
    pbt_population: int = 4
    pbt_interval: int = 4
    hypergradient_beta: float = field(default_factory=lambda: float(calibrated_defaults().get("hypergradient_beta", 0.02)))
    calibrated: dict[str, dict[str, float]] = field(default_factory=lambda: dict(calibrated_defaults().get("calibrated", {})))
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
        needs = [m for m in self.methods if m in NEEDS_CALIBRATED_RUN]
        if needs and "calibrated" not in self.methods:
            self.methods.append("calibrated")
            why = f"its run is the reference of {', '.join(needs)} (time to result's target, headroom)"
            print(f"[rlhpo] adding calibrated to methods: {why}")
        try:
            self.families = resolve_families(list(self.families))
        except TaskError as e:
            raise ConfigError(f"families: {e}") from None
        if isinstance(self.starts, str) or not isinstance(self.starts, Sequence) or not self.starts:
            raise ConfigError(f"starts must be a non-empty list of {list(STARTS)}, got {self.starts!r}")
        bad = [s for s in self.starts if s not in STARTS]
        if bad:
            raise ConfigError(f"starts: unknown start regime(s) {bad}; allowed: {list(STARTS)}")
        self.starts = list(dict.fromkeys(self.starts))
        if any(m in CALIBRATED_METHODS for m in self.methods):
            from rlhpo.tasks.base import OPTIMIZERS

            missing = [k for k in OPTIMIZERS if k not in (self.calibrated or {})]
            if missing:
                using = [m for m in self.methods if m in CALIBRATED_METHODS]
                raise ConfigError(
                    f"calibrated: no default for optimizer(s) {missing}; run python -m rlhpo.evaluation.calibrate "
                    f"(conf/evaluate/calibrated.yaml) or drop {using} from methods"
                )
            check_table(self.calibrated, "calibrated")

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
        if self.search_seeds is not None and (not is_int(self.search_seeds) or self.search_seeds < 1):
            raise ConfigError(f"search_seeds must be an integer >= 1 or null (every seed), got {self.search_seeds!r}")
        if "pbt" in self.methods and self.pbt_interval >= self.n_intervals:
            raise ConfigError(
                f"pbt_interval ({self.pbt_interval}) must be below n_intervals ({self.n_intervals}), "
                "or PBT never exploits"
            )

    def _validate_numbers_and_names(self) -> None:
        check_fields(self, "", (
            ("budget_scale", lambda v: is_number(v) and v > 0, "a finite number > 0"),
            ("hypergradient_beta", lambda v: is_number(v) and 0 < v < 1, "a number in (0, 1)"),
            ("policy", lambda v: isinstance(v, str) and v, "a pretrained name or an artifact folder"),
            ("n_jobs", lambda v: is_int(v) and (v >= 1 or v == -1), "an integer >= 1, or -1 for one per CPU"),
            ("launcher", lambda v: v in LAUNCHERS, f"one of {list(LAUNCHERS)}"),
        ))
        check_device(self.device)

    @property
    def workers(self) -> int:
        """``n_jobs`` with -1 resolved to the CPU count."""
        return (os.cpu_count() or 1) if self.n_jobs == -1 else self.n_jobs


def register_configs() -> None:
    """Register the schema with Hydra's ConfigStore (conf/evaluate/evaluate.yaml extends it)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)
