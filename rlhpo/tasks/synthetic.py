"""Families built from generated data: synthetic classification, teacher-student regression and
the noisy quadratic model. All three are meta-training families."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rlhpo.tasks.base import (
    CLASSIFICATION,
    LOSS_ONLY,
    REGRESSION,
    Split,
    Task,
    TaskFamily,
    make_mlp,
    sample_default_hparams,
    sample_mlp_arch,
    split_arrays,
    standardize,
)


def _budget(rng: np.random.Generator, n_train: int, lo: int = 6000, hi: int = 40000) -> int:
    epochs = rng.uniform(5, 25)
    return int(np.clip(epochs * n_train, lo, hi))


class SyntheticClassification(TaskFamily):
    name = "synthetic_classification"
    description = "scikit-learn make_classification data, MLP classifier"
    data_source = "sklearn.make_classification"
    architecture = "make_mlp"

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        from sklearn.datasets import make_classification  # scikit-learn (the train extra): imported when a task is sampled, not with rlhpo

        n = int(rng.integers(600, 3000))
        n_features = int(rng.integers(8, 65))
        n_classes = int(rng.integers(2, 11))
        n_informative = int(rng.integers(max(2, int(np.ceil(np.log2(n_classes * 2)))), n_features + 1))
        x, y = make_classification(
            n_samples=n,
            n_features=n_features,
            n_informative=n_informative,
            n_redundant=int(rng.integers(0, n_features - n_informative + 1)),
            n_classes=n_classes,
            n_clusters_per_class=1,
            class_sep=float(rng.uniform(0.5, 2.0)),
            flip_y=float(rng.uniform(0.0, 0.2)),
            random_state=int(rng.integers(2**31)),
        )
        train, val, test = split_arrays(x, y.astype(np.int64), rng)
        standardize(train, val, test)
        arch = sample_mlp_arch(rng)
        opt, hp = sample_default_hparams(rng, len(train))
        return self.make_task(
            seed,
            lambda: make_mlp(n_features, n_classes, **arch),
            (train, val, test),
            CLASSIFICATION,
            _budget(rng, len(train)),
            (opt, hp),
            dict(arch, classes=n_classes),
        )


class TeacherStudent(TaskFamily):
    name = "teacher_student"
    description = "regression onto a random MLP teacher, student MLPs of varied depth/width/activation"
    data_source = "random MLP teacher (make_mlp) on Gaussian inputs"
    architecture = "make_mlp"

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        n = int(rng.integers(1000, 4000))
        d = int(rng.integers(4, 33))
        gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
        with torch.random.fork_rng(devices=[]):  # its default init is overwritten: leave the global RNG alone
            teacher = make_mlp(d, 1, int(rng.choice([16, 32, 64])), int(rng.integers(1, 3)), "tanh")
        with torch.no_grad():
            for p in teacher.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) / max(1.0, p.shape[-1] ** 0.5) * 2.0)
            x = torch.randn(n, d, generator=gen)
            y = teacher(x).squeeze(-1)
            y = y + float(rng.uniform(0.0, 0.3)) * y.std() * torch.randn(n, generator=gen)
            y = (y - y.mean()) / y.std().clamp_min(1e-6)
        train, val, test = split_arrays(x.numpy(), y.numpy().astype(np.float32), rng)
        arch = sample_mlp_arch(rng)
        opt, hp = sample_default_hparams(rng, len(train))
        return self.make_task(
            seed,
            lambda: make_mlp(d, 1, **arch),
            (train, val, test),
            REGRESSION,
            _budget(rng, len(train)),
            (opt, hp),
            arch,
        )


class QuadraticModel(nn.Module):
    """Per-example loss 0.5 * sum_i h_i (theta_i - c_i)^2, where each example is a noise draw c."""

    def __init__(self, curvature: torch.Tensor, init: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("curvature", curvature)
        self.theta = nn.Parameter(init.clone())

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((self.theta - c) ** 2 * self.curvature).sum(dim=-1)


class NoisyQuadratic(TaskFamily):
    name = "noisy_quadratic"
    description = "noisy quadratic model (Zhang et al. 2019): ill-conditioned diagonal curvature, noisy minimum"
    data_source = "noisy quadratic draws"
    architecture = "QuadraticModel (diagonal quadratic)"

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        dim = int(rng.integers(10, 101))
        cond = 10 ** rng.uniform(1.0, 4.0)
        curvature = torch.as_tensor(np.geomspace(1.0, 1.0 / cond, dim) * rng.uniform(0.5, 2.0), dtype=torch.float32)
        noise = float(10 ** rng.uniform(-1.5, 0.0))
        init = torch.as_tensor(rng.normal(0, 10 ** rng.uniform(-0.5, 1.0), dim), dtype=torch.float32)

        def draws(n: int) -> Split:
            c = torch.as_tensor(rng.normal(0, noise, (n, dim)), dtype=torch.float32) / curvature.sqrt()
            return Split(c, torch.zeros(n))

        train, val, test = draws(4096), draws(1024), draws(1024)
        opt, hp = sample_default_hparams(rng, len(train))
        return self.make_task(
            seed,
            lambda: QuadraticModel(curvature, init),
            (train, val, test),
            LOSS_ONLY,
            int(rng.integers(8000, 40000)),
            (opt, hp),
            dict(dim=dim, condition=cond, noise=noise),
        )
