"""The lr level from an online estimate: Prodigy's, over the first stretch of a long run.

Independent checks found Prodigy's step-size estimate picks the right lr on many unseen tasks where
the calibrated one is wrong, with a fatal tail where its estimate stays far too small. Measured
here (``python -m bench.lr_fit report ... --prodigy-train``, docs/results/lr_fit.md): on short runs
(a few hundred optimizer steps) the estimate is still growing when the run ends and predicts
nothing; where it has stopped growing it points the way the full-length lr grid does. So the
estimate is taken only where it can settle, on runs of realistic length, and kept only where it has:

* runs projected to take at least ``min_steps`` optimizer steps, with an Adam-like optimizer
  (Prodigy's estimate is an Adam step size); anything else keeps the prior;
* over the first ``fraction`` of the budget the lr is ``d x`` the base schedule (its warm-up),
  ``d`` Prodigy's running estimate, exactly as the ``prodigy`` baseline sets its own lr; the run's
  own optimizer takes the steps, so this works in any loop the Controller drives;
* at the first decision after that stretch the level becomes ``d`` (within the trust region
  around the prior) if ``d`` grew by at most ``settle`` x over the last quarter of the stretch's
  steps; else the prior's level.

The estimate is Prodigy's (Mishchenko & Defazio 2024; ``prodigyopt.Prodigy`` with
``safeguard_warmup=True`` and ``use_bias_correction=True``, as the ``prodigy`` baseline runs it):
``d = max_t d_hat_t``, ``d_hat = sum_k l_k <g_k, x_0 - x_k> / ||s||_1``, ``s = sum_k beta3^(t-k) (d_k/d_0) d_k g_k``,
``l_k = (d_k/d_0) x`` the step's lr x Adam's bias correction (the numerator decays by ``beta3`` too).
prodigyopt computes it inside its own optimizer step only; this computes it beside another
optimizer's, in that optimizer's step post-hook, from the step's gradients and the weights the
step started from (kept from the step before: a closure-based step, as Lightning's, computes its
gradients inside ``step()``, after any pre-hook); tests/unit/test_lr_estimate.py checks it against
prodigyopt's ``d``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch

from rlhpo.errors import ConfigError


@dataclass(frozen=True)
class EstimateConfig:
    """When the lr level comes from the estimate. The defaults are the best of five settings on the
    ``dev`` workloads (``python -m bench.probe_sweep --kind estimate --families workloads_dev
    --starts sensible --n-tasks 1 --seeds 3``, docs/results/estimate_sweep.md): a fifth of the run
    settles the estimate on 6 of 6 runs (a tenth: 3 of 6).

    :param fraction: the stretch at the start of the run over which the estimate runs (the lr is
        ``d`` x the base schedule there); the level is set at the first decision after it
    :param min_steps: runs projected (budget / starting batch) to take fewer optimizer steps keep the prior
    :param settle: the estimate is kept only if it grew by at most this factor over the stretch's last quarter
    """

    fraction: float = 0.2
    min_steps: int = 1000
    settle: float = 1.25

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 0.25:
            raise ConfigError(f"lr_estimate.fraction must be a share of the budget in (0, 0.25], got {self.fraction}")
        if not (isinstance(self.min_steps, int) and self.min_steps >= 0):
            raise ConfigError(f"lr_estimate.min_steps must be an integer >= 0, got {self.min_steps!r}")
        if not (self.settle >= 1 and math.isfinite(self.settle)):
            raise ConfigError(f"lr_estimate.settle must be a finite factor >= 1, got {self.settle}")

    def to_dict(self) -> dict:
        return asdict(self)


def _total(values: list[torch.Tensor]) -> float:
    """The sum of scalar tensors as a float: added on the first one's device, one transfer."""
    if not values:
        return 0.0
    device = values[0].device
    return float(torch.stack([v.to(device) for v in values]).sum())


