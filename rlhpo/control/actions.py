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

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from rlhpo.errors import ConfigError, check_fields, is_number
from rlhpo.types import Hyperparams

CONTROLS: tuple[str, ...] = ("lr", "batch_size", "weight_decay")


@dataclass
class ControlConfig:
    """One controlled hyperparameter.

    :param enabled: whether the policy sets it (otherwise it stays at the task's start value)
    :param min: lower bound
    :param max: upper bound
    :param max_step_factor: the largest multiplicative change in one control interval
    :param min_start_ratio: if set, a lower bound relative to the run's start value (1.0 for the
        batch size: never below the start, so a run takes no more optimizer steps, and no more
        wall-clock, than a constant run at the same example budget)
    """

    enabled: bool = True
    min: float = 1e-6
    max: float = 10.0
    max_step_factor: float = 2.0
    min_start_ratio: Optional[float] = None


def _lr() -> ControlConfig:
    return ControlConfig(True, 1e-6, 10.0, 2.0)


def _bs() -> ControlConfig:
    return ControlConfig(True, 4, 1024, 2.0, min_start_ratio=1.0)  # never below the start (the shipped recipe)


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
            check_fields(c, f"{where}.{name}.", (
                ("enabled", lambda v: isinstance(v, bool), "true or false"),
                ("min max max_step_factor", lambda v: is_number(v) and v > 0, "a finite number > 0"),
                ("min_start_ratio", lambda v: v is None or (is_number(v) and v > 0), "null or a finite number > 0"),
            ))
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

    # Plain Python on three floats: numpy's per-call overhead on 3-element arrays was most of the
    # decision's cost on the tiny meta-training tasks (bench.env_overhead).
    def __init__(self, config: ActionConfig, max_batch_size: int | None = None) -> None:
        self.config = config.validate()
        self.controls = config.enabled
        bs_max = config.batch_size.max if max_batch_size is None else min(config.batch_size.max, max_batch_size)
        bs_max = max(bs_max, 1)
        self._lo = [math.log(config.lr.min), math.log(min(config.batch_size.min, bs_max)), math.log(config.weight_decay.min)]
        self._hi = [math.log(config.lr.max), math.log(bs_max), math.log(config.weight_decay.max)]
        self._step = [math.log(getattr(config, n).max_step_factor) for n in CONTROLS]
        self._mask = tuple(n in self.controls for n in CONTROLS)
        self._index = [i for i, on in enumerate(self._mask) if on]  # action entry k -> control index
        self._live = list(self._mask)  # the controls this run moves (reset() may hold some)
        self._z = [0.0, 0.0, 0.0]
        self._v = [1.0, 1.0, 1.0]  # exp(z), exactly the start while a control has not moved

    @property
    def z(self) -> np.ndarray:
        """The log values of lr, batch size and weight decay."""
        return np.array(self._z)

    @z.setter
    def z(self, value: Sequence[float]) -> None:
        self._z = [float(v) for v in value]
        self._v = [math.exp(v) for v in self._z]

    @property
    def n_actions(self) -> int:
        return len(self.controls)

    def reset(self, start: Hyperparams, off: tuple[str, ...] = ()) -> Hyperparams:
        """Start from ``start``; enabled controls are clipped into their bounds. Controls named in
        ``off`` are held at their start for this run (their action entries are ignored)."""
        self._live = [on and n not in off for on, n in zip(self._mask, CONTROLS)]
        logs = [math.log(start.lr), math.log(start.batch_size), math.log(max(start.weight_decay, 1e-30))]
        self._z = [_clip(v, lo, hi) if live else v for v, lo, hi, live in zip(logs, self._lo, self._hi, self._live)]
        values = (start.lr, float(start.batch_size), max(start.weight_decay, 1e-30))
        self._v = [x if z == v else math.exp(z) for x, z, v in zip(values, self._z, logs)]  # unclipped: the start itself
        return self.hparams(start)

    def full_action(self, action: Sequence[float] | np.ndarray) -> np.ndarray:
        """The action as three entries (lr, batch size, wd), 0 for disabled controls."""
        return np.array(self._full(action))

    def _full(self, action: Sequence[float] | np.ndarray) -> list[float]:
        a = action.reshape(-1).tolist() if isinstance(action, np.ndarray) else list(np.asarray(action, dtype=np.float64).reshape(-1))
        if len(a) != self.n_actions:
            raise ValueError(f"action must have {self.n_actions} entries ({', '.join(self.controls)}), got {len(a)}")
        full = [0.0, 0.0, 0.0]
        for k, i in enumerate(self._index):
            v = float(a[k])
            if self._live[i] and v == v:  # NaN -> 0
                full[i] = -1.0 if v < -1.0 else (1.0 if v > 1.0 else v)
        return full

    def apply(self, action: Sequence[float] | np.ndarray, current: Hyperparams) -> Hyperparams:
        full = self._full(action)
        for i in range(3):
            if self._live[i]:
                self._set(i, _clip(self._z[i] + full[i] * self._step[i], self._lo[i], self._hi[i]))
        return self.hparams(current)

    def _set(self, i: int, z: float) -> None:
        """Control ``i``'s log value to ``z``; a value that does not move stays exactly as it was
        (a zero action never perturbs the start by a rounding of exp(log(x)))."""
        if z != self._z[i]:
            self._z[i], self._v[i] = z, math.exp(z)

    def hparams(self, current: Hyperparams) -> Hyperparams:
        c, (lr, bs, wd), live = self.config, self._v, self._live
        # clip again after exp(): exp(log(x)) can land one ulp outside the bounds
        return Hyperparams(
            lr=_clip(lr, c.lr.min, c.lr.max) if live[0] else current.lr,
            batch_size=max(1, int(round(bs))) if live[1] else current.batch_size,
            weight_decay=_clip(wd, c.weight_decay.min, c.weight_decay.max) if live[2] else current.weight_decay,
        )

    def live(self, name: str) -> bool:
        """Whether this run moves ``name`` (enabled, and not held by :meth:`reset`)."""
        return self._live[CONTROLS.index(name)]

    def scale(self, name: str, factor: float) -> None:
        """Multiply one control's value by ``factor`` (within its bounds), outside any action:
        the guard's learning-rate cut after a rollback."""
        i = CONTROLS.index(name)
        if self._live[i]:
            self._set(i, _clip(self._z[i] + math.log(factor), self._lo[i], self._hi[i]))

    def narrow(self, name: str, lo: float, hi: float) -> None:
        """Tighten one control's bounds to [lo, hi] within the configured ones (an lr cap
        relative to the start)."""
        i = CONTROLS.index(name)
        self._lo[i] = max(self._lo[i], math.log(lo))
        self._hi[i] = min(self._hi[i], math.log(hi))
        self._set(i, _clip(self._z[i], self._lo[i], self._hi[i]))

    def state_dict(self) -> dict:
        # the bounds too: the start narrows them (trust region, batch size never below the start)
        return {"z": list(self._z), "v": list(self._v), "live": list(self._live), "lo": list(self._lo), "hi": list(self._hi)}

    def load_state_dict(self, state: dict) -> None:
        self._z = [float(v) for v in state["z"]]
        self._v = [float(v) for v in state["v"]] if "v" in state else [math.exp(v) for v in self._z]
        if "live" in state:
            self._live = [bool(v) for v in state["live"]]
        if "lo" in state:
            self._lo, self._hi = [float(v) for v in state["lo"]], [float(v) for v in state["hi"]]


def _clip(v: float, lo: float, hi: float) -> float:
    return lo if v < lo else (hi if v > hi else v)
