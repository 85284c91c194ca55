"""Watching a training loop: per-step statistics summarised per control interval.

:class:`TrainingMonitor` watches any training loop step by step (losses every step; gradient
norm, update-to-parameter ratio and the agreement of successive updates on probe steps only, so
the cost stays small) and summarises an interval as :class:`IntervalStats`. The training
session, the stacked trainer and :class:`rlhpo.Controller` all report through it; the
feature extractor (:mod:`rlhpo.control.features`) turns the summaries into observations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import torch


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


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


class TrainingMonitor:
    """Collects per-step statistics of a training loop over ``params``.

    Call :meth:`before_step` after ``backward()`` and :meth:`after_step` after
    ``optimizer.step()``; pass ``probe=True`` on the steps whose gradient and update statistics
    should be measured (the last two of an interval is enough). :meth:`summary` ends an interval.
    """

    def __init__(self, params: Sequence[torch.nn.Parameter]) -> None:
        self.params = [p for p in params if p.requires_grad]
        self._losses: list[torch.Tensor] = []
        self._before: Optional[list[torch.Tensor]] = None
        self._prev_update: Optional[torch.Tensor] = None
        self._prev_probe_step = -2
        self._step = 0
        self._grad_norm = float("nan")
        self._update_ratio = float("nan")
        self._cosine = 0.0
        self._params_finite = True

    @staticmethod
    def should_probe(remaining_examples: int, batch_size: int) -> bool:
        """Probe the last two steps before an interval ends: enough for the statistics, cheap."""
        return remaining_examples <= 2 * batch_size

    # The non-probe path is the hot path of every training step: no decorators, no syncs.
    def before_step(self, probe: bool) -> None:
        if probe:
            with torch.no_grad():
                grads = [p.grad for p in self.params if p.grad is not None]
                if grads:
                    self._grad_norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
                self._before = [p.detach().clone() for p in self.params]

    def after_step(self, loss: torch.Tensor, probe: bool) -> None:
        self._losses.append(loss.detach())
        if probe and self._before is not None:
            with torch.no_grad():
                self._probe_update()
        self._step += 1

    def _probe_update(self) -> None:
        assert self._before is not None
        update = _flat([p.detach() - b for p, b in zip(self.params, self._before)])
        pnorm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.detach() for p in self.params]))))
        unorm = float(torch.linalg.vector_norm(update))
        self._params_finite = self._params_finite and math.isfinite(pnorm)
        self._update_ratio = unorm / max(pnorm, 1e-12)
        if self._prev_update is not None and self._prev_probe_step == self._step - 1:
            denom = unorm * float(torch.linalg.vector_norm(self._prev_update))
            self._cosine = float(update @ self._prev_update) / denom if denom > 0 else 0.0
        self._prev_update = update
        self._prev_probe_step = self._step
        self._before = None

    def summary(self) -> IntervalStats:
        """Summarise the steps since the last summary and start a new interval."""
        if not self._losses:
            return IntervalStats()
        losses = torch.stack(self._losses).tolist()  # one device sync per interval
        self._losses = []
        stats = summarize_interval(losses, self._grad_norm, self._update_ratio, self._cosine, self._params_finite)
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
