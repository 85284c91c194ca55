"""Shared helpers: tiny tasks so every test runs in well under a second."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import settings
from torch import nn

from rlhpo.tasks import Hyperparams, Split, Task, accuracy, mse, r2_score

torch.set_num_threads(1)
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

# Property tests draw the same examples on every run (a CI run never fails on a random draw); a
# hunt for new failures draws at random: RLHPO_HYPOTHESIS=hunt (with RLHPO_FUZZ_EXAMPLES=500 for
# the Controller fuzz). A failure a hunt finds is pinned with @example in its test.
settings.register_profile("repeatable", derandomize=True, database=None)
settings.register_profile("hunt", derandomize=False)
settings.load_profile(os.environ.get("RLHPO_HYPOTHESIS", "repeatable"))


def make_tiny_task(
    lr: float = 1e-2,
    batch_size: int = 16,
    weight_decay: float = 1e-4,
    optimizer: str = "adam",
    budget: int = 640,
    n: int = 96,
    seed: int = 0,
    regression: bool = False,
) -> Task:
    """A 2-class problem with 4 features and a one-hidden-layer MLP (or linear regression)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    third = n // 3
    if regression:
        y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
        model_fn, loss_fn, metric_fn, metric = (lambda: nn.Linear(4, 1)), mse, r2_score, "r2"
    else:
        y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
        model_fn = lambda: nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))  # noqa: E731
        loss_fn, metric_fn, metric = nn.functional.cross_entropy, accuracy, "accuracy"
    return Task(
        name=f"tiny-{seed}",
        family="tiny",
        model_fn=model_fn,
        train=Split(x[:third], y[:third]),
        val=Split(x[third : 2 * third], y[third : 2 * third]),
        test=Split(x[2 * third :], y[2 * third :]),
        loss_fn=loss_fn,
        metric_fn=metric_fn,
        metric_name=metric,
        budget_examples=budget,
        default_hparams=Hyperparams(lr, batch_size, weight_decay),
        optimizer=optimizer,  # type: ignore[arg-type]
    )


@pytest.fixture
def tiny_task() -> Task:
    return make_tiny_task()


def run_episode(env, actions=None, seed=0, options=None):
    """Run one episode; return (observations, rewards, infos)."""
    obs, info = env.reset(seed=seed, options=options)
    observations, rewards, infos = [obs], [], [info]
    t = 0
    while True:
        a = env.action_space.sample() if actions is None else actions[t % len(actions)]
        obs, r, term, trunc, info = env.step(np.asarray(a, dtype=np.float32))
        observations.append(obs)
        rewards.append(r)
        infos.append(info)
        t += 1
        if term or trunc:
            return observations, rewards, infos


def tiny_train_config(**overrides):
    """A meta-training run of a few seconds (dummy vec env, tiny budgets)."""
    from rlhpo.metatrain.config import TrainConfig

    cfg = TrainConfig(total_timesteps=128, checkpoint_every=64, eval_every=0, progress_bar=False)
    cfg.vec_env.kind, cfg.vec_env.n_envs = "dummy", 2
    cfg.ppo.n_steps, cfg.ppo.batch_size, cfg.ppo.n_epochs = 32, 32, 1
    cfg.tasks.budget_scale = 0.03
    # the four MLP-sized meta-training families: at 3% of their budget every episode still has its
    # 5 intervals (some of the newer families' tasks spend so small a budget in one or two)
    cfg.tasks.train_families = ["synthetic_classification", "teacher_student", "noisy_quadratic", "digits_mlp"]
    cfg.tasks.eval_task_seeds = [1000]
    cfg.env.n_intervals = 5
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


@pytest.fixture(scope="session")
def smoke_policy(tmp_path_factory):
    """A policy artifact from a real (tiny) meta-training run."""
    from rlhpo.train import run

    return run(tiny_train_config(), tmp_path_factory.mktemp("smoke_run"))


class HFTinyModel(nn.Module):
    """A two-class MLP with the Hugging Face Trainer's calling convention (a dict with the loss)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))

    def forward(self, x, labels=None):
        logits = self.net(x)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return {"loss": loss, "logits": logits}


class HFTinyDataset(torch.utils.data.Dataset):
    """96 examples of 4 features, label = sign of the first: items as the HF Trainer wants them."""

    def __init__(self, n: int = 96):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 4, generator=g)
        self.y = (self.x[:, 0] > 0).long()

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}


@pytest.fixture(scope="module")
def ray_instance():
    """A local Ray instance (2 CPUs) for one test module; left alone if one is already running."""
    import logging

    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield
    if started:
        ray.shutdown()
