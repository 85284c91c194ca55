"""Meta-training regression families with losses beyond the mean squared error.

* ``robust_regression``: scikit-learn ``make_regression`` targets through a random nonlinearity,
  a fraction replaced by heavy-tailed outliers; a wide-and-deep network (linear + MLP branch)
  under a Huber or an L1 loss;
* ``poisson_counts``: event counts drawn from a smooth random intensity over 1-4 numeric
  inputs (Gaussian bumps plus a trend); a Fourier-feature network with a log link under the
  Poisson negative log-likelihood (with its ``log y!`` term, so it stays positive);
* ``hetero_gaussian``: a random smooth mean with input-dependent noise; a network with a mean
  and a variance head under the heteroscedastic Gaussian negative log-likelihood, which goes
  below zero once the predicted variance is small (the data's noise is well below unit variance).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from rlhpo.tasks.base import (
    Objective,
    Task,
    TaskFamily,
    sample_default_hparams,
    scale_init,
    split_arrays,
    standardize,
)
from rlhpo.tasks.meta_common import (
    epochs_budget,
    mlp_body,
    sample_activation,
    scaled_head,
    standardize_targets,
)
from rlhpo.tasks.regression import deviance_explained

# --------------------------------------------------------------------------- robust regression


def huber(delta: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The Huber loss with threshold ``delta`` (quadratic below it, linear above)."""

    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.huber_loss(output.reshape(target.shape), target, delta=delta)

    return loss


def l1(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.l1_loss(output.reshape(target.shape), target)


def neg_mae(output: torch.Tensor, target: torch.Tensor) -> float:
    return -float(torch.mean(torch.abs(output.reshape(target.shape) - target)))


class WideDeep(nn.Module):
    """A linear branch plus an MLP branch (its readout scaled by ``1/sqrt(width)``)."""

    def __init__(self, n_in: int, width: int, depth: int, activation: str) -> None:
        super().__init__()
        self.wide = nn.Linear(n_in, 1)
        self.deep, d = mlp_body(n_in, width, depth, activation)
        self.head = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.wide(x) + scaled_head(self.deep(x), self.head)).squeeze(-1)


