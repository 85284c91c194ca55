"""Mixed precision under the guard: a rollback restores the GradScaler's scale with the weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rlhpo
from rlhpo.training.snapshot import LoopState


def test_loop_state_snapshots_the_scaler():
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    state = LoopState(opt, model, scaler=scaler)
    snap = state.capture()
    scaler.scale(model(torch.ones(2, 3)).sum()).backward()
    scaler.step(opt)
    scaler.update(new_scale=4.0)
    assert scaler.get_scale() == 4.0
    state.restore(snap)
    assert scaler.get_scale() == 256.0


def test_a_rollback_restores_the_scale_of_the_snapshot():
    torch.manual_seed(0)
    x = torch.randn(1024, 6)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=1)  # the scale doubles every step
    ctl = rlhpo.Controller.from_pretrained(optimizer=opt, total_examples=4096, model=model, scaler=scaler)
    loader = ctl.make_loader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    scale_at_decision, checked = {}, False
    for step, (xb, yb) in enumerate(ctl.batches(loader)):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        poisoned = ctl.interval == 5 and not checked
        if ctl.step(torch.tensor(float("nan")) if poisoned else loss.detach()):
            scale_at_decision[ctl.interval] = scaler.get_scale()
            if ctl.history[-1]["rolled_back"]:
                assert ctl.interval == 6 and scaler.get_scale() == scale_at_decision[5] < 2.0**8 * 2.0 ** (step + 1)
                checked = True
    assert checked and sum(bool(h.get("rolled_back")) for h in ctl.history) == 1


def test_a_scaler_without_state_dict_is_refused():
    opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    with pytest.raises(rlhpo.ControllerError, match="scaler must be a torch.amp.GradScaler"):
        rlhpo.Controller.from_pretrained(optimizer=opt, total_examples=100, batch_size=4, scaler="not a scaler")
