"""The Controller in a plain loop as a new user writes it, and the mistakes people make (issue 25):
each either works as meant or is stopped with one clear message when it happens."""

from __future__ import annotations

import gc
import warnings

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from rlhpo.controller import Controller
from rlhpo.errors import ControllerError
from rlhpo.policy.artifact import load_artifact

_ART = load_artifact("default")


def _setup(n=256, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(n, 8)
    y = (x[:, 0] + torch.randn(n) > 0).long()  # noisy labels: the loss stays well above 0
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    return TensorDataset(x, y), model, opt


def _one_step(model, opt, xb, yb):
    loss = torch.nn.functional.cross_entropy(model(xb), yb)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def test_scheduler_shape_with_own_loader_needs_nothing_else():
    data, model, opt = _setup()
    loader = DataLoader(data, batch_size=32, shuffle=True)
    c = Controller(opt, total_steps=5 * len(loader))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(5):
            for xb, yb in loader:
                c.step(_one_step(model, opt, xb, yb))
    assert c.done and len([h for h in c.history if "action" in h]) == c.spec.n_intervals - 1
    assert {h["batch_size"] for h in c.history} == {None}  # nothing said what a step trained: recorded as unknown
    assert not any(h.get("diverged") for h in c.history)
    assert c._finished  # the guard's last word was said without a finish() call


def test_steps_given_as_examples_is_refused_at_the_first_step_naming_total_steps():
    data, model, opt = _setup()
    loader = DataLoader(data, batch_size=64, shuffle=True)
    c = Controller(opt, total_examples=20 * len(loader), model=model)  # 80: steps, not examples
    xb, yb = next(iter(loader))
    with pytest.raises(ControllerError, match=r"fewer than the policy's 20 decisions.*total_steps=80"):
        c.step(_one_step(model, opt, xb, yb))


def test_empty_intervals_are_never_a_divergence():
    data, model, opt = _setup()
    c = Controller(opt, total_examples=2000, control_batch_size=False)
    x, y = data.tensors
    sizes = [10] * 10 + [400] * 5  # later batches span several 100-example intervals
    for n in sizes:
        c.step(_one_step(model, opt, x[:n % 256 or 256], y[:n % 256 or 256]), batch_size=n)
        if c.done:
            break
    assert c.done and len(c.history) >= 15
    assert not any(h.get("diverged") for h in c.history), [h["val_loss"] for h in c.history]
    assert c.decision.guard.rollbacks == 0  # no false rollback cut the lr


def test_batches_without_step_is_caught():
    data, model, opt = _setup()
    c = Controller(opt, total_examples=2000)
    loader = c.make_loader(data, batch_size=32)
    drawn = 0
    with pytest.raises(ControllerError, match=r"call controller.step\(loss\) after each optimizer.step\(\)"):
        for xb, yb in c.batches(loader):
            _one_step(model, opt, xb, yb)  # forgot controller.step(loss)
            drawn += len(xb)
    assert drawn <= 2000 + 2000 // 20 + 32


def test_a_budget_larger_than_the_loop_is_reported_at_the_end():
    data, model, opt = _setup()
    loader = DataLoader(data, batch_size=32, shuffle=True)
    c = Controller(opt, total_steps=40 * len(loader))
    for xb, yb in loader:  # one epoch of forty
        c.step(_one_step(model, opt, xb, yb))
    with pytest.warns(UserWarning, match=r"ended after 8 of its total_steps=320 \(2%; 0 of its 19 decisions\)"):
        del c, opt, model  # the loop is over (at the latest, the interpreter's exit says the same)
        gc.collect()


def test_finish_before_the_budget_is_reported():
    data, model, opt = _setup()
    c = Controller(opt, total_examples=5 * 256)
    loader = c.make_loader(data, batch_size=32)
    for xb, yb in loader:
        c.step(_one_step(model, opt, xb, yb))
    with pytest.warns(UserWarning, match=r"ended after 256 of its total_examples=1,280 \(20%"):
        c.finish()


def test_training_past_the_budget_is_reported_once():
    data, model, opt = _setup()
    loader = DataLoader(data, batch_size=32)
    c = Controller(opt, total_steps=3 * len(loader))
    with pytest.warns(UserWarning, match=r"past its total_steps=24") as record:
        for _ in range(8):
            for xb, yb in loader:
                c.step(_one_step(model, opt, xb, yb))
    assert sum("past its" in str(w.message) for w in record) == 1


def test_warm_start_batch_size_reaches_make_loader():
    data, model, opt = _setup(n=512)
    c = Controller.from_pretrained(optimizer=opt, total_examples=20_000, warm_start=True, model=model, train_data=data)
    assert not c.recommendation.fallback
    loader = c.make_loader(data, batch_size=32)
    assert loader.batch_sampler.batch_size == c.recommendation.hparams.batch_size


def test_begin_before_make_loader_controls_the_batch_size_without_a_warning():
    data, model, opt = _setup()
    c = Controller(opt, total_examples=4000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c.begin()
        loader = c.make_loader(data, batch_size=16)
        for xb, yb in c.batches(loader):
            c.step(_one_step(model, opt, xb, yb))
    assert not [w for w in caught if "not applied" in str(w.message)]
    assert c.control_batch_size


def test_examples_are_counted_from_the_model_inputs():
    data, model, opt = _setup()
    loader = DataLoader(data, batch_size=32, shuffle=True)
    c = Controller(opt, total_examples=3 * 256, model=model)
    with torch.no_grad():
        model(data.tensors[0])  # an evaluation pass is not training
    steps = 0
    while not c.done:
        for xb, yb in loader:
            c.step(_one_step(model, opt, xb, yb))
            steps += 1
            if c.done:
                break
    assert c.examples_seen == 3 * 256 and steps == 24


def test_a_step_nothing_counts_under_an_example_budget_names_total_steps():
    data, model, opt = _setup()
    c = Controller(opt, total_examples=1000)
    xb, yb = data.tensors[0][:32], data.tensors[1][:32]
    with pytest.raises(ControllerError, match=r"cannot tell how many examples.*total_steps="):
        c.step(_one_step(model, opt, xb, yb))


def test_make_loader_refuses_a_dataloader_at_once():
    data, model, opt = _setup()
    c = Controller(opt, total_examples=1000)
    with pytest.raises(ControllerError, match=r"got a DataLoader; pass its dataset"):
        c.make_loader(DataLoader(data, batch_size=8))


def test_budget_is_given_exactly_once():
    _, _, opt = _setup()
    with pytest.raises(ControllerError, match="exactly one"):
        Controller(opt)
    with pytest.raises(ControllerError, match="exactly one"):
        Controller(opt, total_examples=100, total_steps=10)
    with pytest.raises(ControllerError, match="the policy is a keyword now"):
        Controller(_ART, opt, 100)  # type: ignore[arg-type]


def test_a_restart_at_the_first_step_does_not_compound_the_warm_up():
    """begin() before the batch size is known, then the first step restarts the run: the lr it starts
    from is the user's, not the one the first start already scaled."""
    data, model, opt = _setup()
    c = Controller(opt, total_examples=4000)
    c.begin()
    level = c.decision.level
    x, y = data.tensors
    for _ in range(3):
        c.step(_one_step(model, opt, x[:32], y[:32]), batch_size=32)
    # the same level, and the third step's lr is the base schedule's for it (not a warm-up of a warm-up)
    assert c.interval == 0 and c.decision.level == pytest.approx(level)
    assert opt.param_groups[0]["lr"] == pytest.approx(c.lr_at(64, 32))
