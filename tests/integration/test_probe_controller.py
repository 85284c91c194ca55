"""Branching probes in a user's own loop (the Controller with ``policy="probe"``): the probes run at
their decisions as consecutive stretches of the loop, each branch at its lr factor with the same
cooldown, the level follows the winner, the budget is spent exactly and the probe share is as
configured. The score is the loop's validation source, here one that knows the best lr level."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import make_tiny_task
from torch.utils.data import DataLoader, TensorDataset

from rlhpo.controller import Controller
from rlhpo.evaluation.runner import ControllerSchedule, run_task
from rlhpo.policy.artifact import load_artifact


def _data(n=512):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


def test_probes_move_the_level_to_the_branch_the_validation_source_prefers():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    total = 1000
    peak = [0.0]
    box: dict = {}

    def track(optimizer, args, kwargs):  # registered after the controller's: sees the lr it wrote
        peak[0] = max(peak[0], optimizer.param_groups[0]["lr"])

    def val_loss_fn():  # in a probe, prefers the level half the calibrated one: |log(peak / best)|
        c = box["c"]
        if not c.probing:  # a decision: a steady validation loss
            peak[0] = 0.0
            return 1.0
        best = c.history[0]["level"] / 2
        tried = c.decision.level * peak[0] / c.decision.lr_at(c.probe.start, 1)  # the branch's level
        score = abs(math.log(max(tried, 1e-12) / best)) if peak[0] > 0 else 10.0
        peak[0] = 0.0
        return 1.0 + score

    c = box["c"] = Controller(opt, total_steps=total, policy="probe", val_loss_fn=val_loss_fn, model=model)
    opt.register_step_pre_hook(track)
    lrs = []
    steps = 0
    loader = DataLoader(_data(), batch_size=16, shuffle=True)
    while steps < total:
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            lrs.append(opt.param_groups[0]["lr"])
            c.step(loss)
            steps += 1
            if steps == total:
                break
    probes = [h for h in c.history if h.get("probe")]
    start = c.history[0]["level"]
    assert [p["chosen"] for p in probes] == [0.5, 1.0]  # down once, then the level is the best
    assert c.decision.level == pytest.approx(start / 2)
    assert [p["examples"] for p in probes] == [100 + 3 * 10, 250 + 3 * 10]  # at decisions 2 and 5
    assert sum(p["probe_spent"] for p in probes) / total == pytest.approx(0.04)  # 2 probes x 2 branches x 1%
    # the first probe's branches: x1, x0.5, x2 of the level, each flat then cooling to ~0 at its end
    first = lrs[100:130]
    assert max(first[0:10]) == pytest.approx(2 * max(first[10:20]), rel=0.02)  # (the cosine moves on between branches)
    assert max(first[20:30]) == pytest.approx(2 * max(first[0:10]), rel=0.02)
    assert first[9] < 0.15 * first[0] and first[19] < 0.15 * first[10]
    assert c.examples_seen == total and c.done
    assert len(c.decisions) == 19  # the decisions all still happen (after a probe that spans them)


def test_the_runner_probes_through_the_same_controller():
    task = make_tiny_task(1e-2, 8, 0.0, "adam", budget=2000)
    result = run_task(task, ControllerSchedule(load_artifact("probe")), seed=0, n_intervals=20)
    assert result.examples == 2000 and not result.diverged and result.weights_finite
    rule = run_task(task, ControllerSchedule(load_artifact("rule")), seed=0, n_intervals=20)
    assert rule.examples == 2000 and result.test_loss != rule.test_loss  # the probes changed the run


def _loop(total, checkpoint_at=None, resume=None):
    """A make_loader loop under policy="probe"; stops after ``checkpoint_at`` steps, or resumes
    from ``resume`` = (controller state, model state, optimizer state)."""
    task = make_tiny_task(budget=total)
    torch.manual_seed(0)
    model = task.model_fn()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
    c = Controller(opt, total_examples=total, policy="probe", model=model)
    loader = c.make_loader(TensorDataset(task.train.x, task.train.y), batch_size=8)
    if resume is not None:
        model.load_state_dict(resume[1])
        opt.load_state_dict(resume[2])
        c.load_state_dict(resume[0])
    steps = 0
    for x, y in c.batches(loader):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        c.step(loss)
        steps += 1
        if steps == checkpoint_at:
            break
    return c, model, opt


def test_a_run_checkpointed_mid_probe_resumes_to_the_same_end():
    import copy

    full, full_model, _ = _loop(4000)
    part, model, opt = _loop(4000, checkpoint_at=55)  # the first probe starts at 400 examples: step 50
    assert part.probing and part.probe.branch >= 1  # inside the probe, past its first branch
    state = (copy.deepcopy(part.state_dict()), copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()))
    resumed, model2, _ = _loop(4000, resume=state)
    assert [h.get("chosen") for h in resumed.history] == [h.get("chosen") for h in full.history]
    assert resumed.examples_seen == full.examples_seen
    for a, b in zip(model2.parameters(), full_model.parameters()):
        torch.testing.assert_close(a, b)
