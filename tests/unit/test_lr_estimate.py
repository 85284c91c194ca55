"""Prodigy's step-size estimate beside another optimizer (rlhpo.control.lr_estimate): the same
``d`` as prodigyopt's own on the same steps; on a torch Adam whose lr it sets, the same scale."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch

from rlhpo.control.lr_estimate import EstimateConfig, ProdigyEstimate
from rlhpo.errors import ConfigError


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g) + 0.1 * torch.randn(256, 1, generator=g)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    return model, x, y


def _train(model, x, y, opt, steps, before=None):
    for i in range(steps):
        idx = torch.arange(i * 32, i * 32 + 32) % len(x)
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        if before is not None:
            before()
        opt.step()


def test_the_estimate_is_prodigyopts_own_on_the_same_steps():
    from prodigyopt import Prodigy

    model, x, y = _problem()
    with contextlib.redirect_stdout(io.StringIO()):
        opt = Prodigy(model.parameters(), lr=1.0, safeguard_warmup=True, use_bias_correction=True)
    est = ProdigyEstimate(opt)
    est.begin()
    est._hook.remove()  # not by itself: the test feeds it Prodigy's own step size, d x lr (d before the step)
    ds, ours = [], []
    for _ in range(60):
        size = opt.param_groups[0]["d"] * opt.param_groups[0]["lr"]
        _train(model, x, y, opt, 1)
        est.observe(size)
        ours.append(est.d)
        ds.append(opt.param_groups[0]["d"])
    assert ds[-1] > 100 * ds[0]  # it grew
    assert ours == pytest.approx(ds, rel=1e-5)


def test_beside_adam_it_sets_the_lr_and_settles_near_prodigys_scale():
    from prodigyopt import Prodigy

    model, x, y = _problem(1)
    with contextlib.redirect_stdout(io.StringIO()):
        ref = Prodigy(model.parameters(), lr=1.0, safeguard_warmup=True, use_bias_correction=True)
    _train(model, x, y, ref, 300)
    model, x, y = _problem(1)
    adam = torch.optim.Adam(model.parameters(), lr=1e-6)
    est = ProdigyEstimate(adam)
    est.begin()
    assert est.active
    for _ in range(300):
        adam.param_groups[0]["lr"] = est.d  # the stretch's lr: d x the schedule (1 here)
        _train(model, x, y, adam, 1)
    d = est.end()
    assert not est.active and est._p0 == []
    assert ref.param_groups[0]["d"] / 3 < d < 3 * ref.param_groups[0]["d"]


def test_a_checkpoint_mid_stretch_resumes_the_same_estimate():
    model, x, y = _problem(2)
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)
    est = ProdigyEstimate(adam)
    est.begin()
    _train(model, x, y, adam, 20)
    state = est.state_dict()
    other = ProdigyEstimate(adam)
    est.end()
    other.load_state_dict(state)
    assert other.active and other.d == state["d"] and other.k == 20
    other.end()
    assert ProdigyEstimate(adam).state_dict() is None


@pytest.mark.parametrize("kw, pattern", [
    (dict(fraction=0.5), r"lr_estimate.fraction must be a share of the budget in \(0, 0.25\], got 0.5"),
    (dict(min_steps=-1), r"lr_estimate.min_steps must be an integer >= 0, got -1"),
    (dict(settle=0.5), r"lr_estimate.settle must be a finite factor >= 1, got 0.5"),
])
def test_bad_settings_name_what_is_allowed(kw, pattern):
    with pytest.raises(ConfigError, match=pattern):
        EstimateConfig(**kw)


def test_a_closure_based_step_gives_the_same_estimate():
    """Lightning steps with a closure: the gradients exist only inside ``step()``."""
    runs = []
    for closure in (False, True):
        model, x, y = _problem(3)
        adam = torch.optim.Adam(model.parameters(), lr=1e-3)
        est = ProdigyEstimate(adam)
        est.begin()
        for i in range(30):
            idx = torch.arange(i * 32, i * 32 + 32) % len(x)

            def loss_fn():
                adam.zero_grad()
                loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
                loss.backward()
                return loss

            if closure:
                adam.step(loss_fn)
            else:
                loss_fn()
                adam.step()
            adam.param_groups[0]["lr"] = est.d
        runs.append(list(est.trajectory))
        est.end()
    assert runs[0] == runs[1] and runs[0][-1] > 1e-6
