"""Fuzzing the Controller in a user's loop (hypothesis): any sequence of losses (NaN, inf, huge,
negative), validation reports, batch sizes and steps between decisions, from extreme starting
hyperparameters, with several optimizers. Nothing raises but the documented ControllerError;
the hyperparameters it decides stay finite and inside the policy's bounds; the observations it
feeds the policy are finite and clipped."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch.utils.data import TensorDataset

from rlhpo.control.features import CLIP, N_FEATURES
from rlhpo.controller import Controller
from rlhpo.errors import ControllerError
from rlhpo.policy.artifact import load_artifact
from rlhpo.training.monitor import IntervalStats

# RLHPO_FUZZ_EXAMPLES=500 for a longer hunt; the default keeps the file under a minute
SETTINGS = settings(
    max_examples=int(os.environ.get("RLHPO_FUZZ_EXAMPLES", "30")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

ARTIFACT = None


def artifact():
    global ARTIFACT
    if ARTIFACT is None:
        ARTIFACT = load_artifact("default")  # the shipped policy: what users run
    return ARTIFACT


OPTIMIZERS = {
    "sgd": lambda p, lr, wd: torch.optim.SGD(p, lr=lr, momentum=0.9, weight_decay=wd),
    "adam": lambda p, lr, wd: torch.optim.Adam(p, lr=lr, weight_decay=wd),
    "adamw": lambda p, lr, wd: torch.optim.AdamW(p, lr=lr, weight_decay=wd),
    "rprop": lambda p, lr, wd: torch.optim.Rprop(p, lr=lr),  # no weight decay at all
}

any_float = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1e30, 1e30),
    st.sampled_from([0.0, -0.0, 1e-300, 1e300, float("nan"), float("inf"), -float("inf")]),
)
# events of a user's loop: optimizer steps with a loss, validation reports, lr changes by the user
step_event = st.tuples(st.just("steps"), st.integers(1, 12), any_float, st.one_of(st.none(), st.integers(1, 10**9)))
val_event = st.tuples(st.just("val"), any_float)
events = st.lists(st.one_of(step_event, step_event, val_event), min_size=1, max_size=12)

log_uniform = lambda lo, hi: st.floats(math.log10(lo), math.log10(hi)).map(lambda e: 10.0**e)  # noqa: E731


class Recorder:
    """Wraps the policy driver: keeps every observation the controller feeds the policy."""

    def __init__(self, driver):
        self.driver, self.observations = driver, []

    def __getattr__(self, name):
        return getattr(self.driver, name)

    def act(self, obs, deterministic=True):
        self.observations.append(np.array(obs, copy=True))
        return self.driver.act(obs, deterministic=deterministic)


def _check_decisions(c: Controller, rec: Recorder) -> None:
    bounds = c.spec.action_config()
    for obs in rec.observations:
        assert obs.shape == (N_FEATURES,) and np.isfinite(obs).all() and (np.abs(obs) <= CLIP).all(), obs
    if c.examples_seen == 0:
        return  # not begun: the optimizer still holds the user's own values
    # the bounds hold the policy's lr level; the base schedule multiplies it by a factor in (0, 1]
    for g in c.optimizer.param_groups:  # (the factor is set every step: down to ~0 at the budget)
        assert math.isfinite(g["lr"]) and 0 < g["lr"] <= bounds.lr.max, g["lr"]
        if c.controls_weight_decay and c.decision.actions.live("weight_decay"):  # Adam's calibrated prior: off, at 0
            wd = g["weight_decay"]
            assert math.isfinite(wd) and bounds.weight_decay.min <= wd <= bounds.weight_decay.max, wd
    bs = c.hparams.batch_size
    # the batch size is the policy's only where it can be applied (a sampler); elsewhere it is the
    # user's own, declined with a warning, and recorded as it is
    assert 1 <= bs and (bs <= bounds.batch_size.max or not c.control_batch_size)
    for h in c.history:
        assert 0 < h["lr"] <= bounds.lr.max and bounds.lr.min * (1 - 1e-9) <= h["level"] <= bounds.lr.max and 1 <= h["batch_size"]
        assert h["batch_size"] <= bounds.batch_size.max or not c.control_batch_size


@SETTINGS
@given(
    optimizer=st.sampled_from(sorted(OPTIMIZERS)),
    lr=log_uniform(1e-12, 1e6),
    weight_decay=st.one_of(st.just(0.0), log_uniform(1e-12, 1e3)),
    batch_size=st.one_of(st.integers(1, 64), st.integers(1, 10**9)),
    total=st.integers(1, 10**7),
    use_loader=st.booleans(),
    grad_scale=st.sampled_from([1.0, 1e6, 1e30, float("nan")]),
    script=events,
)
# found by a long hunt: one step larger than the whole budget got the cosine's end factor, lr 0
@example(optimizer="adam", lr=1.0, weight_decay=0.0, batch_size=120, total=60, use_loader=False, grad_scale=1.0,
         script=[("steps", 2, 0.0, 1)])
def test_any_user_loop_never_breaks_the_controller(optimizer, lr, weight_decay, batch_size, total, use_loader, grad_scale, script):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = OPTIMIZERS[optimizer](model.parameters(), lr, weight_decay)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Rprop's "no weight_decay" warning
        c = Controller(opt, policy=artifact(), total_examples=total, batch_size=None if use_loader else batch_size)
    if use_loader:
        c.make_loader(TensorDataset(torch.randn(50, 3), torch.randn(50, 1)), batch_size=batch_size)
    rec = Recorder(c.driver)
    c.driver = rec
    x = torch.randn(4, 3)
    try:
        for event in script:
            if event[0] == "val":
                c.report_validation(event[1])
                continue
            _, n_steps, loss_value, step_batch = event
            for _ in range(n_steps):
                opt.zero_grad()
                (model(x).sum() * grad_scale).backward()  # gradients from tiny to NaN
                opt.step()
                c.step(torch.tensor(loss_value), batch_size=step_batch)
                if c.done:
                    break
            _check_decisions(c, rec)
            if c.done:
                break
    except ControllerError as e:  # the one refusal: a budget of fewer steps than decisions, at the first step
        assert "fewer than the policy's" in str(e) and not [h for h in c.history if "action" in h], e
        first = script_first_batch(script, None if use_loader else batch_size, c)
        assert total < c.spec.n_intervals * first, (total, first)
        return
    finally:
        c.close()
    _check_decisions(c, rec)
    assert len(rec.observations) == len([h for h in c.history if "action" in h])  # finish() records without deciding


def script_first_batch(script, declared, c):
    """The examples the first step counted: its own batch size, else the loader's, else the declared one."""
    first = next(e for e in script if e[0] == "steps")
    return first[3] or (c.sampler.batch_size if c.sampler is not None else declared)


