"""The Controller in the loops the README does not show (issue 14): it counts what was really
trained, keeps each param group's meaning, says what it will not do, and checkpoints as plain
types."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from rlhpo.controller import Controller
from rlhpo.errors import ControllerError
from rlhpo.policy.artifact import load_artifact
from rlhpo.policy.driver import PolicyDriver

ART = None


def art():
    global ART
    if ART is None:
        ART = load_artifact("default")
    return ART


def force_actions(monkeypatch, lr=0.0, batch_size=0.0, weight_decay=0.0):
    """Every decision takes this action (1 = double, -1 = halve)."""
    full = {"lr": lr, "batch_size": batch_size, "weight_decay": weight_decay}
    enabled = art().spec.action_config().enabled
    monkeypatch.setattr(PolicyDriver, "act", lambda self, obs, deterministic=True: np.array([full[c] for c in enabled], np.float32))


def _data(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


def _train(c, model, opt, batches, **step_kwargs):
    """A user's loop; returns the examples it really trained."""
    trained = 0
    for x, y in batches:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        trained += len(x)
        c.step(loss.detach(), **({"batch": (x, y)} if step_kwargs.get("batch") else {}))
        if c.done:
            break
    return trained


def _model_opt(**opt_kwargs):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    return model, torch.optim.AdamW(model.parameters(), **({"lr": 1e-2, "weight_decay": 1e-2} | opt_kwargs))


