"""The calibrated prior (controller v3): where a run starts, and the trust region around it."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from rlhpo.control.decision import DecisionPath
from rlhpo.control.guard import GuardConfig
from rlhpo.control.prior import CALIBRATED, calibrated_hparams, optimizer_kind, prior_start
from rlhpo.control.spec import DecisionSpec
from rlhpo.errors import ConfigError
from rlhpo.tasks.base import Hyperparams

CONF = Path(__file__).resolve().parents[2] / "conf" / "evaluate" / "calibrated.yaml"


def test_the_package_table_is_the_calibrated_baselines_table():
    assert yaml.safe_load(CONF.read_text())["calibrated"] == CALIBRATED


@pytest.mark.parametrize(
    "make, kind",
    [(torch.optim.AdamW, "adamw"), (torch.optim.Adam, "adam"), (torch.optim.SGD, "sgd"), (torch.optim.RMSprop, None)],
)
def test_optimizer_kind(make, kind):
    p = [torch.nn.Parameter(torch.zeros(2))]
    assert optimizer_kind(make(p, lr=0.1)) == kind


def test_calibrated_start_keeps_the_users_batch_size_and_unknown_kinds_keep_everything():
    user = Hyperparams(1e-3, 48, 1e-2)
    assert calibrated_hparams("adamw", user) == Hyperparams(0.03, 48, 0.1)
    assert calibrated_hparams(None, user) == user
    assert prior_start("user", "adamw", user) == user
    with pytest.raises(ConfigError, match=r"spec.prior must be one of \['user', 'calibrated'\], got 'best'"):
        _path("best")


def _path(prior, ratio=4.0):
    return DecisionPath(DecisionSpec(n_intervals=10, guard=GuardConfig(max_lr_ratio=ratio), base_schedule="none", prior=prior), 1000)


def test_decision_path_starts_at_the_prior_inside_a_trust_region_that_reaches_down_to_the_users_lr():
    path = _path("calibrated")
    written = []
    start = path.start(Hyperparams(1e-4, 32, 1e-2), True, lambda hp: written.append(hp) or hp, kind="adamw")
    assert math.isclose(start.lr, 0.03) and (start.batch_size, start.weight_decay) == (32, 0.1) and written == [start]
    up, down = np.array([1.0, 0, 0]), np.array([-1.0, 0, 0])
    hp = start
    for _ in range(10):
        hp = path.act(up, hp)
    assert math.isclose(hp.lr, 0.03 * 4, rel_tol=1e-9)  # never above prior x max_lr_ratio
    for _ in range(30):
        hp = path.act(down, hp)
    assert math.isclose(hp.lr, 1e-4, rel_tol=1e-9)  # down to the user's lr, below prior / 4


def test_a_user_lr_above_the_prior_does_not_widen_the_region_upwards():
    path = _path("calibrated")
    hp = path.start(Hyperparams(1.0, 32, 0.0), True, lambda hp: hp, kind="adam")
    assert math.isclose(hp.lr, 0.03) and (hp.batch_size, hp.weight_decay) == (32, 0.0)  # Adam's calibrated wd is 0: off
    for _ in range(10):
        hp = path.act(np.array([-1.0, 0, 1.0]), hp)
    assert math.isclose(hp.lr, 0.03 / 4, rel_tol=1e-9) and hp.weight_decay == 0.0


def test_a_control_that_is_off_keeps_the_users_value_and_the_user_prior_is_v2():
    path = _path("calibrated")
    hp = path.start(Hyperparams(1e-3, 32, 1e-2), True, lambda hp: hp, off=("weight_decay",), kind="adamw")
    assert math.isclose(hp.lr, 0.03) and (hp.batch_size, hp.weight_decay) == (32, 1e-2)
    path = _path("user")
    hp = path.start(Hyperparams(1e-3, 32, 1e-2), True, lambda hp: hp, kind="adamw")
    assert np.allclose([hp.lr, hp.batch_size, hp.weight_decay], [1e-3, 32, 1e-2])
