"""The guard: the one divergence rule, snapshots, rollbacks, the lr cut and the freeze."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlhpo.control.decision import DecisionPath
from rlhpo.control.guard import Guard, GuardConfig, divergence_reason
from rlhpo.control.spec import DecisionSpec
from rlhpo.errors import ConfigError
from rlhpo.tasks import Hyperparams
from rlhpo.training.monitor import IntervalStats
from rlhpo.training.sampler import MutableBatchSampler
from rlhpo.training.snapshot import LoopState


def _loop():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sampler = MutableBatchSampler(64, 8, generator=torch.Generator().manual_seed(0))
    return model, opt, sampler


def _step(model, opt, lr_scale=1.0):
    x = torch.randn(8, 3)
    loss = (model(x) ** 2).mean() * lr_scale
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_divergence_reason_is_relative_to_the_best_and_works_for_negative_losses():
    assert divergence_reason(False, 2.9, 1.0, 3.0) == ""
    assert "above 3 x the best" in divergence_reason(False, 3.1, 1.0, 3.0)
    assert "non-finite training" in divergence_reason(True, 1.0, 1.0, 3.0)
    assert "non-finite validation" in divergence_reason(False, math.nan, 1.0, 3.0)
    assert divergence_reason(False, 1e9, math.inf, 3.0) == ""  # no best yet: only non-finite counts
    # a loss that can be negative (a Poisson NLL): 3x "worse" is best + 2|best|
    assert divergence_reason(False, -1.5, -2.0, 3.0) == ""
    assert divergence_reason(False, 2.5, -2.0, 3.0) != ""


def test_loop_state_restores_weights_buffers_optimizer_and_batch_order_but_not_the_hyperparameters():
    model, opt, sampler = _loop()
    state = LoopState(opt, model, sampler)
    _step(model, opt)
    next(iter(sampler))
    snap = state.capture()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    order_after_snapshot = [b.tolist() for b in iter(sampler)]
    _step(model, opt, lr_scale=1e6)
    opt.param_groups[0]["lr"] = 0.5
    sampler.batch_size = 16
    state.restore(snap)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert opt.param_groups[0]["lr"] == 0.5 and sampler.batch_size == 16  # the decision path's values stay
    sampler.batch_size = 8
    assert [b.tolist() for b in iter(sampler)] == order_after_snapshot


def test_guard_rolls_back_a_real_blow_up_and_freezes_after_repeats():
    model, opt, sampler = _loop()
    guard = Guard(GuardConfig(factor=3.0, freeze_after=2), LoopState(opt, model, sampler))
    guard.start()
    _step(model, opt)
    assert not guard.review(False, 1.0).diverged
    good = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))  # the weights really are gone
    v = guard.review(True, math.nan)
    assert v.diverged and v.rolled_back and v.val_loss == 1.0 and "non-finite" in v.reason
    assert all(torch.equal(model.state_dict()[k], good[k]) for k in good)
    assert not guard.frozen
    v = guard.review(False, 5.0)  # 5x the best: a finite blow-up
    assert v.rolled_back and guard.frozen


def test_first_interval_divergence_goes_back_to_the_start():
    model, opt, sampler = _loop()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    guard = Guard(GuardConfig(), LoopState(opt, model, sampler))
    guard.start()
    _step(model, opt, lr_scale=1e9)
    v = guard.review(True, math.inf)
    assert v.rolled_back and math.isinf(v.val_loss)
    assert all(torch.equal(model.state_dict()[k], start[k]) for k in start)


def test_disabled_guard_reports_and_restores_nothing():
    model, opt, sampler = _loop()
    guard = Guard(GuardConfig(enabled=False), LoopState(opt, model, sampler))
    guard.start()
    guard.review(False, 1.0)
    v = guard.review(False, 10.0)
    assert v.diverged and not v.rolled_back and v.val_loss == 10.0


def test_restore_best_at_the_end_only_when_worse():
    model, opt, sampler = _loop()
    guard = Guard(GuardConfig(restore_best=True), LoopState(opt, model, sampler))
    guard.start()
    guard.review(False, 1.0)
    best = {k: v.clone() for k, v in model.state_dict().items()}
    _step(model, opt)
    guard.review(False, 1.5)
    assert guard.finish(1.2) == 1.0
    assert all(torch.equal(model.state_dict()[k], best[k]) for k in best)
    assert guard.finish(0.9) is None


def test_decision_path_cuts_the_lr_after_a_rollback_and_never_moves_up_once_frozen():
    model, opt, sampler = _loop()
    guard = GuardConfig(freeze_after=1, lr_cut=0.25, max_lr_ratio=None)
    path = DecisionPath(DecisionSpec(n_intervals=10, guard=guard, prior="user", base_schedule="none"), total_examples=1000)
    hp = path.start(Hyperparams(1e-2, 8, 1e-4), True, lambda h: h, LoopState(opt, model, sampler))
    stats = IntervalStats(steps=4, loss_mean=1.0, loss_first_half=1.0, loss_second_half=1.0)
    path.observe(stats, 1.0, hp, 100)
    hp = path.act(np.zeros(3), hp)
    obs = path.observe(IntervalStats(steps=4, loss_mean=math.nan, nonfinite=True), math.nan, hp, 200)
    assert obs.verdict.rolled_back and np.isfinite(obs.obs).all()
    new = path.act(np.ones(3), hp)  # the policy asks for more: the rollback decides instead
    assert new.lr == pytest.approx(hp.lr * 0.25) and new.batch_size == hp.batch_size
    assert new.weight_decay == pytest.approx(hp.weight_decay)
    path.observe(stats, 1.0, new, 300)
    up = path.act(np.ones(3), new)  # frozen: no upward moves
    assert up.lr == pytest.approx(new.lr) and up.batch_size == new.batch_size
    down = path.act(-np.ones(3), up)
    assert down.lr < up.lr


def test_lr_cap_relative_to_the_start():
    path = DecisionPath(DecisionSpec(n_intervals=10, guard=GuardConfig(max_lr_ratio=4.0), prior="user", base_schedule="none"), 1000)
    hp = path.start(Hyperparams(1e-3, 8, 1e-4), True, lambda h: h)
    for _ in range(5):
        path.observe(IntervalStats(steps=1, loss_mean=1.0), 1.0, hp, 0)
        hp = path.act(np.ones(3), hp)
    assert hp.lr == pytest.approx(4e-3)


def test_guard_state_survives_torch_load_weights_only(tmp_path):
    model, opt, sampler = _loop()
    guard = Guard(GuardConfig(), LoopState(opt, model, sampler))
    guard.start()
    _step(model, opt)
    guard.review(False, 1.0)
    guard.review(False, 9.0)  # a rollback
    torch.save(guard.state_dict(), tmp_path / "g.pt")
    fresh = Guard(GuardConfig(), LoopState(opt, model, sampler))
    fresh.load_state_dict(torch.load(tmp_path / "g.pt", weights_only=True))
    assert fresh.rollbacks == 1 and fresh.best_val == 1.0
    assert fresh.review(False, 10.0).val_loss == 1.0  # restores the same snapshot


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("factor", 1.0, r"guard.factor must be a finite number > 1, got 1.0"),
        ("lr_cut", 1.5, r"guard.lr_cut must be a number in \(0, 1\), got 1.5"),
        ("freeze_after", 0, r"guard.freeze_after must be an integer >= 1, got 0"),
        ("max_lr_ratio", 0.5, r"guard.max_lr_ratio must be null or a number > 1, got 0.5"),
        ("enabled", "yes", r"guard.enabled must be true or false, got 'yes'"),
    ],
)
def test_bad_guard_config_is_one_clear_line(field, value, message):
    cfg = GuardConfig()
    setattr(cfg, field, value)
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


# --------------------------------------------------------------------------- the collapse rule


def test_collapse_rule_flags_a_jump_far_beyond_the_recent_variation_and_well_above_the_best():
    recent = [2.30, 2.20, 2.10, 2.00, 1.95]  # falling ~0.1 an interval
    why = divergence_reason(False, 3.30, 1.95, 2.0, recent, jump=3.0, jump_min=0.2)  # the collapse
    assert "jumped 69% above the best so far (1.95)" in why and "13.5 x the run's recent" in why
    assert divergence_reason(False, 3.30, 1.95, 2.0, recent, jump=None) == ""  # off: the 2x rule alone misses it
    assert divergence_reason(False, 2.10, 1.95, 2.0, recent, jump=3.0, jump_min=0.2) == ""  # under jump_min above best
    noisy = [2.6, 2.0, 2.7, 2.1, 2.0]  # the run's own variation is large: the same rise is ordinary
    assert divergence_reason(False, 2.7, 2.0, 2.0, noisy, jump=3.0, jump_min=0.2) == ""
    # a slow climb is caught once it is far above the best for the run's variation
    climb = [2.0, 2.05, 2.1, 2.15, 2.2]
    assert divergence_reason(False, 2.25, 2.0, 2.0, climb, jump=3.0, jump_min=0.2) == ""  # 12.5% above the best
    assert divergence_reason(False, 2.45, 2.0, 2.0, climb, jump=3.0, jump_min=0.2) != ""
    assert divergence_reason(False, 3.3, 1.95, 2.0, recent[-2:], jump=3.0) == ""  # too little history yet
    # a loss that can be negative: "above the best" is best + jump_min * |best|
    assert divergence_reason(False, -1.0, -2.0, 3.0, [-1.8, -1.9, -2.0], jump=3.0, jump_min=0.2) != ""


def test_guard_restores_the_best_state_not_the_last_after_a_collapse():
    model, opt, sampler = _loop()
    guard = Guard(GuardConfig(jump=3.0, jump_min=0.2), LoopState(opt, model, sampler))
    guard.start()
    for val in (3.0, 2.5, 2.2, 2.0):
        _step(model, opt)
        assert not guard.review(False, val).diverged
    best = {k: v.clone() for k, v in model.state_dict().items()}
    _step(model, opt)
    assert not guard.review(False, 2.05).diverged  # a healthy interval a little above the best
    _step(model, opt, lr_scale=100.0)
    v = guard.review(False, 3.3)
    assert v.rolled_back and v.val_loss == 2.0 and "jumped" in v.reason
    assert all(torch.equal(model.state_dict()[k], best[k]) for k in best)


def test_guard_config_and_state_from_before_the_collapse_rule_still_load():
    old_spec = {"enabled": True, "factor": 2.0, "lr_cut": 0.5, "freeze_after": 2, "restore_best": False, "max_lr_ratio": None}
    cfg = GuardConfig(**old_spec).validate()
    assert cfg.jump is not None and cfg.factor == 2.0  # an old artifact gets the collapse rule too
    from rlhpo.policy.artifact import load_artifact

    for name in ("default", "v1", "v2"):
        assert load_artifact(name).spec.guard.jump == GuardConfig().jump
    guard = Guard(GuardConfig(), None)
    guard.load_state_dict({"best_val": 1.5, "rollbacks": 1, "last": None, "best": None})  # no "recent"
    assert guard.recent == [] and guard.best_val == 1.5
    guard.review(False, 1.4)
    restored = Guard(GuardConfig(), None)
    restored.load_state_dict(guard.state_dict())
    assert restored.recent == [1.4] and restored.rollbacks == 1


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(jump=0), r"guard\.jump must be null \(off\) or a number > 0"),
        (dict(jump_min=-0.1), r"guard\.jump_min must be a number >= 0"),
        (dict(jump_window=1), r"guard\.jump_window must be an integer >= 2"),
    ],
)
def test_collapse_rule_settings_are_checked(bad, message):
    with pytest.raises(ConfigError, match=message):
        GuardConfig(**bad).validate()


def test_the_collapse_rule_sits_out_a_training_loss_proxy_and_its_factor_is_the_proxy_factor():
    """A Controller with no validation source passes the interval's mean training loss; its
    minibatch noise is no collapse, so only the factor rule judges it, at ``proxy_factor`` (10x:
    heavy-tailed data doubles a healthy run's interval mean; rlhpo.Controller sets watch_jumps)."""
    for watch, expect_collapse, expect_3x in ((True, True, True), (False, False, False)):
        guard = Guard(GuardConfig(), None)
        guard.watch_jumps = watch
        for v in (1.0, 0.9, 0.85, 0.82, 0.80, 0.79):
            assert not guard.review(False, v).diverged
        assert guard.review(False, 1.3).diverged is expect_collapse  # 65% above the best: a collapse, not 2x
        guard.watch_jumps = watch
        assert guard.review(False, 2.4).diverged is expect_3x  # 3x the best: divergence on validation only
        guard.watch_jumps = watch
        assert guard.review(False, 9.0).diverged  # above 10x the best: divergence either way