# -- 1. counting what was really trained ---------------------------------------------------
def test_own_dataloader_is_counted_by_its_real_batches_and_batch_control_is_opt_in(monkeypatch):
    force_actions(monkeypatch, batch_size=-1.0)  # the policy wants ever smaller batches
    model, opt = _model_opt()
    c = Controller(opt, policy=art(), total_examples=1000)
    loader = DataLoader(_data(), batch_size=32, shuffle=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the user's own loader is the common case: nothing to say
        trained = _train(c, model, opt, c.batches(loader))
    assert not c.control_batch_size
    assert c.examples_seen == trained and 1000 <= trained < 1000 + 32
    assert {h["batch_size"] for h in c.history} == {32}  # the batch size really used, not the decided one


def test_asking_for_batch_control_without_a_controllable_loader_says_so_once(monkeypatch):
    model, opt = _model_opt()
    c = Controller(opt, policy=art(), total_examples=1000, control_batch_size=True)
    loader = DataLoader(_data(), batch_size=32, shuffle=True)
    with pytest.warns(UserWarning, match="its batch-size decisions are not applied") as record:
        _train(c, model, opt, c.batches(loader))
    assert sum("batch-size decisions" in str(w.message) for w in record) == 1


def test_a_step_with_no_way_to_count_is_an_error():
    model, opt = _model_opt()
    c = Controller(opt, policy=art(), total_examples=100)
    loss = model(torch.randn(8, 4)).sum()
    with pytest.raises(ControllerError, match="cannot tell how many examples this step trained"):
        c.step(loss.detach())


def test_step_counts_the_batch_it_is_given():
    model, opt = _model_opt()
    c = Controller(opt, policy=art(), total_examples=1000, control_batch_size=False)
    loader = DataLoader(_data(), batch_size=48)  # 200 rows: the last batch of each epoch is 8
    trained = 0
    while not c.done:
        trained += _train(c, model, opt, loader, batch=True)
    assert c.examples_seen == trained


def test_make_loader_with_workers_counts_exactly():
    model, opt = _model_opt()
    c = Controller(opt, policy=art(), total_examples=600)
    loader = c.make_loader(_data(100), batch_size=16, num_workers=2)
    trained = _train(c, model, opt, c.batches(loader))
    assert c.examples_seen == trained


def test_the_last_partial_batch_of_an_epoch_is_counted_at_its_size():
    model, opt = _model_opt()
    c = Controller(opt, policy=art(), total_examples=10_000)
    loader = c.make_loader(_data(50), batch_size=16)  # batches 16, 16, 16, 2
    trained = _train(c, model, opt, loader)  # iterating the loader itself, one epoch
    assert trained == 50 and c.examples_seen == 50


def test_tiny_dataset_history_records_the_clamped_batch(monkeypatch):
    force_actions(monkeypatch, batch_size=1.0)  # the policy wants ever larger batches
    model, opt = _model_opt()
    c = Controller(opt, policy=art(), total_examples=2000)
    loader = c.make_loader(_data(24), batch_size=8)
    sizes = []
    for x, y in c.batches(loader):
        sizes.append(len(x))
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        c.step(loss.detach())
    assert max(h["batch_size"] for h in c.history) == 24 and max(sizes) == 24
    assert c.examples_seen == sum(sizes)


# -- 2. each param group keeps its meaning ---------------------------------------------------
def test_param_groups_keep_their_ratio_to_the_first(monkeypatch):
    force_actions(monkeypatch, lr=0.5, weight_decay=-0.5)
    model, _ = _model_opt()
    body, head = list(model[0].parameters()), list(model[2].parameters())
    opt = torch.optim.AdamW([{"params": body, "lr": 1e-2, "weight_decay": 1e-4}, {"params": head, "lr": 1e-1, "weight_decay": 0.0}])
    c = Controller(opt, policy=art(), total_examples=400, control_batch_size=False)
    _train(c, model, opt, c.batches(DataLoader(_data(), batch_size=20)))
    g0, g1 = opt.param_groups
    assert g0["lr"] != pytest.approx(1e-2) and g1["lr"] == pytest.approx(10 * g0["lr"])
    assert g0["weight_decay"] != pytest.approx(1e-4) and g1["weight_decay"] == 0.0  # no decay stays none
    assert c.history[-1]["weight_decay"] == pytest.approx(g0["weight_decay"])
    assert g0["lr"] == pytest.approx(c.lr_at(c.examples_seen - 20, 20))  # the base schedule's last step, on the reference group


def test_weight_decay_reference_is_the_first_group_that_has_one():
    model, _ = _model_opt()
    groups = [{"params": model[0].parameters(), "weight_decay": 0.0}, {"params": model[2].parameters()}]
    opt = torch.optim.AdamW(groups, lr=1e-2, weight_decay=1e-3)
    c = Controller(opt, policy=art(), total_examples=100, batch_size=10)
    assert c.controls_weight_decay and c.hparams.weight_decay == pytest.approx(1e-3)


# -- 3. weight decay is never switched on; clipping is reported ------------------------------
def test_zero_weight_decay_stays_zero_with_one_warning():
    model, opt = _model_opt(weight_decay=0.0)
    with pytest.warns(UserWarning, match="starts with weight_decay=0: weight-decay control is off"):
        c = Controller(opt, policy=art(), total_examples=400, control_batch_size=False)
    _train(c, model, opt, c.batches(DataLoader(_data(), batch_size=20)))
    assert len(c.history) > 3 and all(g["weight_decay"] == 0.0 for g in opt.param_groups)


def test_weight_decay_control_can_be_turned_off():
    model, opt = _model_opt(weight_decay=3e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = Controller(opt, policy=art(), total_examples=400, control_batch_size=False, control_weight_decay=False)
        _train(c, model, opt, c.batches(DataLoader(_data(), batch_size=20)))
    assert opt.param_groups[0]["weight_decay"] == 3e-2


def test_clipping_of_starting_values_is_reported_once_naming_the_bound():
    model, opt = _model_opt(lr=1e-7, weight_decay=0.5)
    c = Controller(opt, policy=art(), total_examples=2000)
    c.make_loader(TensorDataset(torch.zeros(1500, 4), torch.zeros(1500, dtype=torch.long)), batch_size=1400)
    with pytest.warns(UserWarning) as record:
        c.begin()
        c.begin()
    messages = [str(w.message) for w in record if "outside what the policy was trained on" in str(w.message)]
    assert len(messages) == 1
    for part in ("lr 1e-07 is below the policy's bound lr >= 1e-06", "weight_decay 0.5 is above the policy's bound weight_decay <= 0.1",
                 "batch_size 1400 is above the policy's bound batch_size <= 1024"):
        assert part in messages[0]


# -- 5. checkpoints load with torch.load(weights_only=True) ----------------------------------
def test_state_dict_loads_with_weights_only(tmp_path):
    model, opt = _model_opt()
    c = Controller(opt, policy=art(), total_examples=400)
    loader = c.make_loader(_data(), batch_size=16)
    steps = 0
    for x, y in c.batches(loader):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        c.step(loss.detach())
        steps += 1
        if steps == 12:
            break
    torch.save({"controller": c.state_dict()}, tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)["controller"]
    fresh = Controller(opt, policy=art(), total_examples=400)
    fresh.make_loader(_data(), batch_size=16)
    fresh.load_state_dict(state)
    assert fresh.history == c.history and fresh.examples_seen == c.examples_seen
    assert fresh.hparams == c.hparams and fresh.sampler.state_dict()["pos"] == c.sampler.state_dict()["pos"]
