"""How an action becomes hyperparameters. Shared by the environment and the controller.

The action is a float32 ``Box`` in ``[-1, 1]^k``, one entry per enabled control. Entry ``a``
multiplies its hyperparameter by ``max_step_factor ** a``, then the value is clipped to its
bounds. Why continuous and multiplicative on a log scale:

* SB3's PPO handles a bounded Box natively (Gaussian policy, clipped), and ``[-1, 1]`` is
  the range it expects;
* a log-scale step treats lr 1e-5 and lr 1e-1 alike, so one policy serves tasks whose good
  learning rates differ by orders of magnitude;
* a bounded factor per interval (2x by default) keeps changes smooth, while twenty intervals
  can still move the lr by six orders of magnitude to recover from a bad start;
* unlike a discrete set of factors, fine decays (0.9x, 0.95x) are as easy as large jumps.

The state is kept as log values, so the batch size (an integer) can drift by small steps
that round only when applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rlhpo.errors import ConfigError, is_int, is_number  # noqa: F401  (re-exported)
from rlhpo.tasks.base import Hyperparams

CONTROLS: tuple[str, ...] = ("lr", "batch_size", "weight_decay")


@dataclass
class ControlConfig:
    """One controlled hyperparameter.

    :param enabled: whether the policy sets it (otherwise it stays at the task's start value)
    :param min: lower bound
    :param max: upper bound
    :param max_step_factor: the largest multiplicative change in one control interval
    """

    enabled: bool = True
    min: float = 1e-6
    max: float = 10.0
    max_step_factor: float = 2.0


def _lr() -> ControlConfig:
    return ControlConfig(True, 1e-6, 10.0, 2.0)


def _bs() -> ControlConfig:
    return ControlConfig(True, 4, 1024, 2.0)


def _wd() -> ControlConfig:
    return ControlConfig(True, 1e-6, 0.1, 2.0)


@dataclass
class ActionConfig:
    """Which hyperparameters the policy controls, and their bounds."""

    lr: ControlConfig = field(default_factory=_lr)
    batch_size: ControlConfig = field(default_factory=_bs)
    weight_decay: ControlConfig = field(default_factory=_wd)

    def validate(self, where: str = "actions") -> "ActionConfig":
        for name in CONTROLS:
            c = getattr(self, name)
            if not isinstance(c, ControlConfig):
                raise ConfigError(f"{where}.{name} must be a control (enabled, min, max, max_step_factor), got {c!r}")
            if not isinstance(c.enabled, bool):
                raise ConfigError(f"{where}.{name}.enabled must be true or false, got {c.enabled!r}")
            for key in ("min", "max", "max_step_factor"):
                v = getattr(c, key)
                if not is_number(v) or v <= 0:
                    raise ConfigError(f"{where}.{name}.{key} must be a finite number > 0, got {v!r}")
            if c.min >= c.max:
                raise ConfigError(f"{where}.{name}: min ({c.min}) must be below max ({c.max})")
            if c.max_step_factor <= 1.0:
                raise ConfigError(f"{where}.{name}.max_step_factor must be > 1, got {c.max_step_factor}")
        if self.batch_size.min < 1:
            raise ConfigError(f"{where}.batch_size.min must be >= 1, got {self.batch_size.min}")
        if not self.enabled:
            raise ConfigError(f"{where}: at least one of lr, batch_size, weight_decay must be enabled")
        return self

    @property
    def enabled(self) -> tuple[str, ...]:
        return tuple(n for n in CONTROLS if getattr(self, n).enabled)


class ActionSpec:
    """Maps actions to hyperparameters within bounds, from a log-space state.

    :param config: the action configuration
    :param max_batch_size: an extra cap on the batch size (the training-set size)
    """

    def __init__(self, config: ActionConfig, max_batch_size: int | None = None) -> None:
        self.config = config.validate()
        self.controls = config.enabled
        if not self.controls:
            raise ConfigError("actions: at least one of lr, batch_size, weight_decay must be enabled")
        bs_max = config.batch_size.max if max_batch_size is None else min(config.batch_size.max, max_batch_size)
        bs_max = max(bs_max, 1)
        self._lo = np.log([config.lr.min, min(config.batch_size.min, bs_max), config.weight_decay.min])
        self._hi = np.log([config.lr.max, bs_max, config.weight_decay.max])
        self._step = np.log([getattr(config, n).max_step_factor for n in CONTROLS])
        self._mask = np.array([n in self.controls for n in CONTROLS])
        self._live = self._mask.copy()  # the controls this run moves (reset() may hold some)
        self.z = np.zeros(3)

    @property
    def n_actions(self) -> int:
        return len(self.controls)

    def reset(self, start: Hyperparams, off: tuple[str, ...] = ()) -> Hyperparams:
        """Start from ``start``; enabled controls are clipped into their bounds. Controls named in
        ``off`` are held at their start for this run (their action entries are ignored)."""
        self._live = self._mask & np.array([n not in off for n in CONTROLS])
        self._start = np.log([start.lr, start.batch_size, max(start.weight_decay, 1e-30)])
        self.z = np.where(self._live, np.clip(self._start, self._lo, self._hi), self._start)
        return self.hparams(start)

    def full_action(self, action: np.ndarray) -> np.ndarray:
        """The action as three entries (lr, batch size, wd), 0 for disabled controls."""
        a = np.nan_to_num(np.asarray(action, dtype=np.float64).reshape(-1), nan=0.0)
        if a.shape[0] != self.n_actions:
            raise ValueError(f"action must have {self.n_actions} entries ({', '.join(self.controls)}), got {a.shape[0]}")
        full = np.zeros(3)
        full[self._mask] = np.clip(a, -1.0, 1.0)
        full[~self._live] = 0.0
        return full

    def apply(self, action: np.ndarray, current: Hyperparams) -> Hyperparams:
        full = self.full_action(action)
        self.z = np.where(self._live, np.clip(self.z + full * self._step, self._lo, self._hi), self.z)
        return self.hparams(current)

    def hparams(self, current: Hyperparams) -> Hyperparams:
        lr, bs, wd = np.exp(self.z)
        # clip again after exp(): exp(log(x)) can land one ulp outside the bounds
        lr = np.clip(lr, self.config.lr.min, self.config.lr.max)
        wd = np.clip(wd, self.config.weight_decay.min, self.config.weight_decay.max)
        live = self._live
        return Hyperparams(
            lr=float(lr) if live[0] else current.lr,
            batch_size=max(1, int(round(bs))) if live[1] else current.batch_size,
            weight_decay=float(wd) if live[2] else current.weight_decay,
        )

    def scale(self, name: str, factor: float) -> None:
        """Multiply one control's value by ``factor`` (within its bounds), outside any action:
        the guard's learning-rate cut after a rollback."""
        i = CONTROLS.index(name)
        if self._live[i]:
            self.z[i] = float(np.clip(self.z[i] + np.log(factor), self._lo[i], self._hi[i]))

    def narrow(self, name: str, lo: float, hi: float) -> None:
        """Tighten one control's bounds to [lo, hi] within the configured ones (an lr cap
        relative to the start)."""
        i = CONTROLS.index(name)
        self._lo[i] = max(self._lo[i], float(np.log(lo)))
        self._hi[i] = min(self._hi[i], float(np.log(hi)))
        self.z[i] = float(np.clip(self.z[i], self._lo[i], self._hi[i]))

    def state_dict(self) -> dict:
        return {"z": self.z.tolist(), "live": self._live.tolist()}

    def load_state_dict(self, state: dict) -> None:
        self.z = np.asarray(state["z"], dtype=np.float64)
        if "live" in state:
            self._live = np.asarray(state["live"], dtype=bool)
