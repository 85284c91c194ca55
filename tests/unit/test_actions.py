"""Unit tests of the action mapping (rlhpo.control.actions): multiplicative log-space steps,
bounds, disabled controls, the batch size's log-space drift and the configuration checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlhpo.control.actions import CONTROLS, ActionConfig, ActionSpec, ControlConfig
from rlhpo.errors import ConfigError
from rlhpo.tasks import Hyperparams

START = Hyperparams(lr=1e-3, batch_size=32, weight_decay=1e-4)


def spec(config: ActionConfig | None = None, start: Hyperparams = START, **kw) -> tuple[ActionSpec, Hyperparams]:
    s = ActionSpec(config or ActionConfig(), **kw)
    return s, s.reset(start)


def only(*enabled: str) -> ActionConfig:
    cfg = ActionConfig()
    for name in CONTROLS:
        getattr(cfg, name).enabled = name in enabled
    return cfg


# --------------------------------------------------------------------------- defaults


def test_default_config():
    cfg = ActionConfig()
    assert cfg.enabled == ("lr", "batch_size", "weight_decay") == CONTROLS
    assert (cfg.lr.min, cfg.lr.max, cfg.lr.max_step_factor) == (1e-6, 10.0, 2.0)
    assert (cfg.batch_size.min, cfg.batch_size.max) == (4, 1024)
    assert (cfg.weight_decay.min, cfg.weight_decay.max) == (1e-6, 0.1)
    assert cfg.validate() is cfg
    assert ActionConfig().lr is not ActionConfig().lr  # no shared mutable defaults


def test_reset_returns_the_start_inside_the_bounds():
    s, hp = spec()
    assert s.n_actions == 3
    assert hp.lr == pytest.approx(1e-3) and hp.batch_size == 32 and hp.weight_decay == pytest.approx(1e-4)
    assert isinstance(hp.batch_size, int)


# --------------------------------------------------------------------------- steps


def test_plus_one_multiplies_minus_one_divides_zero_keeps():
    s, hp = spec()
    up = s.apply(np.ones(3), hp)
    assert up.lr == pytest.approx(2e-3) and up.batch_size == 64 and up.weight_decay == pytest.approx(2e-4)
    same = s.apply(np.zeros(3), up)
    assert same.lr == pytest.approx(2e-3) and same.batch_size == 64 and same.weight_decay == pytest.approx(2e-4)
    down = s.apply(-np.ones(3), same)
    assert down.lr == pytest.approx(1e-3) and down.batch_size == 32 and down.weight_decay == pytest.approx(1e-4)
    down = s.apply(-np.ones(3), down)
    assert down.lr == pytest.approx(5e-4) and down.batch_size == 16 and down.weight_decay == pytest.approx(5e-5)


def test_fractional_actions_are_fractional_powers():
    s, hp = spec()
    hp = s.apply(np.array([0.5, 0.0, -0.25]), hp)
    assert hp.lr == pytest.approx(1e-3 * 2**0.5, rel=1e-9)
    assert hp.weight_decay == pytest.approx(1e-4 * 2**-0.25, rel=1e-9)
    assert hp.batch_size == 32


def test_each_control_uses_its_own_step_factor():
    cfg = ActionConfig()
    cfg.lr.max_step_factor = 10.0
    cfg.batch_size.max_step_factor = 4.0
    cfg.weight_decay.max_step_factor = 1.5
    s, hp = spec(cfg)
    hp = s.apply(np.ones(3), hp)
    assert hp.lr == pytest.approx(1e-2) and hp.batch_size == 128 and hp.weight_decay == pytest.approx(1.5e-4)


def test_steps_clip_at_the_bounds_and_recover():
    s, hp = spec()
    for _ in range(40):
        hp = s.apply(np.ones(3), hp)
    assert hp.lr == pytest.approx(10.0, rel=1e-12) and hp.batch_size == 1024
    assert hp.weight_decay == pytest.approx(0.1, rel=1e-12)
    # at the upper bound, one step down leaves the bound (no hidden overshoot accumulated)
    down = s.apply(-np.ones(3), hp)
    assert down.lr == pytest.approx(5.0) and down.batch_size == 512 and down.weight_decay == pytest.approx(0.05)
    for _ in range(60):
        hp = s.apply(-np.ones(3), hp)
    assert hp.lr == pytest.approx(1e-6, rel=1e-12) and hp.batch_size == 4
    assert hp.weight_decay == pytest.approx(1e-6, rel=1e-12)
    up = s.apply(np.ones(3), hp)
    assert up.lr == pytest.approx(2e-6) and up.batch_size == 8 and up.weight_decay == pytest.approx(2e-6)


def test_values_always_inside_bounds_under_random_actions():
    cfg = ActionConfig()
    s, hp = spec(cfg)
    rng = np.random.default_rng(0)
    for _ in range(300):
        hp = s.apply(rng.uniform(-3, 3, size=3), hp)
        assert cfg.lr.min <= hp.lr <= cfg.lr.max
        assert cfg.batch_size.min <= hp.batch_size <= cfg.batch_size.max
        assert cfg.weight_decay.min <= hp.weight_decay <= cfg.weight_decay.max
        assert isinstance(hp.batch_size, int)
        hp.validate()


# --------------------------------------------------------------------------- disabled controls


@pytest.mark.parametrize("enabled", [("lr",), ("batch_size",), ("weight_decay",), ("lr", "weight_decay"), ("batch_size", "weight_decay")])
def test_disabled_controls_keep_the_current_value(enabled):
    s, hp = spec(only(*enabled))
    assert s.n_actions == len(enabled)
    assert s.controls == enabled
    current = Hyperparams(lr=0.123, batch_size=77, weight_decay=0.0456)  # what the caller has now
    new = s.apply(np.ones(len(enabled)), current)
    expected = {"lr": 2e-3, "batch_size": 64, "weight_decay": 2e-4}
    for name in CONTROLS:
        if name in enabled:
            assert getattr(new, name) == pytest.approx(expected[name]), name
        else:
            assert getattr(new, name) == getattr(current, name), name
    full = s.full_action(np.ones(len(enabled)))
    assert full.tolist() == [1.0 if n in enabled else 0.0 for n in CONTROLS]


def test_disabled_control_is_not_clipped_at_reset():
    cfg = only("lr")
    s, hp = spec(cfg, start=Hyperparams(lr=1e-3, batch_size=4096, weight_decay=0.5))
    assert hp.batch_size == 4096 and hp.weight_decay == 0.5  # outside the bounds, but not controlled


# --------------------------------------------------------------------------- full_action


def test_full_action_rejects_a_wrong_length():
    s, _ = spec(only("lr", "weight_decay"))
    with pytest.raises(ValueError, match=r"action must have 2 entries \(lr, weight_decay\), got 3"):
        s.full_action(np.zeros(3))
    with pytest.raises(ValueError, match="2 entries"):
        s.full_action(np.zeros(1))
    with pytest.raises(ValueError, match="got 0"):
        s.apply(np.zeros(0), START)
    s3, _ = spec()
    with pytest.raises(ValueError, match="must have 3 entries"):
        s3.full_action([0.0, 0.0])


def test_full_action_maps_nan_to_zero_and_clips():
    s, hp = spec()
    full = s.full_action(np.array([np.nan, 5.0, -np.inf]))
    assert full.tolist() == [0.0, 1.0, -1.0]
    assert s.full_action([0.3, -0.7, 1.0]).tolist() == pytest.approx([0.3, -0.7, 1.0])
    assert s.full_action(np.array([[0.1, 0.2, 0.3]], dtype=np.float32)).shape == (3,)  # flattened
    new = s.apply(np.array([np.nan, 5.0, -np.inf]), hp)
    assert new.lr == pytest.approx(1e-3) and new.batch_size == 64 and new.weight_decay == pytest.approx(5e-5)


def test_full_action_does_not_change_state():
    s, hp = spec()
    z = s.z.copy()
    s.full_action(np.ones(3))
    assert np.array_equal(s.z, z)


# --------------------------------------------------------------------------- batch size


def test_batch_size_drifts_in_log_space_and_rounds_only_when_applied():
    s, hp = spec()
    sizes = []
    for _ in range(10):
        hp = s.apply(np.array([0.0, 0.05, 0.0]), hp)  # x 2**0.05 = 1.035 each
        sizes.append(hp.batch_size)
        assert isinstance(hp.batch_size, int) and hp.batch_size >= 1
    # the log state accumulates exactly: 32 * 2**0.5 = 45.25 after ten steps
    assert sizes[-1] == round(32 * 2**0.5) == 45
    assert sizes == sorted(sizes)
    assert math.exp(s.z[1]) == pytest.approx(32 * 2**0.5)


def test_tiny_batch_steps_accumulate_instead_of_rounding_away():
    s, hp = spec()
    for _ in range(20):
        hp = s.apply(np.array([0.0, 0.01, 0.0]), hp)  # each alone rounds back to 32
    assert hp.batch_size == round(32 * 2**0.2) == 37


def test_reset_clips_the_start_into_the_bounds():
    s, hp = spec(start=Hyperparams(lr=100.0, batch_size=2, weight_decay=0.0))
    assert hp.lr == pytest.approx(10.0, rel=1e-12) and hp.batch_size == 4
    assert hp.weight_decay == pytest.approx(1e-6, rel=1e-12)
    hp = s.reset(Hyperparams(lr=1e-9, batch_size=5000, weight_decay=5.0))
    assert hp.lr == pytest.approx(1e-6, rel=1e-12) and hp.batch_size == 1024
    assert hp.weight_decay == pytest.approx(0.1, rel=1e-12)
    # reset forgets the previous run's state
    s.apply(np.ones(3), hp)
    hp = s.reset(START)
    assert hp.lr == pytest.approx(1e-3) and hp.batch_size == 32


@pytest.mark.parametrize("cap,expected_max", [(100, 100), (5000, 1024), (1, 1), (2, 2)])
def test_max_batch_size_caps(cap, expected_max):
    s, hp = spec(max_batch_size=cap, start=Hyperparams(lr=1e-3, batch_size=2048, weight_decay=1e-4))
    assert hp.batch_size == expected_max
    for _ in range(20):
        hp = s.apply(np.ones(3), hp)
    assert hp.batch_size == expected_max
    for _ in range(20):
        hp = s.apply(-np.ones(3), hp)
    assert 1 <= hp.batch_size <= expected_max
    assert hp.batch_size == min(4, expected_max)


# --------------------------------------------------------------------------- state


def test_state_dict_round_trip():
    s, hp = spec()
    hp = s.apply(np.array([0.3, -0.45, 0.9]), hp)
    state = s.state_dict()
    assert set(state) == {"z", "v", "live", "lo", "hi"} and len(state["z"]) == 3 and state["live"] == [True, True, True]
    import json

    state = json.loads(json.dumps(state))  # plain data
    other = ActionSpec(ActionConfig())
    other.reset(Hyperparams(lr=0.5, batch_size=500, weight_decay=0.05))
    other.load_state_dict(state)
    assert np.array_equal(other.z, s.z)
    assert other.hparams(hp) == s.hparams(hp)
    a = np.array([-0.2, 0.7, 0.1])
    assert other.apply(a, hp) == s.apply(a, hp)


# --------------------------------------------------------------------------- validation


def test_validate_rejects_min_at_or_above_max():
    cfg = ActionConfig()
    cfg.lr.min, cfg.lr.max = 0.1, 0.01
    with pytest.raises(ConfigError, match=r"actions\.lr: min \(0\.1\) must be below max \(0\.01\)"):
        cfg.validate()
    cfg = ActionConfig()
    cfg.weight_decay.min = cfg.weight_decay.max = 0.1
    with pytest.raises(ConfigError, match="weight_decay: min"):
        cfg.validate()


@pytest.mark.parametrize("factor", [1.0, 0.5])
def test_validate_rejects_step_factor_at_most_one(factor):
    cfg = ActionConfig()
    cfg.batch_size.max_step_factor = factor
    with pytest.raises(ConfigError, match=r"actions\.batch_size\.max_step_factor must be > 1"):
        cfg.validate()


def test_validate_rejects_no_control_enabled():
    with pytest.raises(ConfigError, match="at least one of lr, batch_size, weight_decay must be enabled"):
        only().validate()
    with pytest.raises(ConfigError, match="at least one"):
        ActionSpec(only())


@pytest.mark.parametrize(
    "field,value",
    [("min", 0.0), ("min", -1.0), ("max", float("nan")), ("max", float("inf")), ("max_step_factor", True), ("min", "1e-3")],
)
def test_validate_rejects_bad_numbers(field, value):
    cfg = ActionConfig()
    setattr(cfg.lr, field, value)
    with pytest.raises(ConfigError, match=rf"actions\.lr\.{field} must be a finite number > 0"):
        cfg.validate()


def test_validate_rejects_non_bool_enabled_and_non_control():
    cfg = ActionConfig()
    cfg.weight_decay.enabled = 1  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="weight_decay.enabled must be true or false"):
        cfg.validate()
    cfg = ActionConfig()
    cfg.lr = {"enabled": True}  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="actions.lr must be a control"):
        cfg.validate()


def test_validate_rejects_batch_size_min_below_one():
    cfg = ActionConfig()
    cfg.batch_size.min = 0.5
    with pytest.raises(ConfigError, match="batch_size.min must be >= 1"):
        cfg.validate()


def test_validate_uses_the_where_prefix():
    cfg = ActionConfig()
    cfg.lr.max_step_factor = 1.0
    with pytest.raises(ConfigError, match=r"^policy\.actions\.lr\.max_step_factor"):
        cfg.validate("policy.actions")


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


def test_action_spec_validates_its_config():
    cfg = ActionConfig(lr=ControlConfig(True, 1.0, 0.5, 2.0))
    with pytest.raises(ConfigError, match="min"):
        ActionSpec(cfg)


def test_a_control_held_off_for_a_run_ignores_its_action():
    s = ActionSpec(ActionConfig())
    start = Hyperparams(lr=1e-3, batch_size=32, weight_decay=0.0)
    hp = s.reset(start, off=("weight_decay",))
    assert hp.weight_decay == 0.0  # not clipped up to the bound
    hp = s.apply(np.ones(3), hp)
    assert hp.weight_decay == 0.0 and hp.lr == pytest.approx(2e-3) and hp.batch_size == 64
    assert s.full_action(np.ones(3)).tolist() == [1.0, 1.0, 0.0]
