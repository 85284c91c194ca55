"""The batch rule: a larger batch where the gradient noise says it costs few examples.

McCandlish et al. (2018, "An Empirical Model of Large-Batch Training") model a run's optimizer
steps ``S`` and examples ``E`` at batch size ``B`` as ``S = S_min (1 + B_noise / B)`` and
``E = E_min (1 + B / B_noise)``, with ``B_noise`` the gradient noise scale
``tr(Sigma) / |G|^2``. While ``B`` is well below ``B_noise``, doubling it nearly halves the steps
for a few more examples (``B / B_noise`` of them); the noise scale grows as the loss falls, so the
batch can grow with it (Merrill et al. 2025's batch-size warm-up, set by a measurement instead of a
schedule). The rule: at a decision, when ``B_noise >= threshold x B``, the batch doubles (up to
``max_factor`` x the start's) and the lr level follows the scaling rule of the optimizer kind
(``lr_scaling``): x sqrt(2) for Adam-like optimizers, x2 for SGD (Seesaw's equivalence, read the
other way: a doubled batch at sqrt(2) x the lr keeps Adam's per-example dynamics), or kept.

``B_noise`` is :class:`NoiseScale`: exponential moving averages of the interval's estimates of
``tr(Sigma)`` and ``|G|^2`` (:class:`~rlhpo.training.monitor.IntervalStats`' ``noise_trace`` and
``noise_signal``, from pairs of consecutive steps), divided, as McCandlish et al. advise (the ratio
of two noisy averages, not the average of noisy ratios). No torch import.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Optional

from rlhpo.errors import ConfigError

#: how the lr level moves when the batch grows by ``f``: ``auto`` = ``f ** 0.5`` for Adam-like
#: optimizers and ``f`` for SGD; ``sqrt`` and ``linear`` for every kind; ``none`` keeps the level
LR_SCALINGS: tuple[str, ...] = ("auto", "sqrt", "linear", "none")


@dataclass(frozen=True)
class BatchRuleConfig:
    """When the batch grows. The defaults are the best of 15 settings on the ``dev`` split, short
    tasks and workloads (docs/evaluation.md, "The batch rule"): a doubling where the noise scale is
    8x the batch, never leaving the run fewer than 500 optimizer steps.

    :param threshold: the batch doubles when the noise scale is at least this multiple of it
        (McCandlish's model: a doubling then costs about ``1 / threshold`` more examples per unit of
        progress, and saves nearly half the steps)
    :param max_factor: the batch never grows past this multiple of the start's (Seesaw's cap, 8)
    :param lr_scaling: the level's move when the batch grows (:data:`LR_SCALINGS`)
    :param max_fraction: the batch never grows past this fraction of the training set, where the
        loop's sampler knows it (Smith & Le 2018: SGD's noise, which regularises a run of many
        epochs over a small set, scales with the set's size over the batch)
    :param min_steps: the batch never grows when the run would then take fewer optimizer steps than
        this in all (the model's steps have a floor, ``S_min``, that a short run is already near)
    :param ema: the weight of the newest interval in the noise scale's running averages
    :param after: the first decision (1-based) at which the batch may grow: after the warm-up, with
        a few intervals measured
    """

    threshold: float = 8.0
    max_factor: int = 8
    max_fraction: float = 1.0
    min_steps: int = 500
    lr_scaling: str = "auto"
    ema: float = 0.5
    after: int = 2

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and self.threshold >= 1):
            raise ConfigError(f"batch_rule.threshold must be a number >= 1, got {self.threshold!r}")
        if not (isinstance(self.max_factor, int) and self.max_factor >= 1):
            raise ConfigError(f"batch_rule.max_factor must be an integer >= 1, got {self.max_factor!r}")
        if not 0 < self.max_fraction <= 1:
            raise ConfigError(f"batch_rule.max_fraction must be a fraction of the training set in (0, 1], got {self.max_fraction!r}")
        if not (isinstance(self.min_steps, int) and self.min_steps >= 0):
            raise ConfigError(f"batch_rule.min_steps must be an integer >= 0, got {self.min_steps!r}")
        if self.lr_scaling not in LR_SCALINGS:
            raise ConfigError(f"batch_rule.lr_scaling must be one of {list(LR_SCALINGS)}, got {self.lr_scaling!r}")
        if not 0 < self.ema <= 1:
            raise ConfigError(f"batch_rule.ema must be in (0, 1], got {self.ema!r}")
        if not (isinstance(self.after, int) and self.after >= 1):
            raise ConfigError(f"batch_rule.after must be a decision >= 1, got {self.after!r}")

    def lr_factor(self, growth: float, adaptive: bool) -> float:
        """The level's multiplier for a batch grown by ``growth``."""
        kind = self.lr_scaling if self.lr_scaling != "auto" else ("sqrt" if adaptive else "linear")
        return {"sqrt": math.sqrt(growth), "linear": growth, "none": 1.0}[kind]

    def to_dict(self) -> dict:
        return asdict(self)


class NoiseScale:
    """The gradient noise scale ``B_simple`` over a run: moving averages of the intervals'
    ``tr(Sigma)`` and ``|G|^2`` estimates, divided. ``inf`` while the signal estimate is not
    positive (the gradient is all noise at this batch), NaN before any measurement."""

    def __init__(self, ema: float = 0.5) -> None:
        self.ema = float(ema)
        self.trace = math.nan
        self.signal = math.nan

    def update(self, trace: float, signal: float) -> float:
        """Fold in one interval's estimates (NaN: none); returns :attr:`value`."""
        if math.isfinite(trace) and math.isfinite(signal):
            w = self.ema
            self.trace = trace if math.isnan(self.trace) else (1 - w) * self.trace + w * trace
            self.signal = signal if math.isnan(self.signal) else (1 - w) * self.signal + w * signal
        return self.value

    @property
    def value(self) -> float:
        if math.isnan(self.trace):
            return math.nan
        return self.trace / self.signal if self.signal > 0 else math.inf

    def state_dict(self) -> dict:
        return {"trace": self.trace, "signal": self.signal}

    def load_state_dict(self, state: dict) -> None:
        self.trace, self.signal = float(state["trace"]), float(state["signal"])


class BatchRule:
    """:class:`BatchRuleConfig` over one run: :meth:`observe` each decision's interval, then
    :meth:`growth` says by how much the batch grows (1: not)."""

    def __init__(self, config: BatchRuleConfig) -> None:
        self.config = config
        self.noise = NoiseScale(config.ema)
        self.start_batch: Optional[int] = None

    def reset(self, batch_size: int) -> None:
        self.noise = NoiseScale(self.config.ema)
        self.start_batch = int(batch_size)

    def observe(self, trace: float, signal: float) -> float:
        return self.noise.update(trace, signal)

    def growth(self, decision: int, batch_size: int, dataset: Optional[int] = None, steps: int = 0,
               remaining: float = math.inf) -> int:
        """2 when the batch should double at this decision (1-based), else 1.

        :param dataset: the training set's size, where known
        :param steps: optimizer steps so far
        :param remaining: the steps left at the doubled batch (the examples left over it)
        """
        c, b_noise = self.config, self.noise.value
        start = self.start_batch or batch_size
        if decision < c.after or not b_noise >= c.threshold * batch_size:  # NaN: no measurement, no move
            return 1
        cap = min(c.max_factor * start, c.max_fraction * dataset if dataset else math.inf)
        return 2 if 2 * batch_size <= cap and steps + remaining >= c.min_steps else 1

    def state_dict(self) -> dict:
        return {"noise": self.noise.state_dict(), "start_batch": self.start_batch}

    def load_state_dict(self, state: dict) -> None:
        self.noise.load_state_dict(state["noise"])
        self.start_batch = state["start_batch"]