stats_strategy = st.builds(
    IntervalStats,
    steps=st.integers(0, 10**6),
    loss_mean=any_float,
    loss_first_half=any_float,
    loss_second_half=any_float,
    loss_std=any_float,
    grad_norm=any_float,
    update_ratio=any_float,
    update_cosine=any_float,
    nonfinite=st.booleans(),
)


@SETTINGS
@given(
    lr=log_uniform(1e-12, 1e6),
    weight_decay=st.one_of(st.just(0.0), log_uniform(1e-12, 1e3)),
    decisions=st.lists(st.tuples(stats_strategy, any_float, log_uniform(1e-12, 1e6)), min_size=1, max_size=25),
)
def test_any_interval_statistics_never_break_decide(lr, weight_decay, decisions):
    """decide(), as rlhpo.apply and the evaluation call it, on arbitrary interval statistics, with
    the user's loop also setting arbitrary learning rates between decisions."""
    opt = torch.optim.AdamW(torch.nn.Linear(2, 1).parameters(), lr=lr, weight_decay=weight_decay)
    c = Controller.in_intervals(opt, policy=artifact(), total_examples=1000, batch_size=32)
    rec = Recorder(c.driver)
    c.driver = rec
    for stats, val_loss, user_lr in decisions:
        c.examples_seen += 40
        hp = c.decide(stats, val_loss)
        assert math.isfinite(hp.lr) and math.isfinite(hp.weight_decay)
        _check_decisions(c, rec)
        for g in opt.param_groups:  # a user's own warm-up or mistake between decisions
            g["lr"] = user_lr
    assert len(rec.observations) == len(decisions)


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda c: c.report_validation("low"), r"report_validation\(val_loss\): val_loss must be a number or a scalar tensor, got str"),
        (lambda c: c.report_validation(None), r"report_validation\(val_loss\): val_loss must be a number or a scalar tensor, got NoneType"),
        (lambda c: c.report_validation(torch.ones(2)), r"val_loss must be a number or a scalar tensor, got Tensor of shape \(2,\)"),
        (lambda c: c.step(torch.tensor(1.0), batch_size=0), r"step\(loss, batch_size\): batch_size must be an integer >= 1, got 0"),
        (lambda c: c.step(torch.tensor(1.0), batch_size=2.5), r"batch_size must be an integer >= 1, got 2.5"),
    ],
)
def test_documented_errors(call, pattern):
    opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
    c = Controller(opt, policy=artifact(), total_examples=100, batch_size=10)
    with pytest.raises(ControllerError, match=pattern):
        call(c)
