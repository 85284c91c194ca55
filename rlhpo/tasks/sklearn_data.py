"""Families on the datasets scikit-learn ships (nothing is downloaded): digits with an MLP or a
small CNN, and the bundled tabular sets (breast cancer, wine, diabetes) with MLPs."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from torch import nn

from rlhpo.tasks.base import (
    ACTIVATIONS,
    CLASSIFICATION,
    REGRESSION,
    Split,
    Task,
    TaskFamily,
    make_mlp,
    sample_default_hparams,
    sample_mlp_arch,
    scale_init,
    split_arrays,
    standardize,
)


@lru_cache(maxsize=None)
def _load(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets  # scikit-learn (the train extra): imported when a task is sampled, not with rlhpo

    loader = {
        "digits": datasets.load_digits,
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
        "diabetes": datasets.load_diabetes,
    }[name]
    bunch = loader()
    return np.asarray(bunch.data, dtype=np.float32), np.asarray(bunch.target)


def _subsample(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, lo: float) -> tuple[np.ndarray, np.ndarray]:
    """Vary dataset size: keep a random fraction in [lo, 1] of the rows."""
    keep = rng.permutation(len(x))[: int(len(x) * rng.uniform(lo, 1.0))]
    return x[keep], y[keep]


def _digits_splits(rng: np.random.Generator) -> tuple[Split, Split, Split]:
    """A random subset of the digits (40-100%), split and standardised."""
    x, y = _subsample(*_load("digits"), rng, 0.4)
    train, val, test = split_arrays(x / 16.0, y.astype(np.int64), rng)
    standardize(train, val, test, per_feature=False)
    return train, val, test


class DigitsMLP(TaskFamily):
    name = "digits_mlp"
    description = "scikit-learn digits (8x8, 10 classes) flattened, MLP classifier"
    data_source = "sklearn.load_digits"
    architecture = "make_mlp"

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        train, val, test = _digits_splits(rng)
        arch = sample_mlp_arch(rng)
        opt, hp = sample_default_hparams(rng, len(train))
        return self.make_task(
            seed,
            lambda: make_mlp(64, 10, **arch),
            (train, val, test),
            CLASSIFICATION,
            int(np.clip(rng.uniform(8, 25) * len(train), 6000, 30000)),
            (opt, hp),
            arch,
        )


class SmallCNN(nn.Module):
    def __init__(self, channels: int, hidden: int, activation: str) -> None:
        super().__init__()
        act = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}[activation]
        self.net = nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, channels, 3, padding=1),
            act(),
            nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            act(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * channels * 4, hidden),
            act(),
            nn.Linear(hidden, 10),
        )

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.net(x)


class DigitsCNN(TaskFamily):
    name = "digits_cnn"
    description = "scikit-learn digits as 1x8x8 images, two-layer CNN"
    novelty = "convolutional architecture (never seen in meta-training); the data is digits_mlp's (near transfer)"
    data_source = "sklearn.load_digits"
    architecture = "SmallCNN (Conv2d + MaxPool2d)"

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        train, val, test = _digits_splits(rng)
        channels = int(rng.choice([4, 8, 16]))
        hidden = int(rng.choice([32, 64]))
        act = str(rng.choice(ACTIVATIONS))
        init_scale = float(10 ** rng.uniform(-0.5, 0.5))
        opt, hp = sample_default_hparams(rng, len(train))
        return self.make_task(
            seed,
            lambda: scale_init(SmallCNN(channels, hidden, act), init_scale),
            (train, val, test),
            CLASSIFICATION,
            int(np.clip(rng.uniform(5, 15) * len(train), 4000, 15000)),
            (opt, hp),
            dict(channels=channels, hidden=hidden, activation=act, init_scale=init_scale),
        )


class Tabular(TaskFamily):
    name = "tabular"
    description = "scikit-learn breast cancer, wine (classification) and diabetes (regression), MLPs"
    novelty = (
        "real-world tabular datasets (never seen in meta-training), including regression on real data; "
        "the MLPs come from the meta-training architecture sampler (near transfer)"
    )
    data_source = "sklearn.load_breast_cancer/load_wine/load_diabetes"
    architecture = "make_mlp"
    DATASETS = ("breast_cancer", "wine", "diabetes")

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        dataset = self.DATASETS[int(rng.integers(len(self.DATASETS)))]
        x, y = _subsample(*_load(dataset), rng, 0.7)
        regression = dataset == "diabetes"
        if regression:
            y = ((y - y.mean()) / y.std()).astype(np.float32)
        else:
            y = y.astype(np.int64)
        train, val, test = split_arrays(x, y, rng)
        standardize(train, val, test)
        n_out = 1 if regression else int(_load(dataset)[1].max()) + 1
        arch = sample_mlp_arch(rng, widths=(16, 32, 64), depths=(1, 3))
        opt, hp = sample_default_hparams(rng, len(train))
        n_in = x.shape[1]
        return self.make_task(
            seed,
            lambda: make_mlp(n_in, n_out, **arch),
            (train, val, test),
            REGRESSION if regression else CLASSIFICATION,
            int(np.clip(rng.uniform(20, 60) * len(train), 4000, 20000)),
            (opt, hp),
            dict(arch, dataset=dataset),
            variant=dataset,
        )
