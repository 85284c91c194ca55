"""The schedules a user would pick instead of the controller, as :class:`~rlhpo.evaluation.runner.Schedule`
hooks: the task's values held constant, warm-up + cosine (at the start's lr, or at a calibrated
default), step decay, ReduceLROnPlateau, hypergradient descent, Schedule-Free AdamW/SGD, Prodigy
+ cosine, and the open-loop replay of a recorded schedule (the ablation).
torch's own schedulers do the work wherever one exists; Schedule-Free and Prodigy are their
packages' optimizers, used as their READMEs say.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from rlhpo.control.decision import step_factor
from rlhpo.evaluation.runner import Schedule
from rlhpo.tasks import Hyperparams
from rlhpo.training.monitor import IntervalStats
from rlhpo.training.session import TrainingSession


class Constant(Schedule):
    """The task's starting hyperparameters, unchanged (or given ones)."""

    name = "constant"

    def __init__(self, hparams: Optional[Hyperparams] = None) -> None:
        self.hparams = hparams

    def start(self, session: TrainingSession, n_intervals: int) -> None:
        if self.hparams is not None:
            session.set_hparams(self.hparams)


class Replay(Schedule):
    """Replays recorded per-interval hyperparameters open-loop (the schedule-replay ablation)."""

    name = "replay"

    def __init__(self, per_interval: list[Hyperparams]) -> None:
        self.per_interval = list(per_interval)
        self._k = 0

    def start(self, session: TrainingSession, n_intervals: int) -> None:
        self._k = 0
        if self.per_interval:
            session.set_hparams(self.per_interval[0])

    def end_interval(self, session: TrainingSession, stats: IntervalStats, val_loss: float) -> None:
        self._k += 1
        if self._k < len(self.per_interval):
            session.set_hparams(self.per_interval[self._k])


def total_steps(session: TrainingSession) -> int:
    """Optimizer steps of a run that keeps its batch size: the budget over the batch size."""
    return max(1, math.ceil(session.budget / session.sampler.batch_size))


def torch_scheduler_hooks(make: Any) -> type:
    """Build a :class:`Schedule` class around a ``torch.optim.lr_scheduler`` stepped per step.

    ``make(optimizer, total_steps)`` returns the scheduler; ``total_steps`` is the budget divided
    by the starting batch size (these schedules keep the batch size constant).
    """

    class _TorchSchedule(Schedule):
        def __init__(self, hparams: Optional[Hyperparams] = None) -> None:
            self.hparams = hparams  # None: the start's values

        def start(self, session: TrainingSession, n_intervals: int) -> None:
            if self.hparams is not None:
                session.set_hparams(self.hparams)
            self.scheduler = make(session.optimizer, total_steps(session))

        def after_step(self, session: TrainingSession) -> None:
            self.scheduler.step()

    return _TorchSchedule


def _cosine(optimizer: torch.optim.Optimizer, total: int, warmup_fraction: float = 0.05) -> Any:
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    warm = max(1, int(total * warmup_fraction))
    return SequentialLR(
        optimizer,
        [LinearLR(optimizer, start_factor=1.0 / warm, total_iters=warm), CosineAnnealingLR(optimizer, T_max=max(1, total - warm))],
        milestones=[warm],
    )


class Cosine(torch_scheduler_hooks(_cosine)):  # type: ignore[misc]
    """Cosine decay to zero with a linear warm-up over the first 5% of steps, at the start's lr
    (or at given ``hparams``)."""

    name = "cosine"


class Calibrated(Schedule):
    """Warm-up + cosine at a calibrated default: one lr and weight decay per optimizer kind, chosen
    once on the meta-training families (``python -m rlhpo.evaluation.calibrate``; stored in
    ``conf/evaluate/calibrated.yaml``), the batch size of the start. AlgoPerf's
    calibrated-baseline idea, applied to this project's optimizers.

    The schedule is the decision path's base schedule, set before every optimizer step
    (:func:`rlhpo.control.decision.step_factor`: 5% linear warm-up, cosine to zero at the budget):
    the controller's prior with every action zero (``prior_only``) is this run, step for step.

    :param defaults: ``{optimizer kind: {"lr": ..., "weight_decay": ...}}``
    """

    name = "calibrated"

    def __init__(self, defaults: dict) -> None:
        self.defaults = defaults

    def start(self, session: TrainingSession, n_intervals: int) -> None:
        kind = session.task.optimizer
        if kind not in self.defaults:
            raise ValueError(f"no calibrated default for optimizer {kind!r}; calibrated has {sorted(self.defaults)}")
        d = self.defaults[kind]
        hp = session.set_hparams(Hyperparams(float(d["lr"]), session.sampler.batch_size, float(d["weight_decay"])))
        peak, total = float(d["lr"]), session.budget
        session.lr_schedule = lambda seen, n: peak * step_factor("cosine", seen, n, total)
        self.hparams = hp


