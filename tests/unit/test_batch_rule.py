"""The gradient noise scale (McCandlish et al. 2018) from pairs of consecutive steps, and the
batch rule that reads it: estimates against a known gradient and covariance, the moving averages,
the rule's thresholds, caps and lr scaling, and its configuration errors."""

from __future__ import annotations

import math

import pytest
import torch

from rlhpo.control.batch_rule import BatchRule, BatchRuleConfig, NoiseScale
from rlhpo.errors import ConfigError
from rlhpo.training.monitor import NOISE_STEPS, TrainingMonitor


def _measure(monitor, p, true_grad, sigma, batch, steps, gen):
    for _ in range(steps):
        p.grad = true_grad + sigma * torch.randn(true_grad.shape, generator=gen) / math.sqrt(batch)
        monitor.before_step(False, batch_size=batch)
        monitor.after_step(torch.tensor(1.0), False)
    return monitor.summary()


@pytest.mark.parametrize("batch", [4, 64])
def test_the_pair_estimates_match_a_known_gradient_and_covariance(batch):
    gen = torch.Generator().manual_seed(0)
    d, sigma = 2000, 1.0
    true_grad = 0.1 * torch.randn(d, generator=gen)
    p = torch.nn.Parameter(torch.zeros(d))
    stats = _measure(TrainingMonitor([p], noise=True), p, true_grad, sigma, batch, 2000, gen)
    assert stats.noise_trace == pytest.approx(d * sigma**2, rel=0.03)  # tr(Sigma), whatever the batch
    assert stats.noise_signal == pytest.approx(float(true_grad @ true_grad), rel=0.1 if batch == 4 else 0.03)
    assert stats.noise_trace / stats.noise_signal == pytest.approx(d * sigma**2 / float(true_grad @ true_grad), rel=0.12)


def test_pairs_need_consecutive_steps_at_one_batch_size_and_reset_per_interval():
    p = torch.nn.Parameter(torch.zeros(3))
    m = TrainingMonitor([p], noise=True)
    for bs in (8, 16, 8, 16):  # the batch size changes every step: no pair
        p.grad = torch.ones(3)
        m.before_step(False, batch_size=bs)
        m.after_step(torch.tensor(1.0), False)
    stats = m.summary()
    assert math.isnan(stats.noise_trace) and math.isnan(stats.noise_signal)
    p.grad = torch.ones(3)
    m.before_step(False, batch_size=8)
    m.after_step(torch.tensor(1.0), False)
    m.after_step(torch.tensor(1.0), False)  # a step not measured between: no pair
    m.before_step(False, batch_size=8)
    m.after_step(torch.tensor(1.0), False)
    assert math.isnan(m.summary().noise_trace)
    m.before_step(False, batch_size=8)  # nothing measured: the other statistics as before, no noise
    assert m.summary().steps == 0


def test_a_session_measures_the_noise_on_its_intervals_last_steps():
    from conftest import make_tiny_task

    from rlhpo.training.session import TrainingSession

    task = make_tiny_task(1e-2, 8, 0.0, "adam", budget=800)
    s = TrainingSession(task, seed=0)
    assert math.isnan(s.train_until(200).noise_trace)  # off unless a batch rule reads it: nothing copied
    s.monitor.noise = True
    stats = s.train_until(600)
    assert stats.steps == 50 and math.isfinite(stats.noise_trace) and stats.noise_trace > 0
    assert math.isfinite(stats.noise_signal)
    assert NOISE_STEPS == 8  # 4 pairs an interval


