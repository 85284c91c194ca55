"""Held-out regression families (``dev`` group): a residual MLP with LayerNorm on the Friedman
benchmark functions, and a log-link count model (Poisson deviance loss, exponential output) on generated
counts with categorical features. Neither uses the meta-training MLP sampler or its data."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rlhpo.tasks.base import (
    REGRESSION,
    Objective,
    Task,
    TaskFamily,
    sample_default_hparams,
    scale_init,
    split_arrays,
    standardize,
)

# --------------------------------------------------------------------------- residual MLP

RES_ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU, "mish": nn.Mish}


class ResidualBlock(nn.Module):
    """Pre-LayerNorm residual block: ``x + W2 act(W1 LN(x))``."""

    def __init__(self, width: int, expansion: int, activation: str) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, expansion * width)
        self.act = RES_ACTIVATIONS[activation]()
        self.fc2 = nn.Linear(expansion * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(self.norm(x))))


class ResMLP(nn.Module):
    """Linear stem, pre-LayerNorm residual blocks, a final LayerNorm and a linear readout of the
    normalised features scaled by ``1/sqrt(width)`` (a muP-style readout multiplier: without it,
    SGD at its usual lr 0.05 diverged on half the tasks, as the readout's curvature grows with
    the width of unit-variance features)."""

    def __init__(self, n_in: int, n_out: int, width: int, blocks: int, expansion: int, activation: str) -> None:
        super().__init__()
        self.stem = nn.Linear(n_in, width)
        self.blocks = nn.Sequential(*(ResidualBlock(width, expansion, activation) for _ in range(blocks)))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(self.blocks(self.stem(x)))
        return self.head(h * h.shape[-1] ** -0.5)


def sample_resmlp_arch(rng: np.random.Generator) -> dict:
    """Keyword arguments of :class:`ResMLP` (its own generator, not ``sample_mlp_arch``)."""
    return dict(
        width=int(rng.choice([32, 64, 96])),
        blocks=int(rng.integers(1, 4)),
        expansion=int(rng.choice([1, 2])),
        activation=str(rng.choice(sorted(RES_ACTIVATIONS))),
    )


FRIEDMAN = ("friedman1", "friedman2", "friedman3")


class FriedmanResMLP(TaskFamily):
    name = "friedman_resmlp"
    description = "scikit-learn make_friedman1/2/3 regression with relative Gaussian noise, residual MLP with LayerNorm"
    novelty = "residual + LayerNorm architecture and the Friedman generators (both never seen in meta-training)"
    data_source = "sklearn.make_friedman1/2/3"
    architecture = "ResMLP (pre-LayerNorm residual blocks)"

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        from sklearn.datasets import (  # scikit-learn (the train extra): imported when a task is sampled, not with rlhpo
            make_friedman1,
            make_friedman2,
            make_friedman3,
        )

        kind = FRIEDMAN[int(rng.integers(len(FRIEDMAN)))]
        n = int(rng.integers(1000, 4001))
        state = int(rng.integers(2**31))
        if kind == "friedman1":
            x, y = make_friedman1(n_samples=n, n_features=int(rng.integers(5, 21)), noise=0.0, random_state=state)
        elif kind == "friedman2":
            x, y = make_friedman2(n_samples=n, noise=0.0, random_state=state)
        else:
            x, y = make_friedman3(n_samples=n, noise=0.0, random_state=state)
        noise = float(rng.uniform(0.0, 0.3))
        y = y + noise * y.std() * rng.standard_normal(n)
        train, val, test = split_arrays(x.astype(np.float32), y.astype(np.float32), rng)
        standardize(train, val, test)
        mu, sd = train.y.mean(), train.y.std().clamp_min(1e-6)  # target scale from training data only
        for s in (train, val, test):
            s.y = (s.y - mu) / sd
        arch = sample_resmlp_arch(rng)
        init_scale = float(10 ** rng.uniform(-0.3, 0.3))
        opt, hp = sample_default_hparams(rng, len(train))
        n_in = x.shape[1]
        return self.make_task(
            seed,
            lambda: scale_init(ResMLP(n_in, 1, **arch), init_scale),
            (train, val, test),
            REGRESSION,
            int(np.clip(rng.uniform(8, 20) * len(train), 5000, 20000)),
            (opt, hp),
            dict(arch, init_scale=init_scale, generator=kind, noise=noise, features=n_in),
            variant=kind,
        )


# --------------------------------------------------------------------------- count regression


def poisson_deviance(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean Poisson deviance of counts ``y`` given log-rates ``o``:
    ``2 (exp(o) - y o - y + y log y)``, averaged over examples.

    It is the Poisson negative log-likelihood (times 2) shifted by a constant of the data, so it
    has the same gradients, is >= 0 and is 0 for a perfect fit (as scikit-learn's
    ``mean_poisson_deviance``); the rate is ``exp(o)``, so a large step can overflow it."""
    o = output.reshape(target.shape)
    return 2.0 * torch.mean(torch.exp(o) - target * o - target + torch.xlogy(target, target))