def has_batchnorm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


class ScheduleFree(Schedule):
    """Schedule-Free (Defazio et al. 2024; the ``schedulefree`` package): ``AdamWScheduleFree``
    for Adam/AdamW tasks, ``SGDScheduleFree`` (momentum 0.9) for SGD tasks, replacing the task's
    optimizer at the start's lr and weight decay, with a linear warm-up over the first 5% of the
    steps and no schedule. ``optimizer.train()`` runs before training and after every
    evaluation, ``optimizer.eval()`` before every evaluation (validation and test are read at
    the averaged weights, as the package requires).

    BatchNorm caveat (the package's README): running statistics gathered at the training-mode
    weights are wrong for the averaged ones, so for a model with BatchNorm the statistics are
    recomputed at the averaged weights on up to ``bn_batches`` training batches before each
    evaluation. Adam tasks (coupled L2 decay) get AdamW's decoupled decay: the package has no
    coupled variant.
    """

    name = "schedulefree"

    def __init__(self, warmup_fraction: float = 0.05, bn_batches: int = 10) -> None:
        self.warmup_fraction, self.bn_batches = warmup_fraction, bn_batches

    def make_optimizer(self, session: TrainingSession) -> torch.optim.Optimizer:
        import schedulefree

        hp, params = session.hparams, session.model.parameters()
        warmup = max(1, int(total_steps(session) * self.warmup_fraction))
        if session.task.optimizer == "sgd":
            opt = schedulefree.SGDScheduleFree(params, lr=hp.lr, momentum=0.9, weight_decay=hp.weight_decay, warmup_steps=warmup)
        else:
            opt = schedulefree.AdamWScheduleFree(params, lr=hp.lr, weight_decay=hp.weight_decay, warmup_steps=warmup)
        opt.train()
        return opt

    def before_evaluate(self, session: TrainingSession) -> None:
        session.optimizer.eval()  # type: ignore[attr-defined]
        if has_batchnorm(session.model) and self.bn_batches > 0:
            self._recompute_bn(session)

    def after_evaluate(self, session: TrainingSession) -> None:
        session.optimizer.train()  # type: ignore[attr-defined]

    @torch.no_grad()
    def _recompute_bn(self, session: TrainingSession) -> None:
        """Running statistics at the averaged weights, from training batches in a fixed order
        (a generator of its own: the session's batch order is not disturbed)."""
        model, x = session.model, session.train_split.x
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
        g = torch.Generator().manual_seed(session.seed)
        perm = torch.randperm(len(x), generator=g)
        bs = session.sampler.batch_size
        model.train()
        for i in range(min(self.bn_batches, math.ceil(len(x) / bs))):
            model(x[perm[i * bs : (i + 1) * bs]].to(x.device))


class Prodigy(Schedule):
    """Prodigy (Mishchenko & Defazio 2024; ``prodigyopt``) as its README recommends: lr 1.0 with
    a cosine schedule (here after a 5% linear warm-up, hence ``safeguard_warmup=True``),
    ``use_bias_correction=True``, the start's weight decay (decoupled, as AdamW, except on Adam
    tasks, whose decay is coupled), the start's batch size. It replaces the task's optimizer,
    whichever it was; it estimates the step size itself."""

    name = "prodigy"

    def __init__(self, warmup_fraction: float = 0.05) -> None:
        self.warmup_fraction = warmup_fraction
        self.scheduler: Any = None

    def make_optimizer(self, session: TrainingSession) -> torch.optim.Optimizer:
        import contextlib
        import io

        from prodigyopt import Prodigy as _Prodigy

        with contextlib.redirect_stdout(io.StringIO()):  # it prints its weight-decay mode
            return _Prodigy(
                session.model.parameters(),
                lr=1.0,
                weight_decay=session.hparams.weight_decay,
                decouple=session.task.optimizer != "adam",
                use_bias_correction=True,
                safeguard_warmup=True,
            )

    def start(self, session: TrainingSession, n_intervals: int) -> None:
        self.scheduler = _cosine(session.optimizer, total_steps(session), self.warmup_fraction)

    def after_step(self, session: TrainingSession) -> None:
        self.scheduler.step()


