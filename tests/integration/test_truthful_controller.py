"""A controller that says what it does, never harms a healthy run and says every misuse once,
from the caller's line (issue 32). Each misuse test failed on a0bed1c (the run went on silently)."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from rlhpo.controller import Controller
from rlhpo.policy.driver import PolicyDriver
from rlhpo.training.monitor import IntervalStats

HERE = __file__


def _data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))


def _loop(c, model, opt, steps, scheduler=None, controller_first=False, call_step=True):
    loader = DataLoader(_data(), batch_size=16, shuffle=True)
    done = 0
    while done < steps:
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            if controller_first and call_step:
                c.step(loss.detach())
            opt.step()
            if scheduler is not None:
                scheduler.step()
            if call_step and not controller_first:
                c.step(loss.detach())
            done += 1
            if done == steps:
                return


def _ours(record) -> list:
    return [w for w in record if "rlhpo" in str(w.message)]


def _said_once_from_here(record, text):
    mine = [w for w in _ours(record) if text in str(w.message)]
    assert len(mine) == 1, [str(w.message) for w in _ours(record)]
    assert mine[0].filename == HERE, mine[0].filename  # the caller's line, not torch's or weakref's
    return str(mine[0].message)


@pytest.mark.parametrize("kind", ["cosine", "onecycle"])
def test_1_a_scheduler_on_the_same_optimizer_is_said(kind):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    c = Controller(opt, total_steps=160, control_batch_size=False)
    sched = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=160) if kind == "cosine"
             else torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=200))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _loop(c, model, opt, 160, scheduler=sched)
    message = _said_once_from_here(record, "lr was changed between its steps")
    assert "remove the other scheduler" in message


def test_2_step_never_called_is_said_during_the_run_and_at_finish():
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    c = Controller(opt, total_steps=160)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _loop(c, model, opt, 120, call_step=False)
        c.finish()
    _said_once_from_here(record, "controller.step(loss) was never called")


def test_3_step_before_the_optimizer_step_is_said():
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    c = Controller(opt, total_steps=160)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _loop(c, model, opt, 40, controller_first=True)
    _said_once_from_here(record, "called before optimizer.step()")


def test_4_weight_decay_raised_more_than_10x_is_said(monkeypatch):
    # the policy raises weight decay at every decision; SGD (nesterov) at wd 5e-4 reaches 10x in a few
    monkeypatch.setattr(PolicyDriver, "act", lambda self, obs, deterministic=True: np.array([0.0, 0.0, 1.0], np.float32))
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    c = Controller(opt, total_steps=160, policy="v3")  # a learned policy (the rule keeps the calibrated wd)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _loop(c, model, opt, 160)
    message = _said_once_from_here(record, "more than 10x yours")
    assert "control_weight_decay=False" in message
    # and a user who turns it off keeps theirs
    opt = torch.optim.SGD(_model().parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    c = Controller(opt, total_steps=160, control_weight_decay=False)
    c.begin()
    assert opt.param_groups[0]["weight_decay"] == 5e-4


@pytest.mark.parametrize("make", [lambda p: torch.optim.RAdam(p, lr=1e-3), lambda p: torch.optim.Adagrad(p, lr=1e-2)])
def test_5_an_optimizer_kind_outside_meta_training_is_said_at_the_start(make):
    model = _model()
    opt = make(model.parameters())
    c = Controller(opt, total_steps=160)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _loop(c, model, opt, 5)
    message = _said_once_from_here(record, "not an optimizer kind the policy was meta-trained with")
    assert "starts from your values" in message


def test_6_a_budget_ten_times_the_loop_is_said_once_with_the_decisions_history_shows():
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    c = Controller(opt, total_steps=1600)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        _loop(c, model, opt, 160)
        c.finish()
    message = _said_once_from_here(record, "ended after 160 of its total_steps=1,600")
    decisions = [h for h in c.history if "action" in h]
    assert f"{len(decisions)} of its 19 decisions" in message, (message, len(decisions))


def test_it_says_where_it_starts_and_sums_up_the_run(caplog):
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    c = Controller(opt, total_steps=100)
    with caplog.at_level(logging.INFO, logger="rlhpo.controller"):  # (an evaluation worker quiets it when imported)
        _loop(c, model, opt, 100)
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("rlhpo")]
    start = next(m for m in lines if m.startswith("rlhpo: AdamW, starting from"))
    assert "calibrated default" in start and "peak lr 0.03" in start and "wd 0.1" in start and "yours: lr 0.001 / wd 0.01" in start
    summary = next(m for m in lines if m.startswith("rlhpo: run finished"))
    assert "19 decisions" in summary and "0 rollbacks" in summary and "final lr" in summary
    # history: the start, then one entry per decision
    assert c.history[0]["start"] and c.history[0]["lr"] == opt.param_groups[0]["lr"] or c.history[0]["level"] == 0.03
    assert len(c.history) == 20 and all("action" in h for h in c.history[1:])
    # quiet by a switch: the rlhpo logger's level
    caplog.clear()
    level = logging.getLogger("rlhpo").level
    logging.getLogger("rlhpo").setLevel(logging.WARNING)
    try:
        c2 = Controller(torch.optim.AdamW(_model().parameters(), lr=1e-3, weight_decay=1e-2), total_steps=100)
        c2.begin()
        assert not [r for r in caplog.records if r.name.startswith("rlhpo") and r.levelno < logging.WARNING]
    finally:
        logging.getLogger("rlhpo").setLevel(level)


def test_training_loss_noise_never_rolls_back_a_healthy_run():
    """Without a validation source: a healthy run whose interval-mean training loss fell from 2.3 to
    0.01 and then moved to 0.024 (minibatch noise at a small loss) is not a divergence, and the end of
    the run never replaces the final weights on a training loss."""
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    c = Controller(opt, total_examples=2000, batch_size=10, model=model)
    losses = [2.3, 1.1, 0.4, 0.1, 0.03, 0.011, 0.024, 0.012, 0.03, 0.01]
    for k, loss in enumerate(losses):
        c.decide(IntervalStats(steps=10, loss_mean=loss, loss_first_half=loss, loss_second_half=loss), loss, examples_seen=100 * (k + 1))
    # (the same sequence as the validation loss of a user-reported source: no rollback either)
    assert not any(h.get("rolled_back") or h.get("diverged") for h in c.history)
    before = [p.detach().clone() for p in model.parameters()]
    c.monitor.after_step(torch.tensor(0.05), False)  # the last minibatches: up again
    c.finish()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    # a real blow-up still is one: non-finite, or most of the progress lost
    c2 = Controller(torch.optim.AdamW(_model().parameters(), lr=1e-3, weight_decay=1e-2), total_examples=2000, batch_size=10)
    for k, loss in enumerate([2.3, 1.1, 0.4, 0.1, 1.9]):
        c2.decide(IntervalStats(steps=10, loss_mean=loss), loss, examples_seen=100 * (k + 1))
    last = c2.history[-1]
    assert last["diverged"] and last["rolled_back"]


def test_the_controller_and_apply_log_the_same_tensorboard_tags(tmp_path):
    from conftest import make_tiny_task
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from torch.utils.tensorboard import SummaryWriter

    from rlhpo.apply import log_run
    from rlhpo.control.prior import CALIBRATED
    from rlhpo.evaluation.baselines import Calibrated
    from rlhpo.evaluation.runner import run_task

    writer = SummaryWriter(str(tmp_path / "controller"))
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    c = Controller(opt, total_steps=100, writer=writer, batch_size=16)
    _loop(c, model, opt, 100)
    writer.close()
    log_run(tmp_path / "apply", run_task(make_tiny_task(), Calibrated(CALIBRATED), seed=0))

    def tags(d):
        acc = EventAccumulator(str(d))
        acc.Reload()
        return acc, set(acc.Tags()["scalars"])

    acc, controller_tags = tags(tmp_path / "controller")
    _, apply_tags = tags(tmp_path / "apply")
    shared = {"hparams/lr", "hparams/batch_size", "hparams/weight_decay", "loss/train", "loss/val", "progress/examples"}
    assert shared <= controller_tags and shared <= apply_tags, (controller_tags, apply_tags)
    assert "guard/rollback" in controller_tags
    steps = [e.step for e in acc.Scalars("hparams/lr")]
    assert steps[0] == 0 and steps == sorted(steps) and steps[-1] <= 100  # x: optimizer steps, the start a point
    assert math.isclose(acc.Scalars("progress/examples")[0].value, 0.0)
