"""The decision spec: what a policy observes, controls and runs under, stated once.

:class:`rlhpo.envs.EnvConfig` extends it with the environment's settings,
:class:`rlhpo.policy.artifact.PolicySpec` with the artifact's metadata (saved verbatim as
``spec.json``), and :class:`rlhpo.control.decision.DecisionPath` runs it. Its ``validate()`` is the
only check of its fields. The defaults are the shipped recipe (controller v3). No torch import.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from rlhpo.control.actions import ActionConfig, ControlConfig
from rlhpo.control.guard import GuardConfig
from rlhpo.control.prior import CALIBRATED, PRIORS
from rlhpo.errors import ConfigError, check_fields, is_int, is_number

#: base schedules the policy's learning rate multiplies (``none``: the policy sets the lr itself)
BASE_SCHEDULES: tuple[str, ...] = ("none", "cosine")

#: the first feature set (the policy ``rlhpo/pretrained/v1`` observes)
FEATURE_NAMES_V1: tuple[str, ...] = (
    "progress",  # fraction of the example budget spent
    "log_train_loss_ratio",  # log(train loss / train loss of the first interval)
    "log_val_loss_ratio",  # log(val loss / val loss after the first interval)
    "log_generalisation_gap",  # log(val loss / train loss)
    "log_val_over_best",  # log(val loss / best val loss so far) >= 0: overfitting or blow-up
    "log_val_change",  # log(val loss / previous val loss)
    "train_loss_trend",  # log(mean loss of second half of the interval / first half)
    "log_loss_noise",  # log of the coefficient of variation of minibatch losses
    "log_grad_norm_ratio",  # log(grad norm / grad norm of the first interval)
    "log10_update_ratio",  # log10(|update| / |params|), shifted and scaled
    "update_cosine",  # cosine of successive updates (+1 steady, -1 oscillating)
    "log_lr_ratio",  # log10(lr / starting lr)
    "log_batch_ratio",  # log2(batch size / starting batch size) / 3
    "log_wd_ratio",  # log10(wd / starting wd)
    "log10_lr",  # absolute log10 lr, shifted and scaled
    "adaptive_optimizer",  # 1 for Adam/AdamW, 0 for SGD
    "last_action_lr",
    "last_action_batch_size",
    "last_action_weight_decay",
)
#: the current feature set: scale-free only (no absolute lr, no optimizer identity: a policy cannot
#: memorise a per-optimizer lr prior), and loss comparisons that survive zero or negative losses
FEATURE_NAMES: tuple[str, ...] = tuple(n for n in FEATURE_NAMES_V1 if n not in ("log10_lr", "adaptive_optimizer"))
#: the feature sets this rlhpo computes (:class:`rlhpo.control.features.FeatureExtractor`)
FEATURE_SETS: tuple[tuple[str, ...], ...] = (FEATURE_NAMES_V1, FEATURE_NAMES)


@dataclass
class DecisionSpec:
    """The decision contract.

    :param actions: which hyperparameters the policy sets, and their bounds
    :param n_intervals: control intervals per run; the budget is split evenly between them
    :param guard: the divergence rule, the rollback and the trust region (``guard.max_lr_ratio``:
        the lr level stays within 4x of the prior)
    :param prior: where a run starts (:mod:`rlhpo.control.prior`): ``calibrated`` (the calibrated
        default of the optimizer kind; the user's lr bounds the trust region from below) or
        ``user`` (the user's values)
    :param prior_table: the calibrated defaults of the ``calibrated`` prior, per optimizer kind
    :param base_schedule: what the policy's lr level multiplies at every optimizer step: ``cosine``
        (warm-up + cosine, :func:`rlhpo.control.decision.base_factor`) or ``none``
    :param feature_names: the observation's feature set (one of :data:`FEATURE_SETS`)
    """

    actions: ActionConfig = field(default_factory=ActionConfig)
    n_intervals: int = 20
    guard: GuardConfig = field(default_factory=GuardConfig)
    prior: str = "calibrated"
    prior_table: dict[str, dict[str, float]] = field(default_factory=lambda: {k: dict(v) for k, v in CALIBRATED.items()})
    base_schedule: str = "cosine"
    feature_names: list[str] = field(default_factory=lambda: list(FEATURE_NAMES))

    def validate(self, where: str = "spec") -> "DecisionSpec":
        """This spec, checked; a :class:`~rlhpo.errors.ConfigError` naming the field and what is allowed."""
        if not isinstance(self.actions, ActionConfig):
            raise ConfigError(f"{where}.actions must be an ActionConfig (lr, batch_size, weight_decay), got {self.actions!r}")
        self.actions.validate(f"{where}.actions")
        if not isinstance(self.guard, GuardConfig):
            raise ConfigError(f"{where}.guard must be a guard config (enabled, factor, lr_cut, ...), got {self.guard!r}")
        self.guard.validate(f"{where}.guard")
        check_fields(self, f"{where}.", (
            ("n_intervals", lambda v: is_int(v) and v >= 1, "an integer >= 1"),
            ("prior", lambda v: v in PRIORS, f"one of {list(PRIORS)}"),
            ("base_schedule", lambda v: v in BASE_SCHEDULES, f"one of {list(BASE_SCHEDULES)}"),
        ))
        check_table(self.prior_table, f"{where}.prior_table")
        if tuple(self.feature_names) not in FEATURE_SETS:
            raise ConfigError(
                f"{where}.feature_names ({len(self.feature_names)} features) is no feature set this rlhpo computes; "
                f"allowed: the {len(FEATURE_NAMES)} of rlhpo.control.spec.FEATURE_NAMES "
                f"or the {len(FEATURE_NAMES_V1)} of FEATURE_NAMES_V1"
            )
        return self

    def decision_spec(self) -> "DecisionSpec":
        """The decision contract alone, without a subclass's own fields."""
        return DecisionSpec(**{f.name: getattr(self, f.name) for f in fields(DecisionSpec)})


def check_table(table: Any, where: str) -> None:
    """A table of calibrated defaults: ``{optimizer kind: {lr: > 0, weight_decay: >= 0}}``."""
    if not isinstance(table, Mapping) or any(
        not (isinstance(v, Mapping) and set(v) == {"lr", "weight_decay"} and is_number(v["lr"]) and v["lr"] > 0
             and is_number(v["weight_decay"]) and v["weight_decay"] >= 0) for v in table.values()
    ):
        raise ConfigError(f"{where} must map optimizer kinds to {{lr: > 0, weight_decay: >= 0}}, got {table!r}")


def from_dict(cls: type, raw: Any, where: str = "spec") -> Any:
    """A ``cls`` (a :class:`DecisionSpec` or a subclass) from plain data, validated; unknown keys are
    a one-line :class:`~rlhpo.errors.ConfigError` naming them and the allowed ones; missing keys
    take the defaults."""
    kwargs = _fields(cls, raw, where)
    if "actions" in kwargs:
        controls = _fields(ActionConfig, kwargs["actions"], f"{where}.actions")
        kwargs["actions"] = ActionConfig(
            **{n: ControlConfig(**_fields(ControlConfig, v, f"{where}.actions.{n}")) for n, v in controls.items()}
        )
    if "guard" in kwargs:
        kwargs["guard"] = GuardConfig(**_fields(GuardConfig, kwargs["guard"], f"{where}.guard"))
    return cls(**kwargs).validate(where)


def _fields(cls: type, raw: Any, where: str) -> dict:
    """``raw`` as keyword arguments of the dataclass ``cls``; a one-line error for anything else."""
    allowed = [f.name for f in fields(cls)]
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping of {allowed}, got {raw!r}")
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ConfigError(f"{where} has unknown keys {unknown}; allowed: {allowed}")
    return dict(raw)