# -- baselines for the evaluation harness (python -m rlhpo.evaluate) ----------------------------


def _multistep(optimizer: torch.optim.Optimizer, total: int) -> Any:
    from torch.optim.lr_scheduler import MultiStepLR

    return MultiStepLR(optimizer, milestones=[max(1, total // 2), max(1, (3 * total) // 4)], gamma=0.1)


class StepDecay(torch_scheduler_hooks(_multistep)):  # type: ignore[misc]
    """Step decay (``torch.optim.lr_scheduler.MultiStepLR``): the lr times 0.1 at 50% and again at
    75% of the steps, from the default lr."""

    name = "step"


class Plateau(Schedule):
    """``torch.optim.lr_scheduler.ReduceLROnPlateau`` stepped on the validation loss at the end of
    each control interval.

    :param factor: multiplies the lr when the validation loss stalls
    :param patience: intervals without improvement tolerated before a reduction
    """

    name = "plateau"

    def __init__(self, factor: float = 0.5, patience: int = 2) -> None:
        self.factor, self.patience = factor, patience
        self.scheduler: Any = None

    def start(self, session: TrainingSession, n_intervals: int) -> None:
        from torch.optim.lr_scheduler import ReduceLROnPlateau

        self.scheduler = ReduceLROnPlateau(session.optimizer, mode="min", factor=self.factor, patience=self.patience)

    def end_interval(self, session: TrainingSession, stats: IntervalStats, val_loss: float) -> None:
        self.scheduler.step(val_loss)


class Hypergradient(Schedule):
    """Hypergradient descent on the learning rate, multiplicative rule (Baydin et al., 2018)::

        lr <- lr * (1 - beta * cos(g_t, Δθ_{t-1}))

    before each step, where ``g_t`` is the current gradient and ``Δθ_{t-1}`` the previous
    parameter update. The paper's ``∇_α u`` is ``Δθ_{t-1} / lr`` for any optimizer whose update is
    linear in the lr (SGD with momentum, Adam, AdamW with its decoupled decay), so the measured
    update gives the exact direction without knowing the optimizer's internals. When successive
    gradients agree (``Δθ`` points against ``g_t``) the lr grows; when they oscillate, it shrinks.
    The batch size and weight decay stay at the task's defaults.

    :param beta: the hypergradient learning rate, in (0, 1) so the lr stays positive
    """

    name = "hypergradient"

    def __init__(self, beta: float = 0.02) -> None:
        if not (0.0 < beta < 1.0):
            raise ValueError(f"hypergradient beta must be in (0, 1), got {beta!r}")
        self.beta = float(beta)
        self._params: list[torch.Tensor] = []
        self._before: Optional[torch.Tensor] = None
        self._delta: Optional[torch.Tensor] = None

    def start(self, session: TrainingSession, n_intervals: int) -> None:
        self._params = [p for g in session.optimizer.param_groups for p in g["params"] if p.requires_grad]
        self._before, self._delta = None, None

    def _flat_grad(self) -> torch.Tensor:
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in self._params])

    def before_step(self, session: TrainingSession) -> None:
        if self._delta is not None:
            cos = float(torch.nn.functional.cosine_similarity(self._flat_grad(), self._delta, dim=0, eps=1e-12))
            if math.isfinite(cos):  # a non-finite gradient is the divergence check's business
                for g in session.optimizer.param_groups:
                    g["lr"] = float(g["lr"]) * (1.0 - self.beta * cos)
        # torch.cat copies, so this is the parameters before the step
        self._before = torch.cat([p.detach().reshape(-1) for p in self._params])

    def after_step(self, session: TrainingSession) -> None:
        if self._before is not None:
            self._delta = torch.cat([p.detach().reshape(-1) for p in self._params]) - self._before


# -- Seesaw: a batch-size ramp instead of lr decay ---------------------------------------------


def seesaw_point(examples: float, budget: int, warmup: float, batch0: int, ramps: int) -> tuple[float, int]:
    """Seesaw's schedule at ``examples`` seen: ``(lr multiplier of the peak lr, ramps done)``.

    The base schedule is warm-up + cosine over examples: linear from ``batch0 / warmup`` to 1 over
    the first ``warmup`` examples (a step-count warm-up at the starting batch size), then the
    cosine factor ``c`` decays to 0 at ``budget``. Where ``c`` crosses 1/2, 1/4, 1/8, ... the base
    schedule has halved the lr once more; Seesaw, for the first ``ramps`` of those points, instead
    doubles the batch size and multiplies the lr by 1/sqrt(2) only (the paper's step form: after
    ``k`` ramps the multiplier is ``2**(-k/2)``, constant until the next one). After the last ramp
    the lr follows the cosine from there: ``c * 2**(ramps/2)`` (continuous, ``2**(-ramps/2)`` at
    that point); with ``ramps`` = 0 it is the plain warm-up + cosine.
    """
    if examples < warmup:
        return min(1.0, (examples + batch0) / warmup), 0
    c = 0.5 * (1.0 + math.cos(math.pi * min(1.0, (examples - warmup) / max(1.0, budget - warmup))))
    k = ramps if c <= 0 else min(ramps, max(0, math.floor(-math.log2(c) + 1e-12)))
    return (c * 2.0 ** (k / 2) if k == ramps else 2.0 ** (-k / 2)), k


def seesaw_ramp_examples(budget: int, warmup: float, ramps: int) -> list[float]:
    """The examples seen at which :func:`seesaw_point`'s ramps happen (the cosine factor's
    crossings of 1/2, 1/4, ..., ``ramps`` of them)."""
    return [warmup + (budget - warmup) * math.acos(2.0 * 2.0**-k - 1.0) / math.pi for k in range(1, ramps + 1)]


class Seesaw(Schedule):
    """Seesaw (Meterez et al. 2025): warm-up + cosine at the calibrated default (as
    :class:`Calibrated`: lr and weight decay per optimizer kind, the start's batch size), except
    that wherever the cosine would halve the lr, the lr is multiplied by 1/sqrt(2) and the batch
    size doubled instead (:func:`seesaw_point`; the lr stays put between those points), up to a
    cap of ``max_batch_factor`` x the start's batch size or the training set, whichever is
    smaller; past the cap the lr follows the cosine.
    The schedule runs on examples seen, so the run spends the same example budget in fewer
    optimizer steps. The lr is set before every step (every param group keeps its ratio to the
    first).

    :param defaults: ``{optimizer kind: {"lr": ..., "weight_decay": ...}}`` (the calibrated defaults)
    """

    name = "seesaw"

    def __init__(self, defaults: dict, max_batch_factor: int = 8, warmup_fraction: float = 0.05) -> None:
        if not (max_batch_factor >= 1):
            raise ValueError(f"seesaw: max_batch_factor must be >= 1, got {max_batch_factor!r}")
        self.defaults, self.max_batch_factor, self.warmup_fraction = defaults, int(max_batch_factor), warmup_fraction
        self.ramps, self.k = 0, 0

    def start(self, session: TrainingSession, n_intervals: int) -> None:
        kind = session.task.optimizer
        if kind not in self.defaults:
            raise ValueError(f"no calibrated default for optimizer {kind!r}; calibrated has {sorted(self.defaults)}")
        d = self.defaults[kind]
        self.batch0 = session.sampler.batch_size
        session.set_hparams(Hyperparams(float(d["lr"]), self.batch0, float(d["weight_decay"])))
        self.base_lrs = [float(g["lr"]) for g in session.optimizer.param_groups]
        cap = min(self.max_batch_factor * self.batch0, session.sampler.n)
        self.ramps = max(0, math.floor(math.log2(cap / self.batch0) + 1e-9))
        self.warmup = max(float(self.batch0), self.warmup_fraction * session.budget)
        self.k = 0
        self._apply(session)

    def after_step(self, session: TrainingSession) -> None:
        self._apply(session)

    def _apply(self, session: TrainingSession) -> None:
        """The lr (and, at a ramp, the batch size) of the next step."""
        factor, k = seesaw_point(session.examples_seen, session.budget, self.warmup, self.batch0, self.ramps)
        if k != self.k:  # a ramp: the batch size through the session's sampler, from the next batch on
            self.k = k
            hp = session.hparams  # its lr is overwritten below (and may be 0 at the very end)
            session.set_hparams(Hyperparams(self.base_lrs[0], self.batch0 * 2**k, hp.weight_decay))
        for g, lr in zip(session.optimizer.param_groups, self.base_lrs):
            g["lr"] = lr * factor
