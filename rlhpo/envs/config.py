"""The environment's configuration: a plain dataclass (Hydra's ``env`` group uses it as schema)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from rlhpo.control.spec import DecisionSpec
from rlhpo.errors import ConfigError, check_device, check_fields, check_seeds, is_int, is_number
from rlhpo.tasks import TaskError, resolve_families

#: the environment's rewards (see :class:`EnvConfig`)
REWARDS: tuple[str, ...] = ("delta", "reference", "time_to_result")
#: the rewards that train a reference run beside each episode
REFERENCE_REWARDS: tuple[str, ...] = ("reference", "time_to_result")


@dataclass
class EnvConfig(DecisionSpec):
    """Configuration of :class:`~rlhpo.envs.HyperparamControlEnv`: the decision spec the policy is
    meta-trained under (:class:`~rlhpo.control.spec.DecisionSpec`: ``actions``, ``n_intervals``,
    ``guard``, ``prior``, ``prior_table``, ``base_schedule``, ``feature_names``; its artifact's
    ``spec.json`` saves it) and the environment's own settings below.

    The defaults are the shipped recipe (the environment ``rlhpo/pretrained/default`` was
    meta-trained in, controller v3): ``EnvConfig()``, ``rlhpo.make_env()``,
    ``gymnasium.make("rlhpo/HyperparamControl-v0")`` and ``python -m rlhpo.train`` all build it;
    the YAML files under ``conf/`` only override. Earlier policies' decision specs are in their
    ``spec.json`` (``rlhpo/pretrained/v1``, ``v2``, as converted at load time) and the rest of
    their environment in their ``config.yaml``.

    :param families: task families (or groups "meta_train", "held_out", "all") to sample from
    :param budget_scale: multiplies every task's example budget (tests use small values)
    :param budget_examples: if set, overrides every task's example budget
    :param divergence_penalty: reward on a step that diverges (the guard's rule)
    :param guard: (of the spec) with ``guard.enabled`` false a diverged episode ends instead;
        ``guard.restore_best`` must stay false: an episode never restores its best snapshot (it
        is a deployment option of :class:`rlhpo.Controller`)
    :param reward_clip: per-step rewards are clipped to [-reward_clip, reward_clip]
    :param task_seeds: a fixed instance set of task seeds (DACBench style); empty: any seed
    :param device: where target networks train ("cpu", "cuda", "cuda:N")
    :param reward: ``delta``: the decrease of the log validation loss per interval;
        ``reference``: the change, per interval, of the run's lead over a reference run on the
        same task from the same start and seed with all-zero actions (warm-up + cosine under the
        ``cosine`` base schedule), compared at the same examples seen; the return is the final lead;
        ``time_to_result``: ``reference``, and at the episode's end ``ttr_weight`` x log(the
        reference's optimizer steps to its final validation loss / the episode's steps to that
        loss), 0 if the episode never reached it (issue 33: a lead in steps as well as in loss)
    :param ttr_weight: the weight of the time-to-result term (``time_to_result``): 0.1 values a
        1.3x speedup in steps like a 2.6% lead in final validation loss
    :param reference_cache: a directory where reference curves are kept between episodes and
        processes (None: in memory, per process)
    :param sensible_fraction: the fraction of episodes that start from the task's sensible
        defaults (:meth:`rlhpo.tasks.Task.with_start`), the lr multiplied by one of
        ``sensible_lr_jitter``; the others start from the family's wide random start
    :param sensible_lr_jitter: lr factors of the sensible starts (small perturbations)
    :param snapshot_fraction: the fraction of episodes that start part-way through a long run
        (issue 33: decisions late in runs of realistic length at a fraction of their cost): the
        task's budget times ``snapshot_budget_scale``, the episode restored from the reference
        run's state (weights, optimizer, batch order, decision path, guard) at one of the
        fractions ``snapshot_at`` of it, chosen at random; it trains on to the end under the
        policy and is scored against the reference's continuation from that same state. Needs a
        reference reward and an environment that trains one network at a time (not the batched
        vector env)
    :param snapshot_budget_scale: a snapshot episode's budget over the task's (the long run)
    :param snapshot_at: the fractions of the long run where snapshot episodes may start,
        rounded to decision intervals
    """

    families: list[str] = field(default_factory=lambda: ["meta_train"])
    budget_scale: float = 1.0
    budget_examples: Optional[int] = None
    divergence_penalty: float = 5.0
    reward_clip: float = 5.0
    task_seeds: list[int] = field(default_factory=lambda: list(range(24)))
    device: str = "cpu"
    reward: str = "reference"
    reference_cache: Optional[str] = None
    ttr_weight: float = 0.1
    sensible_fraction: float = 0.5
    sensible_lr_jitter: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    snapshot_fraction: float = 0.0
    snapshot_budget_scale: float = 4.0
    snapshot_at: list[float] = field(default_factory=lambda: [0.5, 0.75])

    def validate(self, where: str = "env") -> "EnvConfig":
        super().validate(where)
        fams = self.families
        if isinstance(fams, str):
            fams = [fams]
        if not hasattr(fams, "__iter__") or any(not isinstance(f, str) for f in fams):
            raise ConfigError(f"env.families must be a list of task family names, got {self.families!r}")
        try:
            self.families = resolve_families(list(fams))
        except TaskError as e:
            raise ConfigError(f"env.families: {e}") from None
        check_fields(self, "env.", (
            ("budget_scale", lambda v: is_number(v) and v > 0, "a finite number > 0"),
            ("budget_examples", lambda v: v is None or (is_int(v) and v > 0), "null or an integer > 0"),
            ("divergence_penalty reward_clip ttr_weight", lambda v: is_number(v) and v >= 0, "a finite number >= 0"),
            ("reward", lambda v: v in REWARDS, f"one of {list(REWARDS)}"),
            ("reference_cache", lambda v: v is None or (isinstance(v, str) and v), "null or a directory path"),
            ("sensible_fraction snapshot_fraction", lambda v: is_number(v) and 0 <= v <= 1, "a number in [0, 1]"),
            ("snapshot_budget_scale", lambda v: is_number(v) and v >= 1, "a finite number >= 1"),
        ))
        at = self.snapshot_at
        if isinstance(at, (str, bytes)) or not hasattr(at, "__iter__") or not list(at) or any(
            not (is_number(x) and 0 < x < 1) for x in at
        ):
            raise ConfigError(f"env.snapshot_at must be a non-empty list of fractions in (0, 1), got {at!r}")
        if self.snapshot_fraction > 0 and self.reward not in REFERENCE_REWARDS:
            raise ConfigError(
                f"env.snapshot_fraction={self.snapshot_fraction} needs a reference run to start from: "
                f"env.reward must be one of {list(REFERENCE_REWARDS)}, got {self.reward!r}"
            )
        if self.guard.restore_best:
            raise ConfigError(
                "env.guard.restore_best is not an environment setting: an episode never restores its best "
                "snapshot; remove it (to deploy with it: rlhpo.Controller(..., "
                "policy=load_artifact(...).with_guard(restore_best=True)))"
            )
        check_seeds("env.task_seeds", self.task_seeds, allow_empty=True)  # empty: any seed
        check_device(self.device, "env.device")
        jit = self.sensible_lr_jitter
        if isinstance(jit, (str, bytes)) or not hasattr(jit, "__iter__") or not list(jit) or any(
            not (is_number(x) and x > 0) for x in jit
        ):
            raise ConfigError(f"env.sensible_lr_jitter must be a non-empty list of numbers > 0, got {jit!r}")
        return self
