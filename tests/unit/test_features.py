"""Unit tests of the observation features (rlhpo.control.features) and the training monitor
that feeds them (rlhpo.training.monitor)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from rlhpo.control.features import (
    CLIP,
    FEATURE_NAMES,
    FEATURE_NAMES_V1,
    N_FEATURES,
    FeatureExtractor,
)
from rlhpo.training.monitor import IntervalStats, TrainingMonitor, summarize_interval

NAN, INF = float("nan"), float("inf")
IDX = {name: i for i, name in enumerate(FEATURE_NAMES)}
IDX_V1 = {name: i for i, name in enumerate(FEATURE_NAMES_V1)}


def stats(
    loss=1.0, first=None, second=None, std=0.1, grad=1.0, ratio=1e-3, cosine=0.0, steps=4, nonfinite=False
) -> IntervalStats:
    return IntervalStats(
        steps=steps,
        loss_mean=loss,
        loss_first_half=loss if first is None else first,
        loss_second_half=loss if second is None else second,
        loss_std=std,
        grad_norm=grad,
        update_ratio=ratio,
        update_cosine=cosine,
        nonfinite=nonfinite,
    )


def extractor(lr=1e-3, bs=32, wd=1e-4, adaptive=True, version=2) -> FeatureExtractor:
    fx = FeatureExtractor(FEATURE_NAMES_V1 if version == 1 else FEATURE_NAMES)
    fx.reset(lr, bs, wd, adaptive)
    return fx


def observe(fx, s=None, val=1.0, lr=1e-3, bs=32, wd=1e-4, progress=0.1, last_action=(0.0, 0.0, 0.0)):
    return fx.observe(s if s is not None else stats(), val, lr, bs, wd, progress, last_action)


def f(obs, name) -> float:
    """A feature by name, in a version-1 vector (19 entries) or the current one."""
    return float(obs[(IDX_V1 if len(obs) == len(FEATURE_NAMES_V1) else IDX)[name]])


def check_vector(obs):
    assert isinstance(obs, np.ndarray)
    assert obs.shape in ((N_FEATURES,), (len(FEATURE_NAMES_V1),))
    assert obs.dtype == np.float32
    assert np.all(np.isfinite(obs)), dict(zip(FEATURE_NAMES, obs.tolist()))
    assert np.all(np.abs(obs) <= CLIP), dict(zip(FEATURE_NAMES, obs.tolist()))


# --------------------------------------------------------------------------- FeatureExtractor


def test_names_match_the_vector():
    assert len(FEATURE_NAMES) == N_FEATURES == len(set(FEATURE_NAMES))
    assert FeatureExtractor().names == FEATURE_NAMES and not FeatureExtractor().first
    assert FeatureExtractor(FEATURE_NAMES_V1).first and len(observe(extractor(version=1))) == 19
    assert "log10_lr" not in FEATURE_NAMES and "adaptive_optimizer" not in FEATURE_NAMES
    obs = observe(extractor())
    assert len(obs) == len(FEATURE_NAMES)
    check_vector(obs)


def test_first_observation_sets_references():
    fx = extractor(lr=1e-3, bs=32, wd=1e-4)
    obs = observe(fx, stats(loss=2.3, grad=4.0), val=2.5)
    for name in (
        "log_train_loss_ratio",
        "log_val_loss_ratio",
        "log_val_over_best",
        "log_val_change",
        "log_grad_norm_ratio",
        "log_lr_ratio",
        "log_batch_ratio",
        "log_wd_ratio",
    ):
        assert f(obs, name) == 0.0, name
    assert fx.train_ref == 2.3 and fx.val_ref == 2.5 and fx.grad_ref == 4.0
    assert f(obs, "log_generalisation_gap") == pytest.approx(math.log(2.5 / 2.3), rel=1e-6)


def test_later_observations_are_relative_to_the_first():
    fx = extractor()
    observe(fx, stats(loss=2.0, grad=4.0), val=3.0)
    obs = observe(fx, stats(loss=1.0, grad=2.0), val=1.5)
    assert f(obs, "log_train_loss_ratio") == pytest.approx(math.log(0.5), rel=1e-6)
    assert f(obs, "log_val_loss_ratio") == pytest.approx(math.log(0.5), rel=1e-6)
    assert f(obs, "log_val_over_best") == 0.0  # a new best
    assert f(obs, "log_val_change") == pytest.approx(5 * math.log(0.5), rel=1e-6)
    assert f(obs, "log_grad_norm_ratio") == pytest.approx(math.log(0.5) / 3, rel=1e-6)
    # the references do not move
    assert fx.train_ref == 2.0 and fx.val_ref == 3.0 and fx.grad_ref == 4.0
    obs = observe(fx, stats(loss=1.0), val=1.8)  # worse than the best
    assert f(obs, "log_val_over_best") == pytest.approx(math.log(1.8 / 1.5), rel=1e-6)
    assert f(obs, "log_val_change") == pytest.approx(5 * math.log(1.8 / 1.5), rel=1e-6)


def test_references_wait_for_a_finite_value():
    fx = extractor()
    obs = observe(fx, stats(loss=NAN, grad=0.0), val=NAN)
    check_vector(obs)
    assert fx.train_ref is None and fx.val_ref is None and fx.grad_ref is None  # zero grad is no reference
    obs = observe(fx, stats(loss=2.0, grad=3.0), val=2.0)
    assert fx.train_ref == 2.0 and fx.val_ref == 2.0 and fx.grad_ref == 3.0
    assert f(obs, "log_train_loss_ratio") == 0.0 and f(obs, "log_val_loss_ratio") == 0.0


def test_log_val_over_best_is_never_negative():
    fx = extractor()
    vals = [3.0, 2.0, 2.5, NAN, 1.0, INF, 0.5, 0.0, -1.0, 0.7, 1e9, 0.1]
    for i, v in enumerate(vals):
        obs = observe(fx, stats(loss=1.0), val=v)
        check_vector(obs)
        assert f(obs, "log_val_over_best") >= 0.0, (i, v)


def test_hyperparameter_ratio_features_follow_their_formulas():
    fx = extractor(lr=1e-3, bs=32, wd=1e-4, version=1)
    observe(fx)
    obs = observe(fx, lr=2e-3, bs=64, wd=1e-3)
    assert f(obs, "log_lr_ratio") == pytest.approx(math.log10(2) / 2, rel=1e-5)
    assert f(obs, "log_batch_ratio") == pytest.approx(1 / 3, rel=1e-5)
    assert f(obs, "log_wd_ratio") == pytest.approx(0.5, rel=1e-5)
    assert f(obs, "log10_lr") == pytest.approx((math.log10(2e-3) + 3) / 2, rel=1e-5)
    obs = observe(fx, lr=1e-4, bs=8, wd=1e-5)
    assert f(obs, "log_lr_ratio") == pytest.approx(-0.5, rel=1e-5)
    assert f(obs, "log_batch_ratio") == pytest.approx(-2 / 3, rel=1e-5)
    assert f(obs, "log_wd_ratio") == pytest.approx(-0.5, rel=1e-5)
    assert f(obs, "log10_lr") == pytest.approx(-0.5, rel=1e-5)
    assert f(observe(fx, lr=1e-3), "log10_lr") == 0.0
    assert f(observe(fx, lr=0.1), "log10_lr") == pytest.approx(1.0, rel=1e-5)


def test_ratio_features_use_the_reset_hyperparameters():
    fx = extractor(lr=0.1, bs=128, wd=1e-2, version=1)
    obs = observe(fx, lr=0.1, bs=128, wd=1e-2)
    assert f(obs, "log_lr_ratio") == f(obs, "log_batch_ratio") == f(obs, "log_wd_ratio") == 0.0
    assert f(obs, "log10_lr") == pytest.approx(1.0, rel=1e-5)


def test_interval_statistic_features_follow_their_formulas():
    fx = extractor()
    s = stats(loss=2.0, first=2.5, second=1.5, std=0.4, ratio=1e-2, cosine=-0.25)
    obs = observe(fx, s, val=3.0, progress=0.35)
    assert f(obs, "progress") == pytest.approx(0.35)
    assert f(obs, "log_generalisation_gap") == pytest.approx(math.log(1.5), rel=1e-6)
    assert f(obs, "train_loss_trend") == pytest.approx(5 * math.log(1.5 / 2.5), rel=1e-6)
    assert f(obs, "log_loss_noise") == pytest.approx(math.log(0.2) / 3 + 1, rel=1e-6)
    assert f(obs, "log10_update_ratio") == pytest.approx(0.5, rel=1e-5)
    assert f(obs, "update_cosine") == -0.25


def test_loss_noise_has_a_floor():
    obs = observe(extractor(), stats(loss=1.0, std=0.0))
    assert f(obs, "log_loss_noise") == pytest.approx(math.log(1e-4) / 3 + 1, rel=1e-6)


@pytest.mark.parametrize("adaptive,expected", [(True, 1.0), (False, 0.0)])
def test_adaptive_optimizer_flag(adaptive, expected):
    fx = extractor(adaptive=adaptive, version=1)
    assert f(observe(fx), "adaptive_optimizer") == expected
    assert f(observe(fx), "adaptive_optimizer") == expected


def test_last_action_passes_through():
    fx = extractor()
    obs = observe(fx, last_action=[0.5, -1.0, 0.25])
    assert [f(obs, n) for n in ("last_action_lr", "last_action_batch_size", "last_action_weight_decay")] == [
        0.5,
        -1.0,
        0.25,
    ]
    obs = observe(fx, last_action=np.array([-0.75]))  # short: missing entries are 0
    assert [f(obs, n) for n in ("last_action_lr", "last_action_batch_size", "last_action_weight_decay")] == [
        -0.75,
        0.0,
        0.0,
    ]
    obs = observe(fx, last_action=[NAN, INF, -INF])
    check_vector(obs)
    assert [f(obs, n) for n in ("last_action_lr", "last_action_batch_size", "last_action_weight_decay")] == [
        0.0,
        CLIP,
        -CLIP,
    ]


def test_reset_clears_state():
    fx = extractor(version=1)
    observe(fx, stats(loss=5.0, grad=9.0), val=5.0)
    observe(fx, stats(loss=1.0, grad=1.0), val=0.5)
    fx.reset(1e-2, 16, 1e-3, False)
    assert fx.train_ref is None and fx.val_ref is None and fx.grad_ref is None
    assert fx.prev_val is None and fx.best_val == math.inf
    assert (fx.lr0, fx.bs0, fx.wd0, fx.adaptive) == (1e-2, 16, 1e-3, 0.0)
    obs = observe(fx, stats(loss=3.0, grad=2.0), val=4.0, lr=1e-2, bs=16, wd=1e-3)
    for name in ("log_train_loss_ratio", "log_val_loss_ratio", "log_val_over_best", "log_val_change"):
        assert f(obs, name) == 0.0, name
    assert f(obs, "log_lr_ratio") == 0.0 and f(obs, "adaptive_optimizer") == 0.0


def test_reset_guards_zero_starting_values():
    fx = FeatureExtractor()
    fx.reset(0.0, 0, 0.0, True)
    obs = observe(fx, lr=0.0, bs=0, wd=0.0)
    check_vector(obs)
    assert f(obs, "log_lr_ratio") == 0.0 and f(obs, "log_batch_ratio") == 0.0 and f(obs, "log_wd_ratio") == 0.0


HOSTILE = {
    "nan_losses": dict(s=stats(loss=NAN, first=NAN, second=NAN, std=NAN), val=NAN),
    "inf_losses": dict(s=stats(loss=INF, first=INF, second=INF, std=INF), val=INF),
    "neg_inf_losses": dict(s=stats(loss=-INF, first=-INF, second=-INF), val=-INF),
    "zero_losses": dict(s=stats(loss=0.0, first=0.0, second=0.0, std=0.0), val=0.0),
    "negative_losses": dict(s=stats(loss=-3.0, first=-2.0, second=-4.0, std=1.0), val=-5.0),
    "zero_grad": dict(s=stats(grad=0.0, ratio=0.0)),
    "inf_grad": dict(s=stats(grad=INF, ratio=INF, cosine=NAN)),
    "nan_grad": dict(s=stats(grad=NAN, ratio=NAN)),
    "huge_lr": dict(lr=1e308),
    "inf_lr": dict(lr=INF),
    "nan_lr": dict(lr=NAN),
    "zero_lr": dict(lr=0.0),
    "negative_lr": dict(lr=-1.0),
    "tiny_loss": dict(s=stats(loss=1e-30, std=1.0), val=1e-30),
    "huge_wd": dict(wd=1e300),
    "zero_wd_and_bs": dict(wd=0.0, bs=0),
    "huge_batch": dict(bs=10**9),
    "inf_progress": dict(progress=INF),
    "nan_progress": dict(progress=NAN),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_inputs_give_finite_clipped_features(case):
    fx = extractor()
    # a normal first interval sets references, then the hostile one, then a normal one again
    check_vector(observe(fx, stats(loss=2.0, grad=3.0), val=2.0))
    check_vector(observe(fx, **HOSTILE[case]))
    check_vector(observe(fx, **HOSTILE[case]))
    check_vector(observe(fx, stats(loss=1.0, grad=1.0), val=1.0))
    # and as the very first observation of a run
    fx = extractor()
    check_vector(observe(fx, **HOSTILE[case]))
    check_vector(observe(fx))


def test_huge_values_clip_to_the_bound():
    fx = extractor(lr=1e-3, version=1)
    observe(fx, stats(loss=1.0), val=1.0)
    obs = observe(fx, stats(loss=1e30), val=1e30, lr=1e300)
    assert f(obs, "log_lr_ratio") == CLIP
    assert f(obs, "log10_lr") == CLIP
    assert f(obs, "log_train_loss_ratio") == CLIP
    assert f(obs, "log_val_loss_ratio") == CLIP
    assert f(obs, "log_val_change") == CLIP
    obs = observe(fx, stats(loss=1e-30), val=1e-30, lr=1e-300)
    assert f(obs, "log_train_loss_ratio") == -CLIP
    # the lr is floored at 1e-12 before the logs: log10(1e-12 / 1e-3) / 2 = (-12 + 3) / 2 = -4.5
    assert f(obs, "log_lr_ratio") == pytest.approx(-4.5)
    assert f(obs, "log10_lr") == pytest.approx(-4.5)


def test_non_finite_losses_read_as_the_worst_case():
    fx = extractor()
    observe(fx, stats(loss=1.0), val=1.0)
    for bad in (NAN, INF):
        obs = observe(fx, stats(loss=bad, first=bad, second=bad), val=bad)
        assert f(obs, "log_train_loss_ratio") == CLIP
        assert f(obs, "log_val_loss_ratio") == CLIP
        assert f(obs, "log_val_over_best") == CLIP


def test_non_finite_val_does_not_replace_best_or_previous():
    fx = extractor()
    observe(fx, val=2.0)
    observe(fx, val=NAN)
    assert fx.best_val == 2.0 and fx.prev_val == 2.0
    obs = observe(fx, val=1.0)
    assert f(obs, "log_val_change") == pytest.approx(5 * math.log(0.5), rel=1e-6)


# --------------------------------------------------------------------------- summarize_interval


def test_summarize_interval_known_numbers():
    s = summarize_interval([1.0, 2.0, 3.0, 4.0], 2.5, 0.01, 0.5, True)
    assert s.steps == 4
    assert s.loss_mean == pytest.approx(2.5)
    assert s.loss_first_half == pytest.approx(1.5)
    assert s.loss_second_half == pytest.approx(3.5)
    assert s.loss_std == pytest.approx(math.sqrt(1.25))  # population std
    assert (s.grad_norm, s.update_ratio, s.update_cosine) == (2.5, 0.01, 0.5)
    assert s.nonfinite is False


def test_summarize_interval_odd_and_single():
    s = summarize_interval([3.0, 1.0, 2.0], NAN, NAN, 0.0, True)
    assert s.loss_mean == pytest.approx(2.0)
    assert s.loss_first_half == pytest.approx(3.0)  # n // 2 == 1
    assert s.loss_second_half == pytest.approx(1.5)
    assert s.loss_std == pytest.approx(math.sqrt(2 / 3))
    assert s.nonfinite is False  # a NaN grad norm only means "not probed"
    s = summarize_interval([7.0], 1.0, 1e-3, 0.0, True)
    assert (s.steps, s.loss_mean, s.loss_first_half, s.loss_second_half, s.loss_std) == (1, 7.0, 7.0, 7.0, 0.0)


def test_summarize_interval_empty():
    s = summarize_interval([], 1.0, 1.0, 1.0, True)
    assert s.steps == 0 and math.isnan(s.loss_mean) and s.nonfinite is False


@pytest.mark.parametrize(
    "losses,grad,params_finite",
    [
        ([1.0, NAN, 2.0], 1.0, True),
        ([1.0, INF], 1.0, True),
        ([-INF, 1.0], 1.0, True),
        ([1.0, 2.0], INF, True),
        ([1.0, 2.0], 1.0, False),
    ],
)
def test_summarize_interval_flags_nonfinite(losses, grad, params_finite):
    s = summarize_interval(losses, grad, 0.1, 0.0, params_finite)
    assert s.nonfinite is True
    assert s.steps == len(losses)
    if not all(math.isfinite(v) for v in losses):
        assert math.isnan(s.loss_mean) and math.isnan(s.loss_first_half) and math.isnan(s.loss_second_half)
        assert s.loss_std == 0.0


# --------------------------------------------------------------------------- TrainingMonitor


class PlainSGD:
    """theta -= lr * grad: what torch.optim.SGD does without momentum, minus its one-off ~1 s
    import cost (the first torch.optim optimizer built in a process pulls in torch._dynamo)."""

    def __init__(self, params, lr):
        self.params, self.lr = list(params), lr

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        for p in self.params:
            if p.grad is not None:
                p.sub_(self.lr * p.grad)


def train_steps(model, opt, monitor, x, y, probes):
    losses = []
    for probe in probes:
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        monitor.before_step(probe)
        opt.step()
        monitor.after_step(loss, probe)
        losses.append(float(loss.detach()))
    return losses


def tiny_regression(seed=0):
    torch.manual_seed(seed)
    model = nn.Linear(3, 1)
    x = torch.randn(16, 3)
    y = x @ torch.tensor([[1.0], [-1.0], [2.0]])
    return model, x, y


def test_monitor_summarises_losses_and_probes():
    model, x, y = tiny_regression()
    opt = PlainSGD(model.parameters(), lr=0.05)
    mon = TrainingMonitor(model.parameters())
    losses = train_steps(model, opt, mon, x, y, [False, False, True, True])
    s = mon.summary()
    assert s.steps == 4
    assert s.loss_mean == pytest.approx(sum(losses) / 4, rel=1e-6)
    assert s.loss_first_half == pytest.approx(sum(losses[:2]) / 2, rel=1e-6)
    assert s.loss_second_half == pytest.approx(sum(losses[2:]) / 2, rel=1e-6)
    assert s.loss_second_half < s.loss_first_half  # it learns
    assert s.grad_norm > 0 and math.isfinite(s.grad_norm)
    assert s.update_ratio > 0 and math.isfinite(s.update_ratio)
    assert -1.0 <= s.update_cosine <= 1.0 and s.update_cosine != 0.0  # consecutive probes
    assert s.nonfinite is False


def test_monitor_grad_norm_and_update_ratio_values():
    model, x, y = tiny_regression()
    lr = 0.01
    opt = PlainSGD(model.parameters(), lr=lr)
    mon = TrainingMonitor(model.parameters())
    loss = nn.functional.mse_loss(model(x), y)
    opt.zero_grad()
    loss.backward()
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).clone()
    mon.before_step(True)
    opt.step()
    mon.after_step(loss, True)
    params_after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    s = mon.summary()
    assert s.grad_norm == pytest.approx(float(grad.norm()), rel=1e-5)
    # plain SGD: |update| = lr * |grad|, relative to the parameters after the step
    assert s.update_ratio == pytest.approx(lr * float(grad.norm()) / float(params_after.norm()), rel=1e-4)
    assert s.update_cosine == 0.0  # a single probe has nothing to compare with


def constant_gradient_model():
    """A parameter whose loss sign * <w, c> has a constant gradient: every SGD update is the same."""
    w = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
    c = torch.tensor([0.3, 0.1, -0.7])
    return w, c


@pytest.mark.parametrize("signs,expected", [((1, 1), 1.0), ((1, -1), -1.0)])
def test_monitor_cosine_of_successive_updates(signs, expected):
    w, c = constant_gradient_model()
    opt = PlainSGD([w], lr=0.1)
    mon = TrainingMonitor([w])
    for sign in signs:
        loss = sign * (w * c).sum()
        opt.zero_grad()
        loss.backward()
        mon.before_step(True)
        opt.step()
        mon.after_step(loss, True)
    assert mon.summary().update_cosine == pytest.approx(expected, abs=1e-5)


def test_monitor_cosine_needs_consecutive_probes():
    w, c = constant_gradient_model()
    opt = PlainSGD([w], lr=0.1)
    mon = TrainingMonitor([w])
    for probe in (True, False, True):
        loss = (w * c).sum()
        opt.zero_grad()
        loss.backward()
        mon.before_step(probe)
        opt.step()
        mon.after_step(loss, probe)
    s = mon.summary()
    assert s.update_cosine == 0.0 and s.update_ratio > 0


def test_monitor_zero_update_has_zero_ratio_and_cosine():
    w, c = constant_gradient_model()
    opt = PlainSGD([w], lr=0.0)
    mon = TrainingMonitor([w])
    for _ in range(2):
        loss = (w * c).sum()
        opt.zero_grad()
        loss.backward()
        mon.before_step(True)
        opt.step()
        mon.after_step(loss, True)
    s = mon.summary()
    assert s.update_ratio == 0.0 and s.update_cosine == 0.0 and s.grad_norm > 0


def test_monitor_without_probes_reports_no_gradient_statistics():
    model, x, y = tiny_regression()
    opt = PlainSGD(model.parameters(), lr=0.01)
    mon = TrainingMonitor(model.parameters())
    train_steps(model, opt, mon, x, y, [False, False, False])
    s = mon.summary()
    assert s.steps == 3
    assert math.isnan(s.grad_norm) and math.isnan(s.update_ratio) and s.update_cosine == 0.0
    assert s.nonfinite is False


def test_monitor_summary_starts_a_new_interval():
    model, x, y = tiny_regression()
    opt = PlainSGD(model.parameters(), lr=0.01)
    mon = TrainingMonitor(model.parameters())
    train_steps(model, opt, mon, x, y, [True, True])
    first = mon.summary()
    assert first.steps == 2 and math.isfinite(first.grad_norm)
    empty = mon.summary()  # no steps since the last summary
    assert empty.steps == 0 and math.isnan(empty.loss_mean) and empty.nonfinite is False
    train_steps(model, opt, mon, x, y, [False])
    second = mon.summary()
    assert second.steps == 1 and math.isnan(second.grad_norm) and math.isnan(second.update_ratio)


def test_monitor_flags_nan_loss():
    model, x, y = tiny_regression()
    mon = TrainingMonitor(model.parameters())
    mon.after_step(torch.tensor(1.0), False)
    mon.after_step(torch.tensor(NAN), False)
    s = mon.summary()
    assert s.nonfinite is True and math.isnan(s.loss_mean)


def test_monitor_flags_inf_grad_norm():
    w, c = constant_gradient_model()
    mon = TrainingMonitor([w])
    w.grad = torch.tensor([INF, 0.0, 0.0])
    mon.before_step(True)
    mon.after_step(torch.tensor(1.0), True)
    s = mon.summary()
    assert s.grad_norm == INF and s.nonfinite is True


def test_monitor_flags_non_finite_parameters():
    w, c = constant_gradient_model()
    mon = TrainingMonitor([w])
    w.grad = torch.ones(3)
    mon.before_step(True)
    with torch.no_grad():
        w.fill_(INF)  # an update that blew the parameters up
    mon.after_step(torch.tensor(1.0), True)
    assert mon.summary().nonfinite is True
    # the flag belongs to the interval that saw it
    with torch.no_grad():
        w.fill_(1.0)
    mon.before_step(True)
    mon.after_step(torch.tensor(1.0), True)
    assert mon.summary().nonfinite is False


def test_monitor_watches_only_trainable_parameters():
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    for p in model[0].parameters():
        p.requires_grad_(False)
    mon = TrainingMonitor(model.parameters())
    assert len(mon.params) == 2
    assert all(p.requires_grad for p in mon.params)


def test_monitor_after_step_without_before_step_does_not_probe():
    w, _ = constant_gradient_model()
    mon = TrainingMonitor([w])
    mon.after_step(torch.tensor(2.0), True)
    s = mon.summary()
    assert s.steps == 1 and s.loss_mean == 2.0 and math.isnan(s.update_ratio)


@pytest.mark.parametrize(
    "remaining,bs,expected",
    [(64, 32, True), (65, 32, False), (33, 32, True), (1, 32, True), (0, 32, True), (1000, 32, False), (2, 1, True), (3, 1, False)],
)
def test_should_probe(remaining, bs, expected):
    assert TrainingMonitor.should_probe(remaining, bs) is expected


def test_should_probe_selects_the_last_two_steps_of_an_interval():
    remaining, bs, probed = 320, 32, []
    while remaining > 0:
        probed.append(TrainingMonitor.should_probe(remaining, bs))
        remaining -= bs
    assert probed == [False] * 8 + [True, True]


def test_monitor_with_no_trainable_parameters_still_counts_losses():
    model = nn.Linear(2, 1)
    for p in model.parameters():
        p.requires_grad_(False)
    mon = TrainingMonitor(model.parameters())
    assert mon.params == []
    for loss in (3.0, 1.0):
        mon.before_step(True)
        mon.after_step(torch.tensor(loss), True)
    s = mon.summary()
    assert s.steps == 2 and s.loss_mean == 2.0
    assert math.isnan(s.grad_norm) and math.isnan(s.update_ratio) and s.update_cosine == 0.0
    assert s.nonfinite is False


# --------------------------------------------------------------------------- version 2: losses of any sign


def test_v2_has_no_absolute_lr_or_optimizer_identity():
    """Two runs that differ only in the absolute lr and the optimizer kind observe the same."""
    a, b = extractor(lr=1e-3, adaptive=True), extractor(lr=0.05, adaptive=False)
    for loss, val in ((2.0, 2.1), (1.0, 1.2), (0.5, 0.7)):
        oa = observe(a, stats(loss=loss), val=val, lr=2e-3)
        ob = observe(b, stats(loss=loss), val=val, lr=0.1)
        np.testing.assert_array_equal(oa, ob)


def test_v2_positive_losses_keep_the_log_ratios():
    fx = extractor()
    observe(fx, stats(loss=2.0), val=2.0)
    obs = observe(fx, stats(loss=1.0), val=0.5)
    assert f(obs, "log_val_loss_ratio") == pytest.approx(math.log(0.25), rel=1e-6)
    assert f(obs, "log_train_loss_ratio") == pytest.approx(math.log(0.5), rel=1e-6)


def test_v2_negative_losses_are_compared_over_the_run_range():
    """A Gaussian NLL goes below zero: version 1 clamps it at 1e-12 and saturates, version 2 is
    invariant to adding a constant to every loss."""
    def run(offset, version=2):
        fx = extractor(version=version)
        out = []
        for loss, val in ((1.0, 1.1), (0.2, 0.3), (-0.5, -0.3), (-0.8, -0.7)):
            out.append(observe(fx, stats(loss=loss + offset, first=loss + offset, second=loss + offset), val=val + offset))
        return out

    shifted, plain = run(-3.0), run(0.0)
    for o1, o2 in zip(shifted[2:], plain[2:]):
        check_vector(o1)
        for name in ("log_val_loss_ratio", "log_val_change", "log_val_over_best", "log_generalisation_gap"):
            assert f(o1, name) == pytest.approx(f(o2, name), abs=1e-5), name
    # improving from -0.3 to -0.7 reads as an improvement, not as a clamp at the bound
    assert -CLIP < f(plain[3], "log_val_loss_ratio") < 0
    v1 = run(0.0, version=1)[3]
    assert f(v1, "log_val_loss_ratio") == -CLIP  # what version 1 did: the clamp saturates


def test_v2_extreme_positive_losses_do_not_underflow():
    fx = extractor()
    s = stats(loss=1.1e105, first=0.0, second=0.0, std=0.0, grad=0.0, ratio=0.0)
    for _ in range(2):
        check_vector(observe(fx, s, val=2.7e-219, lr=1.0))