def test_a_checkpoint_between_two_steps_of_a_pair_keeps_the_pair():
    gen = torch.Generator().manual_seed(1)
    p = torch.nn.Parameter(torch.zeros(50))
    a, b = TrainingMonitor([p], noise=True), TrainingMonitor([p], noise=True)
    grads = [torch.randn(50, generator=gen) for _ in range(4)]
    for i, g in enumerate(grads):
        p.grad = g
        a.before_step(False, batch_size=8)
        a.after_step(torch.tensor(1.0), False)
        if i == 2:
            b.load_state_dict(a.state_dict())
        if i >= 3:
            b.before_step(False, batch_size=8)
            b.after_step(torch.tensor(1.0), False)
    sa, sb = a.summary(), b.summary()
    assert sb.noise_trace == pytest.approx(sa.noise_trace) and sb.noise_signal == pytest.approx(sa.noise_signal)


def test_the_noise_scale_divides_moving_averages():
    n = NoiseScale(ema=0.5)
    assert math.isnan(n.value)
    assert n.update(100.0, 1.0) == pytest.approx(100.0)
    assert n.update(math.nan, math.nan) == pytest.approx(100.0)  # an interval without pairs: no news
    assert n.update(300.0, 3.0) == pytest.approx(200.0 / 2.0)
    assert n.update(100.0, -20.0) == math.inf  # the signal average fell to <= 0: the gradient is all noise


def test_the_rule_doubles_above_the_threshold_after_its_first_decision_up_to_its_cap():
    rule = BatchRule(BatchRuleConfig(threshold=4.0, max_factor=4, after=2, min_steps=0))
    rule.reset(16)
    rule.observe(100.0, 1.0)  # B_noise 100
    assert rule.growth(1, 16) == 1  # too early
    assert rule.growth(2, 16) == 2  # 100 >= 4 x 16
    assert rule.growth(2, 32) == 1  # 100 < 4 x 32
    rule.observe(1000.0, 1.0)
    assert rule.growth(3, 32) == 2 and rule.growth(3, 64) == 1  # 4 x the start: the cap
    fresh = BatchRule(BatchRuleConfig(min_steps=0))
    fresh.reset(16)
    assert fresh.growth(5, 16) == 1  # nothing measured: the batch stays


def test_the_lr_follows_the_batch_by_the_optimizers_rule():
    assert BatchRuleConfig().lr_factor(2, adaptive=True) == pytest.approx(math.sqrt(2))
    assert BatchRuleConfig().lr_factor(2, adaptive=False) == pytest.approx(2)
    assert BatchRuleConfig(lr_scaling="none").lr_factor(2, adaptive=False) == 1.0


@pytest.mark.parametrize("bad, says", [
    ({"threshold": 0.5}, "threshold must be a number >= 1"),
    ({"max_factor": 0}, "max_factor must be an integer >= 1"),
    ({"lr_scaling": "cubic"}, "lr_scaling must be one of ['auto', 'sqrt', 'linear', 'none']"),
    ({"ema": 0.0}, "ema must be in (0, 1]"),
    ({"after": 0}, "after must be a decision >= 1"),
    ({"min_steps": -1}, "min_steps must be an integer >= 0"),
    ({"max_fraction": 0}, "max_fraction must be a fraction of the training set in (0, 1]"),
])
def test_bad_settings_are_one_line_errors(bad, says):
    with pytest.raises(ConfigError) as e:
        BatchRuleConfig(**bad)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_a_run_short_in_steps_keeps_its_batch():
    rule = BatchRule(BatchRuleConfig(threshold=4.0, min_steps=500))
    rule.reset(16)
    rule.observe(1000.0, 1.0)
    assert rule.growth(3, 16, steps=100, remaining=399) == 1  # 499 steps in all after doubling: too few
    assert rule.growth(3, 16, steps=100, remaining=400) == 2
    assert rule.growth(3, 16, dataset=31) == 1 and rule.growth(3, 16, dataset=32) == 2  # max_fraction 1: up to the set
    capped = BatchRule(BatchRuleConfig(threshold=4.0, max_fraction=1 / 16, min_steps=0))
    capped.reset(16)
    capped.observe(1000.0, 1.0)
    assert capped.growth(3, 16, dataset=511) == 1 and capped.growth(3, 16, dataset=512) == 2  # 32 <= 512 / 16
