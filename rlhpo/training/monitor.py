"""Watching a training loop: per-step statistics summarised per control interval.

:class:`TrainingMonitor` watches any training loop step by step (losses every step; gradient
norm, update-to-parameter ratio and the agreement of successive updates on probe steps only, so
the cost stays small; the gradient noise scale on pairs of consecutive steps of the interval's
last :data:`NOISE_STEPS`) and summarises an interval as :class:`IntervalStats`. The training
session, the stacked trainer and :class:`rlhpo.Controller` all report through it; the
feature extractor (:mod:`rlhpo.control.features`) turns the summaries into observations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch._utils import _flatten_dense_tensors


@dataclass
class IntervalStats:
    """What happened in one control interval of training."""

    steps: int = 0
    loss_mean: float = float("nan")
    loss_first_half: float = float("nan")
    loss_second_half: float = float("nan")
    loss_std: float = 0.0
    grad_norm: float = float("nan")
    update_ratio: float = float("nan")
    update_cosine: float = 0.0
    nonfinite: bool = False
    #: the gradient noise (McCandlish et al. 2018, "An Empirical Model of Large-Batch Training") from
    #: pairs of consecutive steps at one batch size ``B`` with gradients ``g1, g2``: the mean of
    #: ``B |g1 - g2|^2 / 2``, an unbiased estimate of tr(Sigma), the per-example gradient covariance's
    #: trace (NaN: no pair measured)
    noise_trace: float = float("nan")
    #: the mean of ``g1 . g2``, an unbiased estimate of |G|^2, the true gradient's squared norm
    #: (the noise scale B_simple = noise_trace / noise_signal, best over several intervals:
    #: :class:`rlhpo.control.batch_rule.NoiseScale`)
    noise_signal: float = float("nan")


#: the last optimizer steps of an interval whose gradients are measured in pairs for the noise
#: scale (4 pairs; a flat copy of the gradient and a dot product each)
NOISE_STEPS = 8


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """All of ``tensors`` (at least one) as one flat vector, in one call where ``torch.cat``
    of views costs a dispatch per tensor; call under ``no_grad``. A view of a lone tensor."""
    return _flatten_dense_tensors(tensors)


def _flat_copy(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """:func:`_flat`, never sharing memory with ``tensors``."""
    flat = _flatten_dense_tensors(tensors)
    return flat.clone() if len(tensors) == 1 else flat  # several tensors: already a new buffer


class TrainingMonitor:
    """Collects per-step statistics of a training loop over ``params``.

    Call :meth:`before_step` after ``backward()`` and :meth:`after_step` after
    ``optimizer.step()``; pass ``probe=True`` on the steps whose gradient and update statistics
    should be measured (the last two of an interval is enough). :meth:`summary` ends an interval.
    """

    def __init__(self, params: Sequence[torch.nn.Parameter], noise: bool = False) -> None:
        self.params = [p for p in params if p.requires_grad]
        #: measure the gradient noise (a batch rule reads it); off, nothing is copied for it
        self.noise = noise
        # a loss on the CPU is read at once (no device to wait for, and the summary needs no
        # stacking); one on a device stays a tensor until the summary's one sync
        self._losses: list = []
        self._loss_tensors = False
        self._before: Optional[torch.Tensor] = None
        self._followed = False
        self._next_before: Optional[tuple[int, torch.Tensor]] = None
        self._prev_update: Optional[torch.Tensor] = None
        self._prev_unorm = 0.0
        self._prev_probe_step = -2
        self._step = 0
        self._grad_norm = float("nan")
        self._update_ratio = float("nan")
        self._cosine = 0.0
        self._params_finite = True
        self._noise_prev: Optional[tuple[int, int, torch.Tensor]] = None  # (step, batch size, gradient)
        self._noise_pairs: list[tuple[torch.Tensor, torch.Tensor, int]] = []  # (|g1 - g2|^2, g1 . g2, B)

    @staticmethod
    def should_probe(remaining_examples: int, batch_size: int) -> bool:
        """Probe the last two steps before an interval ends: enough for the statistics, cheap."""
        return remaining_examples <= 2 * batch_size

    def should_measure(self, remaining_examples: int, batch_size: int) -> bool:
        """Call :meth:`before_step` on this step: a probe step (:meth:`should_probe`), or with
        :attr:`noise` one of the interval's last :data:`NOISE_STEPS`."""
        return remaining_examples <= (NOISE_STEPS if self.noise else 2) * batch_size

    # The non-probe path is the hot path of every training step: no decorators, no syncs.
    # On a tiny task a third of the steps are probe steps (intervals of a few steps), so they
    # are kept to few tensor operations too: flat copies instead of one clone and one
    # subtraction per parameter, the previous update's norm remembered, and nothing measured
    # that a following probe step overwrites.
    def before_step(self, probe: bool, followed: bool = False, batch_size: int = 0) -> None:
        """Call after ``backward()`` on the steps :meth:`should_measure` names (others: nothing
        is measured there).

        :param probe: this is a probe step (:meth:`should_probe`): gradient norm and update statistics
        :param batch_size: the step's examples (all ranks'); 0 measures no noise

        :param followed: the caller guarantees that the next step is a probe step of the same
            interval and that nothing but the optimizer changes the parameters until then (the
            training session without hooks). That step overwrites this one's gradient norm,
            update ratio and cosine, so the gradient norm and cosine are skipped here, and the
            parameters after this step serve as the next step's starting point. The summary is
            the same as without it.
        """
        if batch_size > 0 and self.noise:
            self._measure_noise(batch_size)
        if probe:
            with torch.no_grad():
                if not followed:
                    grads = [p.grad for p in self.params if p.grad is not None]
                    if grads:
                        self._grad_norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
                if self._next_before is not None and self._next_before[0] == self._step:
                    self._before = self._next_before[1]  # unchanged since the previous step ended
                else:
                    self._before = _flat_copy(self.params) if self.params else None
                self._next_before = None
            self._followed = followed

    def _measure_noise(self, batch_size: int) -> None:
        """The gradient of this step; with the previous step's (same batch size), one pair of the
        noise estimate. Pairs do not overlap, so they are independent. Tensors stay on the device
        until the summary."""
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return
        with torch.no_grad():
            g = _flat(grads).to(torch.float64, copy=True)  # float32 sums over millions of entries lose the signal
            prev = self._noise_prev
            if prev is not None and prev[0] == self._step - 1 and prev[1] == batch_size and prev[2].shape == g.shape:
                d = g - prev[2]
                self._noise_pairs.append((d @ d, g @ prev[2], batch_size))
                self._noise_prev = None
            else:
                self._noise_prev = (self._step, batch_size, g)

    def _noise_summary(self) -> tuple[float, float]:
        """(noise_trace, noise_signal) of the interval's pairs; NaN without a finite pair."""
        pairs, self._noise_pairs, self._noise_prev = self._noise_pairs, [], None
        if not pairs:
            return float("nan"), float("nan")
        values = torch.stack([torch.stack((d, s)) for d, s, _ in pairs]).cpu().tolist()  # one sync
        trace = [b * d / 2.0 for (d, _), (_, _, b) in zip(values, pairs)]
        signal = [s for _, s in values]
        ok = [i for i in range(len(pairs)) if math.isfinite(trace[i]) and math.isfinite(signal[i])]
        if not ok:
            return float("nan"), float("nan")
        return math.fsum(trace[i] for i in ok) / len(ok), math.fsum(signal[i] for i in ok) / len(ok)

    def after_step(self, loss: torch.Tensor, probe: bool) -> None:
        """Call after ``optimizer.step()`` with the step's loss."""
        if loss.is_cpu:
            self._losses.append(loss.item())
        else:
            self._losses.append(loss.detach())
            self._loss_tensors = True
        if probe and self._before is not None:
            with torch.no_grad():
                self._probe_update()
        self._step += 1

    def _probe_update(self) -> None:
        assert self._before is not None
        after = _flat_copy(self.params) if self._followed else _flat(self.params)
        update = after - self._before  # elementwise as (p - before) per parameter
        pnorm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(self.params))))
        unorm = float(torch.linalg.vector_norm(update))
        self._params_finite = self._params_finite and math.isfinite(pnorm)
        self._update_ratio = unorm / max(pnorm, 1e-12)
        if self._followed:
            self._next_before = (self._step + 1, after)
        elif self._prev_update is not None and self._prev_probe_step == self._step - 1:
            denom = unorm * self._prev_unorm
            self._cosine = float(update @ self._prev_update) / denom if denom > 0 else 0.0
        self._prev_update, self._prev_unorm = update, unorm
        self._prev_probe_step = self._step
        self._before = None

    _STATE = ("_followed", "_prev_unorm", "_prev_probe_step", "_step", "_grad_norm", "_update_ratio", "_cosine", "_params_finite")

    def state_dict(self) -> dict:
        """The interval in progress (losses so far, probe measurements): a checkpoint taken between
        two decisions resumes to the same next decision. Tensors and plain types only."""
        losses = [float(v) for v in self._losses]
        state = {k: getattr(self, k) for k in self._STATE}
        nb = self._next_before
        np_ = self._noise_prev
        return {**state, "losses": losses, "prev_update": self._prev_update,
                "next_before": None if nb is None else {"step": nb[0], "flat": nb[1]},
                "noise_pairs": [[float(d), float(s), int(b)] for d, s, b in self._noise_pairs],
                "noise_prev": None if np_ is None else {"step": np_[0], "batch_size": np_[1], "grad": np_[2]}}

    def load_state_dict(self, state: dict) -> None:
        for k in self._STATE:
            setattr(self, k, state[k])
        self._losses, self._loss_tensors = list(state["losses"]), False
        self._prev_update = state["prev_update"]
        nb = state["next_before"]
        self._next_before = None if nb is None else (int(nb["step"]), nb["flat"])
        self._before = None
        # a checkpoint of an earlier rlhpo has no noise measurements: the interval's pairs start anew
        self._noise_pairs = [(torch.tensor(d, dtype=torch.float64), torch.tensor(s, dtype=torch.float64), int(b))
                             for d, s, b in state.get("noise_pairs", [])]
        npv = state.get("noise_prev")
        self._noise_prev = None if npv is None else (int(npv["step"]), int(npv["batch_size"]), npv["grad"])

    def summary(self) -> IntervalStats:
        """Summarise the steps since the last summary and start a new interval."""
        noise = self._noise_summary()
        if not self._losses:
            return IntervalStats()
        losses = self._losses
        if self._loss_tensors:  # one device sync for the interval
            tensors = [v for v in losses if isinstance(v, torch.Tensor)]
            read = iter(torch.stack(tensors).tolist())
            losses = [next(read) if isinstance(v, torch.Tensor) else v for v in losses]
        self._losses, self._loss_tensors = [], False
        stats = summarize_interval(losses, self._grad_norm, self._update_ratio, self._cosine, self._params_finite)
        stats.noise_trace, stats.noise_signal = noise
        self._grad_norm, self._update_ratio, self._cosine = float("nan"), float("nan"), 0.0
        self._params_finite = True
        return stats


def summarize_interval(
    losses: Sequence[float], grad_norm: float, update_ratio: float, cosine: float, params_finite: bool
) -> IntervalStats:
    """An interval's statistics from its minibatch losses and its last probe's measurements.

    Shared by :class:`TrainingMonitor` and the batched environment's stacked monitor.
    """
    n = len(losses)
    if n == 0:
        return IntervalStats()
    half = max(1, n // 2)
    finite = all(math.isfinite(v) for v in losses)
    mean = math.fsum(losses) / n if finite else float("nan")
    return IntervalStats(
        steps=n,
        loss_mean=mean,
        loss_first_half=math.fsum(losses[:half]) / half if finite else float("nan"),
        loss_second_half=math.fsum(losses[half:]) / (n - half) if finite and n > 1 else mean,
        loss_std=math.sqrt(math.fsum((v - mean) ** 2 for v in losses) / n) if finite and n > 1 else 0.0,
        grad_norm=grad_norm,
        update_ratio=update_ratio,
        update_cosine=cosine,
        nonfinite=not finite or math.isinf(grad_norm) or not params_finite,
    )
