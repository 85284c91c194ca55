"""Do no harm: runs under the controller whose weights really blow up end finite, near their best,
with the event recorded; in a plain loop, under Lightning and under Hugging Face."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from conftest import HFTinyDataset, HFTinyModel, make_tiny_task
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rlhpo.controller import Controller
from rlhpo.policy.artifact import load_artifact
from rlhpo.training.sampler import MutableBatchSampler

BLOW_UP_AT = 15  # optimizer steps before the weights are wrecked


def _wreck(params) -> None:
    with torch.no_grad():
        for p in params:
            p.mul_(1e8)  # what a far too large step does: the loss goes to ~inf, the weights stay huge


def _finite(params) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in params)


def _plain_run(art, writer=None, stop_after=None, resume_from=None, guard=None):
    task = make_tiny_task(budget=1280)
    torch.manual_seed(0)
    model = task.model_fn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xv, yv = task.val.x, task.val.y

    @torch.no_grad()
    def val() -> float:
        return float(task.loss_fn(model(xv), yv))

    policy = art if guard is None else art.with_guard(**dataclasses.asdict(guard))
    c = Controller(opt, task.budget_examples, policy=policy, model=model, val_loss_fn=val, writer=writer)
    loader = c.make_loader(TensorDataset(task.train.x, task.train.y), batch_size=16)
    if resume_from is not None:
        model.load_state_dict(resume_from["model"])
        opt.load_state_dict(resume_from["optimizer"])
        c.load_state_dict(resume_from["controller"])
    vals, steps = [], 0 if resume_from is None else resume_from["steps"]
    for x, y in c.batches(loader):
        loss = task.loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        if steps == BLOW_UP_AT:
            vals.append(val())
            _wreck(model.parameters())
        c.step(loss)
        if stop_after is not None and steps == stop_after:
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "controller": c.state_dict(), "steps": steps}
            return c, model, state
    return c, model, val


def test_plain_loop_blow_up_is_rolled_back_and_the_run_ends_finite_near_its_best(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tb"))
    c, model, val = _plain_run(load_artifact("default"), writer=writer)
    writer.close()
    assert _finite(model.parameters())
    events = [h for h in c.history if h.get("rolled_back")]
    assert events and all(h["diverged"] for h in events)
    best_before = min(h["val_loss"] for h in c.history if "val_loss" in h and h["examples"] < events[0]["examples"])
    assert val() <= 1.1 * best_before
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    assert "guard/rollback" in acc.Tags()["scalars"]  # the one tag set (rlhpo.output.TB_TAGS)


@pytest.mark.parametrize("policy", ["v2", "v3"])
def test_a_run_that_rolled_back_resumes_from_a_checkpoint_to_the_same_state(tmp_path, policy):
    """A checkpoint after a rollback resumes to the uninterrupted run's state, under the guard the
    policy was trained with (the collapse rule on). v3's resumed run used to part from the
    uninterrupted one after a second rollback; it matches since the action state saves its narrowed
    bounds (and a restored snapshot no longer shares its optimizer tensors with the training that
    follows: tests/unit/test_session.py)."""
    art = load_artifact(policy)
    guard = art.spec.guard
    full, full_model, _ = _plain_run(art, guard=guard)
    rolled = next(i for i, h in enumerate(full.history) if h.get("rolled_back"))
    stop = 60  # steps: after the rollback, before the end
    assert full.history[rolled]["examples"] < stop * 16
    _, _, state = _plain_run(art, stop_after=stop, guard=guard)
    torch.save(state, tmp_path / "ckpt.pt")
    resumed, resumed_model, _ = _plain_run(art, resume_from=torch.load(tmp_path / "ckpt.pt", weights_only=True), guard=guard)
    assert [h["lr"] for h in resumed.history] == pytest.approx([h["lr"] for h in full.history])
    for a, b in zip(resumed_model.parameters(), full_model.parameters()):
        assert torch.allclose(a, b)


def _blowing_module(pl):
    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))

        def training_step(self, batch, batch_idx):
            if self.global_step == BLOW_UP_AT:
                _wreck(self.parameters())
            x, y = batch
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-2, weight_decay=1e-4)

    return Module()


def test_lightning_run_that_blows_up_ends_finite(tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    from rlhpo.integrations.lightning import ControllerCallback

    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 4, generator=g)
    y = (x[:, 0] > 0).long()
    sampler = MutableBatchSampler(len(x), 16, generator=torch.Generator().manual_seed(0))
    cb = ControllerCallback(policy="default", total_examples=960)
    trainer = pl.Trainer(
        max_epochs=20, callbacks=[cb], logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu",
    )
    module = _blowing_module(pl)
    trainer.fit(module, DataLoader(TensorDataset(x, y), batch_sampler=sampler))
    assert _finite(module.parameters())
    assert any(h.get("rolled_back") for h in cb.controller.history)


def test_huggingface_run_that_blows_up_ends_finite(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from rlhpo.integrations.huggingface import ControllerTrainerCallback

    class Wreck(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == BLOW_UP_AT:
                _wreck(model.parameters())

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=16, max_steps=60, learning_rate=1e-2,
        weight_decay=1e-4, report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True,
    )
    model = HFTinyModel()
    cb = ControllerTrainerCallback(policy="default")
    trainer = transformers.Trainer(model=model, args=args, train_dataset=HFTinyDataset(), callbacks=[cb, Wreck()])
    trainer.train()
    assert _finite(model.parameters())
    assert any(h.get("rolled_back") for h in cb.controller.history)
    assert math.isfinite(float(np.mean([h["lr"] for h in cb.controller.history])))