def make_outlier_regression(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """``make_regression`` inputs, a warped target, heavy-tailed outliers on a random fraction."""
    from sklearn.datasets import make_regression  # scikit-learn (the train extra): imported when a task is sampled, not with rlhpo

    d = int(rng.integers(3, 21))
    x, y = make_regression(
        n_samples=n,
        n_features=d,
        n_informative=int(rng.integers(2, d + 1)),
        noise=float(rng.uniform(1.0, 20.0)),
        random_state=int(rng.integers(2**31)),
    )
    y = y / y.std()
    warp = str(rng.choice(["none", "sin", "cube", "abs"]))
    y = {"none": y, "sin": y + np.sin(2 * y), "cube": y + 0.3 * y**3, "abs": np.abs(y) + 0.3 * y}[warp]
    frac = float(rng.uniform(0.02, 0.2))
    out = rng.random(n) < frac
    y = np.where(out, y + float(rng.uniform(3, 15)) * rng.standard_t(2, n), y)
    return x.astype(np.float32), y.astype(np.float32), dict(features=d, warp=warp, outlier_fraction=frac)


class RobustRegression(TaskFamily):
    name = "robust_regression"
    description = (
        "make_regression with a random warp and heavy-tailed outliers; wide-and-deep network, Huber or L1 loss"
    )
    data_source = "sklearn.make_regression (warped, heavy-tailed outliers)"
    architecture = "WideDeep (linear + MLP branch)"

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        n = int(10 ** rng.uniform(np.log10(200), np.log10(3000)))
        x, y, data_info = make_outlier_regression(rng, n)
        train, val, test = split_arrays(x, y, rng)
        standardize(train, val, test)
        med = train.y.median()
        mad = (train.y - med).abs().median().clamp_min(1e-3)  # robust target scale: outliers would inflate a std
        for s in (train, val, test):
            s.y = (s.y - med) / mad
        loss_name = str(rng.choice(["huber", "l1"]))
        delta = float(10 ** rng.uniform(-0.5, 0.5))
        objective = Objective(huber(delta) if loss_name == "huber" else l1, neg_mae, "neg_mae")
        arch = dict(
            width=int(rng.choice([32, 64, 128])), depth=int(rng.integers(1, 4)), activation=sample_activation(rng)
        )
        init_scale = float(10 ** rng.uniform(-0.3, 0.3))
        opt, hp = sample_default_hparams(rng, len(train))
        n_in = x.shape[1]
        return self.make_task(
            seed,
            lambda: scale_init(WideDeep(n_in, **arch), init_scale),
            (train, val, test),
            objective,
            epochs_budget(rng, len(train), (5.0, 80.0), (2000, 10000)),
            (opt, hp),
            dict(
                arch, **data_info, init_scale=init_scale, loss=loss_name, delta=delta if loss_name == "huber" else None
            ),
            variant=loss_name,
        )


# --------------------------------------------------------------------------- Poisson counts


def poisson_nll(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The Poisson NLL of counts ``y`` given log-rates ``o``, ``exp(o) - y o + log y!`` averaged
    (``log y!`` by Stirling's formula for ``y > 1``). With the ``log y!`` term it is a true
    negative log-likelihood, so it stays > 0: only ``hetero_gaussian`` has a loss that goes
    negative."""
    return nn.functional.poisson_nll_loss(output.reshape(target.shape), target, log_input=True, full=True)


POISSON_NLL = Objective(poisson_nll, deviance_explained, "deviance_explained")


class FourierCountNet(nn.Module):
    """Learned Fourier features ``sin(W x + b)``, an MLP, a scaled linear log-rate head whose
    bias starts at the log of the training mean count."""

    def __init__(self, n_in: int, features: int, width: int, depth: int, activation: str, log_mean: float) -> None:
        super().__init__()
        self.fourier = nn.Linear(n_in, features)
        self.body, d = mlp_body(features, width, depth, activation)
        self.head = nn.Linear(d, 1)
        with torch.no_grad():
            self.head.bias.fill_(log_mean)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scaled_head(self.body(torch.sin(self.fourier(x))), self.head).squeeze(-1)


def make_intensity_counts(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Points uniform in ``[-1, 1]^d`` and Poisson counts of a log-intensity made of Gaussian
    bumps and a linear trend, scaled to a random mean count."""
    d = int(rng.integers(1, 5))
    x = rng.uniform(-1, 1, (n, d))
    log_rate = x @ rng.normal(0, 0.8, d)
    for _ in range(int(rng.integers(1, 6))):
        c, w = rng.uniform(-1, 1, d), float(rng.uniform(0.15, 0.6))
        log_rate += float(rng.normal(0, 1.5)) * np.exp(-np.sum((x - c) ** 2, axis=1) / (2 * w**2))
    mean_count = float(10 ** rng.uniform(-0.5, 1.3))  # about 0.3 to 20 events
    rate = np.exp(log_rate) * mean_count / np.mean(np.exp(log_rate))
    return x.astype(np.float32), rng.poisson(rate).astype(np.float32), dict(inputs=d, mean_count=mean_count)


class PoissonCounts(TaskFamily):
    name = "poisson_counts"
    description = (
        "counts from a random smooth intensity over 1-4 numeric inputs; Fourier-feature log-link network, Poisson NLL"
    )
    data_source = "generated counts of a smooth intensity (Gaussian bumps + trend, numeric inputs)"
    architecture = "FourierCountNet (sin features + MLP, exp link)"

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        n = int(10 ** rng.uniform(np.log10(1500), np.log10(30000)))
        x, y, data_info = make_intensity_counts(rng, n)
        train, val, test = split_arrays(x, y, rng)
        log_mean = float(np.log(max(float(train.y.mean()), 1e-3)))
        arch = dict(
            features=int(rng.choice([16, 32, 64])),
            width=int(rng.choice([32, 64])),
            depth=int(rng.integers(1, 3)),
            activation=sample_activation(rng, ("tanh", "silu", "gelu", "celu")),
        )
        init_scale = float(10 ** rng.uniform(-0.3, 0.2))
        opt, hp = sample_default_hparams(rng, len(train))
        n_in = x.shape[1]
        return self.make_task(
            seed,
            lambda: scale_init(FourierCountNet(n_in, log_mean=log_mean, **arch), init_scale),
            (train, val, test),
            POISSON_NLL,
            epochs_budget(rng, len(train), (0.3, 20.0), (2000, 10000)),
            (opt, hp),
            dict(arch, **data_info, init_scale=init_scale, n=n),
        )


# --------------------------------------------------------------------------- Gaussian NLL


def gaussian_nll(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Heteroscedastic Gaussian NLL ``0.5 (log var + (y - mean)^2 / var)``, averaged (what
    ``nn.GaussianNLLLoss`` computes, written out because that one has no ``vmap`` rule): it is
    negative whenever the fit is good and the predicted variance is below about 0.37. The log
    variance is clamped to [-12, 12]."""
    mean, log_var = output[..., 0], output[..., 1].clamp(-12.0, 12.0)
    return 0.5 * torch.mean(log_var + (target - mean) ** 2 * torch.exp(-log_var))


def neg_gaussian_nll(output: torch.Tensor, target: torch.Tensor) -> float:
    return -float(gaussian_nll(output, target))


GAUSSIAN_NLL = Objective(gaussian_nll, neg_gaussian_nll, "neg_nll")


class MeanVarianceNet(nn.Module):
    """A shared MLP trunk and two scaled linear heads: the mean and the log variance."""

    def __init__(self, n_in: int, width: int, depth: int, activation: str) -> None:
        super().__init__()
        self.trunk, d = mlp_body(n_in, width, depth, activation)
        self.mean = nn.Linear(d, 1)
        self.log_var = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.trunk(x)
        return torch.cat([scaled_head(h, self.mean), scaled_head(h, self.log_var)], dim=-1)


def make_heteroscedastic(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """A random sum of sinusoids of random projections (the mean) plus Gaussian noise whose
    scale varies smoothly with the input (from a tenth to a half of the mean's spread)."""
    d = int(rng.integers(1, 9))
    x = rng.uniform(-2, 2, (n, d))
    mean = np.zeros(n)
    for _ in range(int(rng.integers(1, 5))):
        w = rng.normal(0, 1.0 / np.sqrt(d), d)
        mean += float(rng.normal(0, 1)) * np.sin(x @ w * float(rng.uniform(0.5, 2.0)) + rng.uniform(0, 2 * np.pi))
    mean = (mean - mean.mean()) / max(mean.std(), 1e-6)
    base = float(rng.uniform(0.05, 0.35))
    scale = base * np.exp(0.7 * np.sin(x @ rng.normal(0, 1.0 / np.sqrt(d), d) + rng.uniform(0, 2 * np.pi)))
    y = mean + scale * rng.standard_normal(n)
    return x.astype(np.float32), y.astype(np.float32), dict(inputs=d, noise_base=base)


class HeteroGaussian(TaskFamily):
    name = "hetero_gaussian"
    description = (
        "smooth random mean with input-dependent noise; mean + log-variance network, Gaussian NLL (goes negative)"
    )
    data_source = "generated heteroscedastic regression (random sinusoid mean, input-dependent noise)"
    architecture = "MeanVarianceNet (MLP trunk, mean and log-variance heads)"

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        n = int(10 ** rng.uniform(np.log10(300), np.log10(6000)))
        x, y, data_info = make_heteroscedastic(rng, n)
        train, val, test = split_arrays(x, y, rng)
        standardize(train, val, test)
        standardize_targets(train, val, test)
        arch = dict(
            width=int(rng.choice([32, 64, 128])),
            depth=int(rng.integers(1, 4)),
            activation=sample_activation(rng, ("tanh", "silu", "gelu", "relu", "celu")),
        )
        init_scale = float(10 ** rng.uniform(-0.3, 0.3))
        opt, hp = sample_default_hparams(rng, len(train))
        n_in = x.shape[1]
        return self.make_task(
            seed,
            lambda: scale_init(MeanVarianceNet(n_in, **arch), init_scale),
            (train, val, test),
            GAUSSIAN_NLL,
            epochs_budget(rng, len(train), (3.0, 60.0), (2000, 10000)),
            (opt, hp),
            dict(arch, **data_info, init_scale=init_scale, n=n),
        )