def deviance_explained(output: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Poisson deviance / deviance of the constant mean (pseudo-R2 of a count model)."""
    mu = torch.exp(output.reshape(target.shape).double().clamp(-30.0, 30.0))
    y = target.double()

    def deviance(m: torch.Tensor) -> torch.Tensor:
        return 2.0 * torch.sum(torch.xlogy(y, y) - torch.xlogy(y, m) - (y - m))

    null = deviance(y.mean().clamp_min(1e-12).expand_as(y)).clamp_min(1e-12)
    return float(1.0 - deviance(mu) / null)


COUNT_REGRESSION = Objective(poisson_deviance, deviance_explained, "deviance_explained")
COUNT_ACTIVATIONS = {"elu": nn.ELU, "softplus": nn.Softplus}


class CountNet(nn.Module):
    """Log-link count model: numeric inputs and embedded categorical inputs, one or two hidden
    layers, a linear log-rate output (the rate is its exponential). The output bias starts at
    the log of the training mean count, as a GLM would, and the readout is scaled by
    ``1/sqrt(hidden)`` (as :class:`ResMLP`'s). The curvature of the Poisson loss grows with the
    counts, so large steps still overflow the exponential: that fragility is the point."""

    def __init__(
        self, n_num: int, cards: tuple[int, ...], emb_dim: int, hidden: int, depth: int, activation: str, log_mean: float
    ) -> None:
        super().__init__()
        self.n_num = n_num
        self.embeds = nn.ModuleList(nn.Embedding(c, emb_dim) for c in cards)
        layers: list[nn.Module] = []
        d = n_num + emb_dim * len(cards)
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), COUNT_ACTIVATIONS[activation]()]
            d = hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, 1)
        with torch.no_grad():
            self.head.bias.fill_(log_mean)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cats = x[..., self.n_num :].long()
        parts = [x[..., : self.n_num]] + [emb(cats[..., i]) for i, emb in enumerate(self.embeds)]
        h = self.body(torch.cat(parts, dim=-1))
        return self.head(h * h.shape[-1] ** -0.5).squeeze(-1)


class CountPoisson(TaskFamily):
    name = "count_poisson"
    description = (
        "generated counts (Poisson or gamma-Poisson) from numeric and categorical features with a nonlinear "
        "log-rate; embedding + MLP count model with exponential output, Poisson deviance loss"
    )
    novelty = (
        "log-link count model with categorical embeddings and a Poisson deviance loss on generated counts (never seen in meta-training)"
    )
    data_source = "generated counts (log-linear rate with categorical effects)"
    architecture = "CountNet (categorical embeddings + ELU/Softplus MLP, exp link)"

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        n = int(rng.integers(2000, 5001))
        n_num = int(rng.integers(2, 9))
        cards = tuple(int(c) for c in rng.integers(3, 25, int(rng.integers(1, 4))))
        x_num = rng.standard_normal((n, n_num))
        cats = np.stack([rng.integers(0, c, n) for c in cards], axis=1)
        log_rate = x_num @ rng.normal(0.0, 0.5 / np.sqrt(n_num), n_num)
        log_rate += float(rng.uniform(0.0, 0.6)) * np.sin(float(rng.uniform(1.0, 3.0)) * x_num[:, 0])
        log_rate += float(rng.uniform(0.0, 0.3)) * x_num[:, 0] * x_num[:, -1]
        for j, c in enumerate(cards):
            log_rate += rng.normal(0.0, float(rng.uniform(0.2, 0.8)), c)[cats[:, j]]
        mean_count = float(10 ** rng.uniform(-0.3, 0.9))  # about 0.5 to 8 events per example
        rate = np.exp(log_rate - np.log(np.mean(np.exp(log_rate))) + np.log(mean_count))
        overdispersed = bool(rng.random() < 0.5)
        if overdispersed:  # gamma-Poisson (negative binomial) counts
            shape = float(10 ** rng.uniform(0.0, 1.0))
            rate = rate * rng.gamma(shape, 1.0 / shape, n)
        y = rng.poisson(rate).astype(np.float32)
        x = np.concatenate([x_num, cats], axis=1).astype(np.float32)
        train, val, test = split_arrays(x, y, rng)
        mu, sd = train.x[:, :n_num].mean(dim=0), train.x[:, :n_num].std(dim=0).clamp_min(1e-3)
        for s in (train, val, test):  # standardise the numeric columns only; categories stay codes
            s.x = torch.cat([(s.x[:, :n_num] - mu) / sd, s.x[:, n_num:]], dim=1)
        log_mean = float(np.log(max(float(train.y.mean()), 1e-3)))
        emb_dim = int(rng.choice([4, 8]))
        hidden = int(rng.choice([32, 64]))
        depth = int(rng.integers(1, 3))
        act = str(rng.choice(sorted(COUNT_ACTIVATIONS)))
        init_scale = float(10 ** rng.uniform(-0.3, 0.3))
        opt, hp = sample_default_hparams(rng, len(train))
        return self.make_task(
            seed,
            lambda: scale_init(CountNet(n_num, cards, emb_dim, hidden, depth, act, log_mean), init_scale),
            (train, val, test),
            COUNT_REGRESSION,
            int(np.clip(rng.uniform(5, 12) * len(train), 5000, 20000)),
            (opt, hp),
            dict(
                numeric=n_num, cards=cards, emb_dim=emb_dim, hidden=hidden, depth=depth, activation=act,
                init_scale=init_scale, mean_count=mean_count, overdispersed=overdispersed,
            ),
        )
