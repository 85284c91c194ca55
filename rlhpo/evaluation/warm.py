"""Warm-start methods of the evaluation harness (issue 17): the task's start replaced by a
recommendation, then a schedule.

- ``recommend_constant`` / ``recommend_cosine`` / ``recommend_controller``: the start's lr, batch
  size and weight decay replaced by :func:`rlhpo.recommend.recommend_task` (the meta-model chosen
  by leave-one-family-out error on the META-TRAINING families), then constant / warm-up + cosine /
  the learned controller;
- ``lr_range_cosine``: an LR range test (Smith 2017; the rule of the ``torch-lr-finder`` package):
  from the task's initialisation, the lr grows exponentially from 1e-6 to 1 over
  :data:`RANGE_STEPS` steps on a few hundred examples (6% of the budget, 320 to 960), and the
  pick is the lr of the steepest descent of the smoothed loss before its minimum (a tenth of the
  minimum's lr if it never descends); then warm-up + cosine at it (the start's batch size and
  weight decay).

Probe examples (the range test's, and the recommendation's if its meta-model uses probe features)
are taken out of the run's budget, so ``examples`` and ``compute_examples`` are the task's
budget, as for every single run; ``info["probe_examples"]`` records the probe's share.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from rlhpo.evaluation.baselines import Constant, Cosine
from rlhpo.evaluation.runner import ControllerSchedule, RunResult, run_task
from rlhpo.tasks import Hyperparams, Task
from rlhpo.training.session import make_optimizer

WARM_METHODS: tuple[str, ...] = ("recommend_constant", "recommend_cosine", "recommend_controller", "lr_range_cosine")
#: the range test: steps, lr range, examples (a share of the budget, within bounds)
RANGE_STEPS = 80
RANGE_LR = (1e-6, 1.0)
RANGE_EXAMPLES = (320, 960)
RANGE_SHARE = 0.06
#: the weight of a new loss in the smoothed curve (torch-lr-finder's smooth_f is 0.05 over 100 steps)
RANGE_SMOOTH = 0.2


def lr_range_test(task: Task, seed: int = 0) -> tuple[float, dict]:
    """The range test's lr pick on a copy of the task's model (its initialisation at ``seed``);
    returns (lr, info with the curve's size, both candidate lrs and ``probe_examples``)."""
    n_examples = int(min(np.clip(RANGE_SHARE * task.budget_examples, *RANGE_EXAMPLES), MAX_PROBE_SHARE * task.budget_examples))
    bs = max(2, min(task.default_hparams.batch_size, n_examples // RANGE_STEPS, len(task.train)))
    lrs = np.geomspace(*RANGE_LR, RANGE_STEPS)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = copy.deepcopy(task.model_fn()).train()
        opt = make_optimizer(task.optimizer, model.parameters(), replace(task.default_hparams, lr=float(lrs[0])))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: float(lrs[min(k, len(lrs) - 1)] / lrs[0]))
        g = torch.Generator().manual_seed(seed)
        losses, used = _range_curve(task, model, opt, sched, bs, g)
    lr, info = _suggest(lrs[: len(losses)], np.array(losses))
    info.update(probe_examples=used, range_batch_size=bs, range_points=len(losses))
    return lr, info


def _range_curve(task: Task, model: Any, opt: Any, sched: Any, bs: int, g: torch.Generator) -> tuple[list[float], int]:
    """Train one batch per lr; the EMA-smoothed losses, stopping once the loss exceeds 4x its best."""
    losses: list[float] = []
    smooth, best, used = None, math.inf, 0
    for _ in range(RANGE_STEPS):
        idx = torch.randint(len(task.train), (bs,), generator=g)
        loss = task.loss_fn(model(task.train.x[idx]), task.train.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        used += bs
        v = float(loss.detach())
        if not math.isfinite(v):
            break
        smooth = v if smooth is None else (1 - RANGE_SMOOTH) * smooth + RANGE_SMOOTH * v
        losses.append(smooth)
        best = min(best, smooth)
        if smooth > 4 * best and len(losses) > 3:
            break
    return losses, used


def _suggest(lrs: np.ndarray, losses: np.ndarray) -> tuple[float, dict]:
    """torch-lr-finder's suggestion: the lr of the steepest descent of the smoothed loss against
    log lr, skipping the first 10% and last 5% of the points and anything after the loss minimum;
    a tenth of the minimum's lr when the curve never descends there."""
    if len(losses) < 5:
        lr = float(lrs[0]) if len(lrs) else RANGE_LR[0]
        return lr, dict(range_steepest_lr=lr, range_min_lr=lr, range_note="too few finite losses")
    at_min_i = int(np.argmin(losses))
    at_min = float(lrs[at_min_i])
    grad = np.gradient(losses, np.log(lrs))
    lo, hi = max(1, len(losses) // 10), min(at_min_i + 1, len(losses) - max(1, len(losses) // 20))
    if hi - lo >= 2 and grad[lo:hi].min() < 0:
        steepest = float(lrs[lo + int(np.argmin(grad[lo:hi]))])
        return steepest, dict(range_steepest_lr=steepest, range_min_lr=at_min, range_rule="steepest")
    return max(at_min / 10, RANGE_LR[0]), dict(range_steepest_lr=float("nan"), range_min_lr=at_min, range_rule="min/10")


#: a probe may take at most this share of a run's budget (above: no probe features, and a shorter
#: range test), so that a tiny budget is not spent on probing
MAX_PROBE_SHARE = 0.25


def _recommended_start(task: Task, seed: int) -> tuple[Hyperparams, dict, int]:
    from rlhpo.recommend.api import recommend_task

    rec = recommend_task(task, seed=seed)
    if rec.probe_examples > MAX_PROBE_SHARE * task.budget_examples:
        rec = recommend_task(task, seed=seed, probe=False)  # the probe ran on a copy; it is not charged
    keys = ("lr", "batch_size", "weight_decay", "confidence", "model", "fallback")
    info = {f"recommended_{k}": v for k, v in rec.record().items() if k in keys}
    return rec.hparams, info, rec.probe_examples


def run_warm(method: str, task: Task, seed: int, n_intervals: int, device: str, writer: Any, policy: Any = None) -> RunResult:
    """One warm-start run (``method`` in :data:`WARM_METHODS`), probes counted in the budget."""
    if method == "lr_range_cosine":
        lr, info = lr_range_test(task, seed)
        start, probe = replace(task.default_hparams, lr=lr), int(info["probe_examples"])
        schedule: Any = Cosine()
    else:
        start, info, probe = _recommended_start(task, seed)
        if method == "recommend_controller":
            from rlhpo.policy.artifact import load_artifact

            schedule = ControllerSchedule(load_artifact(policy or "default"))
        else:
            schedule = Cosine() if method == "recommend_cosine" else Constant()
    warm = replace(task, default_hparams=start, budget_examples=max(1, task.budget_examples - probe))
    result = run_task(warm, schedule, seed, n_intervals, device, writer, method)
    result.examples += probe  # the probe spent part of the budget: examples = compute = the budget
    result.compute_examples += probe
    result.info.update(info, probe_examples=probe)
    return result
