"""The Lightning and Hugging Face integrations, each on a tiny real training run."""

from __future__ import annotations

import pytest
import torch
from conftest import HFTinyDataset, HFTinyModel
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rlhpo.training.sampler import MutableBatchSampler


def _data(n=96):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    return x, (x[:, 0] > 0).long()


def _lightning_module(pl):
    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
            self.trained = 0

        def training_step(self, batch, batch_idx):
            x, y = batch
            self.trained += len(x)
            return nn.functional.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.AdamW(self.parameters(), lr=1e-2, weight_decay=1e-4)

    return Module()


def _fit(pl, policy, tmp_path, total=480, max_epochs=5):
    from rlhpo.integrations.lightning import ControllerCallback

    x, y = _data()
    sampler = MutableBatchSampler(len(x), 16, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(x, y), batch_sampler=sampler)
    cb = ControllerCallback(policy=policy, total_examples=total)
    trainer = pl.Trainer(
        max_epochs=max_epochs, callbacks=[cb], logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu",
    )
    module = _lightning_module(pl)
    trainer.fit(module, loader)
    return cb, trainer, sampler, module


def test_lightning_callback(smoke_policy, tmp_path):
    pl = pytest.importorskip("lightning.pytorch")
    cb, trainer, sampler, module = _fit(pl, smoke_policy, tmp_path)
    c = cb.controller
    assert c is not None and len(c.history) == c.spec.n_intervals  # the start, then one entry per decision
    assert 0 < trainer.optimizers[0].param_groups[0]["lr"] < 0.05 * c.history[-1]["level"]  # set every step
    assert sampler.batch_size == c.history[-1]["batch_size"]
    assert cb.state_dict()["examples_seen"] == c.examples_seen == module.trained


@pytest.mark.parametrize("shrink", [-1.0, 1.0])
def test_lightning_batch_size_control_trains_the_whole_budget(monkeypatch, tmp_path, shrink):
    """The batch shrinks (Lightning's fixed batches per epoch would stop early) or grows (the
    budget would be spent before max_epochs): either way exactly the budget is trained."""
    pl = pytest.importorskip("lightning.pytorch")
    _force_batch_action(monkeypatch, shrink)
    # the v2 policy never takes the batch below its start: the v1 policy shows the shrinking case
    cb, trainer, sampler, module = _fit(pl, "v1" if shrink < 0 else "default", tmp_path, total=960, max_epochs=10)
    c = cb.controller
    assert module.trained == c.examples_seen and 960 <= module.trained < 960 + 16
    assert (sampler.batch_size < 16) if shrink < 0 else (sampler.batch_size > 16)


def test_pytorch_lightning_distribution_is_accepted(smoke_policy, tmp_path):
    pl = pytest.importorskip("pytorch_lightning")
    cb, trainer, sampler, module = _fit(pl, smoke_policy, tmp_path)
    assert isinstance(cb, pl.Callback) and cb.controller.history and module.trained == cb.controller.examples_seen


def _force_batch_action(monkeypatch, value):
    import numpy as np

    from rlhpo.policy.artifact import load_artifact
    from rlhpo.policy.driver import PolicyDriver

    enabled = load_artifact("default").spec.action_config().enabled
    act = np.array([value if c == "batch_size" else 0.0 for c in enabled], np.float32)
    monkeypatch.setattr(PolicyDriver, "act", lambda self, obs, deterministic=True: act)


def test_huggingface_trainer_callback(smoke_policy, tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from rlhpo.integrations.huggingface import ControllerTrainerCallback

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=16, max_steps=30, learning_rate=1e-2,
        weight_decay=1e-4, report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
        lr_scheduler_type="linear", disable_tqdm=True,
    )
    cb = ControllerTrainerCallback(policy=smoke_policy)
    trainer = transformers.Trainer(model=HFTinyModel(), args=args, train_dataset=HFTinyDataset(), callbacks=[cb])
    trainer.train()
    c = cb.controller
    assert c is not None and len(c.history) == c.spec.n_intervals
    # the lr in the optimizer is the controller's (its base schedule's last step), not the linear schedule's (0)
    final_lr = trainer.optimizer.param_groups[0]["lr"]
    assert 0 < final_lr < c.history[-1]["level"]
    # the Trainer's no-decay group (biases) keeps no weight decay; the decay group is controlled
    decay, no_decay = trainer.optimizer.param_groups[:2]
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == pytest.approx(c.history[-1]["weight_decay"])
    assert all(g["lr"] == pytest.approx(final_lr) for g in trainer.optimizer.param_groups)
