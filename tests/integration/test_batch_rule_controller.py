"""The batch rule in a user's own loop (the Controller with ``policy="batch"``): where the gradient
is mostly noise the batch of the controller's loader doubles (the lr level x sqrt(2) for Adam) up
to 8x the start; where there is no noise it never moves; each decision records the noise scale it
read; a checkpoint resumes to the same run; and the evaluation runner grows the batch through the
same controller."""

from __future__ import annotations

import gc
import logging

import pytest
import torch
from conftest import make_tiny_task
from torch.utils.data import TensorDataset

from rlhpo.controller import Controller
from rlhpo.evaluation.runner import ControllerSchedule, run_task
from rlhpo.policy.artifact import load_artifact

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _data(noise: float, n: int = 4096):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 8, generator=g)
    y = x @ torch.linspace(-1, 1, 8) + noise * torch.randn(n, generator=g)
    return TensorDataset(x, y[:, None])


def _run(noise: float, total: int = 60_000, stop_at: int | None = None, state: dict | None = None):
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    c = Controller(opt, total_examples=total, policy="batch", model=model)
    loader = c.make_loader(_data(noise), batch_size=16)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        c.load_state_dict(state["controller"])
    for x, y in c.batches(loader):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        c.step(loss)
        if stop_at is not None and c.examples_seen >= stop_at and not c.done:
            return c, {"model": model.state_dict(), "opt": opt.state_dict(), "controller": c.state_dict()}
    return c, model


def test_a_noisy_gradient_grows_the_batch_and_the_level_with_it(caplog):
    with caplog.at_level(logging.INFO, logger="rlhpo.controller"):  # (an evaluation worker quiets it when imported)
        c, _ = _run(noise=3.0)
    sizes = [h["batch_size"] for h in c.history]
    assert sizes[0] == 16 and sizes[-1] == 128  # doubled up to the cap, 8x the start
    assert all(b2 in (b1, 2 * b1) for b1, b2 in zip(sizes, sizes[1:]))  # one doubling a decision at most
    grew = [i for i in range(1, len(sizes)) if sizes[i] > sizes[i - 1]]
    assert grew[0] >= 2  # never before the rule's first decision (after=2)
    levels = [h["level"] for h in c.history]
    for i in grew:  # Adam: the level x sqrt(2) with each doubling
        assert levels[i] == pytest.approx(levels[i - 1] * 2**0.5, rel=1e-6)
    decided = [h for h in c.history if not h.get("start")]
    assert all("noise_scale" in h for h in decided)
    for i in grew:  # each doubling read a noise scale at least 8x the batch it doubled
        assert c.history[i]["noise_scale"] >= 8 * sizes[i - 1]
    assert sum("batch size" in r.getMessage() and "->" in r.getMessage() for r in caplog.records) == 3
    assert c.done and c.examples_seen < 60_000 + 128  # the loader's last batch is not cut


def test_without_gradient_noise_the_batch_stays():
    c, _ = _run(noise=0.0, total=20_000)
    assert {h["batch_size"] for h in c.history} == {16}


def test_a_checkpoint_resumes_to_the_same_batches_and_weights():
    whole, model = _run(noise=3.0)
    half, state = _run(noise=3.0, stop_at=25_000)
    with pytest.warns(UserWarning, match="the run ended after"):  # the stopped run says it ended short
        del half
        gc.collect()
    resumed, model2 = _run(noise=3.0, state=state)
    assert [h["batch_size"] for h in resumed.history] == [h["batch_size"] for h in whole.history]
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.allclose(a, b)


def test_the_runner_grows_the_batch_through_the_same_controller():
    task = make_tiny_task(1e-2, 8, 0.0, "adam", budget=6000, n=960, regression=True)
    schedule = ControllerSchedule(load_artifact("batch"))
    result = run_task(task, schedule, seed=0, n_intervals=20)
    assert schedule.controller.batch_rule is not None
    assert all("noise_scale" in h for h in schedule.controller.history if not h.get("start"))
    assert result.examples == 6000 and not result.diverged


def test_the_default_controller_runs_the_batch_rule_and_not_the_lr_estimate():
    opt = torch.optim.Adam(torch.nn.Linear(2, 1).parameters(), lr=1e-3)
    default = Controller(opt, total_examples=1000, batch_size=8)
    assert default.batch_rule is not None and default.artifact.lr_estimate is None
    assert Controller(opt, total_examples=1000, batch_size=8, policy="estimate").artifact.lr_estimate is not None
    assert Controller(opt, total_examples=1000, batch_size=8, policy="rule").batch_rule is None


def _accumulated(accumulate: int, total: int):
    """A noisy task under the batch rule with ``accumulate`` micro-batches of 16 per optimizer step."""
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    c = Controller(opt, total_examples=total, policy="batch", model=model)
    loader = c.make_loader(_data(3.0), batch_size=16)
    for i, (x, y) in enumerate(c.batches(loader)):
        loss = torch.nn.functional.mse_loss(model(x), y)
        (loss / accumulate).backward()
        if (i + 1) % accumulate == 0:
            opt.step()
            opt.zero_grad()
            c.step(loss)
    return c


def test_the_step_floor_counts_the_examples_of_an_accumulated_step():
    # 30,000 examples: counted in micro-batches of 16 a doubling leaves well over 500 steps, but an
    # optimizer step of 4 micro-batches takes 64 examples: the run has 469 steps in all, below the
    # rule's floor of 500, so no doubling is allowed (counting micro-batches as steps allowed three)
    plain = _accumulated(1, 30_000)
    assert max(h["batch_size"] for h in plain.history) > 16  # without accumulation the noise grows it
    accumulated = _accumulated(4, 30_000)
    assert {h["batch_size"] for h in accumulated.history} == {16}
    assert accumulated.watch.decided_steps < 500