class ProdigyEstimate:
    """Prodigy's step-size estimate ``d`` for the steps of ``optimizer`` (see the module doc).

    :meth:`begin` snapshots the weights and hooks the optimizer; after every step ``d`` is updated
    from the step's gradients, the weights it started from and its lr; :meth:`end` unhooks and frees.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, d0: float = 1e-6) -> None:
        self.optimizer, self.d0 = optimizer, float(d0)
        group = optimizer.param_groups[0]
        self.beta1, self.beta2 = (float(b) for b in group.get("betas", (0.9, 0.999)))
        self.beta3 = math.sqrt(self.beta2)
        self.d = self.d_max = self.d0
        self.numerator, self.k = 0.0, 0
        self.trajectory: list[float] = []  # d after each step
        self._p0: list[torch.Tensor] = []
        self._prev: list[torch.Tensor] = []  # the weights the next step starts from
        self._s: list[torch.Tensor] = []
        self._hook: Any = None

    @property
    def active(self) -> bool:
        return self._hook is not None

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def begin(self) -> None:
        params = self._params()
        self._p0 = [p.detach().clone() for p in params]
        self._prev = [p.detach().clone() for p in params]
        self._s = [torch.zeros_like(p, memory_format=torch.preserve_format).detach() for p in params]
        self.d = self.d_max = self.d0
        self.numerator, self.k, self.trajectory = 0.0, 0, []
        self._hook = self.optimizer.register_step_post_hook(self._after_step)

    def _after_step(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.observe()

    @torch.no_grad()
    def observe(self, lr: Optional[float] = None) -> None:
        """One optimizer step: update ``d`` from its gradients, the weights it started from and each
        param group's lr (or ``lr`` for all of them), and remember the weights the next step starts
        from. A group at lr 0 is left out, as prodigyopt leaves it."""
        d, d0 = self.d, self.d0
        k = self.k
        bias = math.sqrt(1 - self.beta2 ** (k + 1)) / (1 - self.beta1 ** (k + 1))
        numerator = self.numerator * self.beta3
        dots, sums = [], []  # on the parameters' devices: one transfer per step, not one per tensor
        params = iter(zip(self._p0, self._prev, self._s))
        for group in self.optimizer.param_groups:
            dlr = (float(group["lr"]) if lr is None else lr) * bias  # the step's size (the lr holds d: d x the schedule)
            for p in group["params"]:
                p0, prev, s = next(params)
                if p.grad is not None and dlr > 0:
                    g = p.grad.float()
                    dots.append((d / d0) * dlr * torch.dot(g.flatten(), (p0 - prev).float().flatten()))
                    s.mul_(self.beta3).add_(p.grad, alpha=(d / d0) * d)  # safeguard_warmup: the schedule stays out of s
                    sums.append(s.float().abs().sum())
                prev.copy_(p)
        self.k = k + 1
        delta, denom = _total(dots), _total(sums)
        self.numerator = numerator + delta
        if denom > 0:
            d_hat = self.numerator / denom
            self.d_max = max(self.d_max, d_hat)
            self.d = max(self.d, self.d_max)
        self.trajectory.append(self.d)

    def growth(self) -> float:
        """How much ``d`` grew over the last quarter of its steps (inf before any step)."""
        if not self.trajectory:
            return math.inf
        return self.d / self.trajectory[int(0.75 * (len(self.trajectory) - 1))]

    def settled(self, factor: float) -> bool:
        """Whether ``d`` has grown and grew by at most ``factor`` over the last quarter of its steps."""
        return self.d > self.d0 and self.growth() <= factor

    def end(self) -> float:
        """Unhook, free the snapshots; the estimate."""
        if self._hook is not None:
            self._hook.remove()
        self._hook, self._p0, self._prev, self._s = None, [], [], []
        return self.d

    def state_dict(self) -> Optional[dict]:
        """The estimate's state, or None when it is not running (a checkpoint mid-stretch keeps its tensors)."""
        if not self.active:
            return None
        return {"d": self.d, "d_max": self.d_max, "numerator": self.numerator, "k": self.k, "trajectory": list(self.trajectory),
                "p0": [t.clone() for t in self._p0], "prev": [t.clone() for t in self._prev], "s": [t.clone() for t in self._s]}

    def load_state_dict(self, state: Optional[dict]) -> None:
        if state is None:
            self.end()
            return
        if not self.active:
            self.begin()
        self.d, self.d_max, self.numerator, self.k = float(state["d"]), float(state["d_max"]), float(state["numerator"]), int(state["k"])
        self.trajectory = [float(v) for v in state["trajectory"]]
        for dst, src in zip(self._p0, state["p0"]):
            dst.copy_(src)
        for dst, src in zip(self._s, state["s"]):
            dst.copy_(src)
        for dst, src in zip(self._prev, state["prev"]):
            dst.copy_(src)
