"""Helpers shared by the broad meta-training families (``meta_*`` modules).

The activations here avoid every layer type that only the clean held-out families use (ELU,
Softplus, LeakyReLU, Hardswish, Mish): each clean family keeps a layer type that no
meta-training model has (``tests/unit/test_held_out_split.py``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rlhpo.tasks.base import Split

#: activations the ``meta_*`` architecture generators draw from
META_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "selu": nn.SELU,
    "celu": nn.CELU,
    "prelu": nn.PReLU,
}


def sample_activation(rng: np.random.Generator, names: tuple[str, ...] = tuple(META_ACTIVATIONS)) -> str:
    return str(names[int(rng.integers(len(names)))])


def epochs_budget(rng: np.random.Generator, n_train: int, epochs: tuple[float, float], clip: tuple[int, int]) -> int:
    """An example budget of a random number of epochs (log-uniform in ``epochs``), clipped to ``clip``."""
    e = float(10 ** rng.uniform(np.log10(epochs[0]), np.log10(epochs[1])))
    return int(np.clip(e * n_train, *clip))


def standardize_targets(train: Split, *others: Split) -> None:
    """Scale float targets by training-split statistics (per output column), in place."""
    mu = train.y.mean(dim=0, keepdim=True)
    sd = train.y.std(dim=0, keepdim=True).clamp_min(1e-6)
    for s in (train, *others):
        s.y = (s.y - mu) / sd


def lift(x: np.ndarray, dim: int, rng: np.random.Generator, warp: float = 0.0) -> np.ndarray:
    """Embed low-dimensional points in ``dim`` dimensions: a random linear map of the
    standardised points, an optional ``tanh`` warp of strength ``warp`` (0 = linear)."""
    z = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-6)
    proj = rng.standard_normal((z.shape[1], dim)) / np.sqrt(z.shape[1])
    h = z @ proj
    if warp > 0:
        h = (1 - warp) * h + warp * np.tanh(h)
    return h.astype(np.float32)


def tensor_splits(
    x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator, fractions: tuple[float, float] = (0.6, 0.2)
) -> tuple[Split, Split, Split]:
    """Shuffle and split tensors (of any dtype and shape) into train / val / test."""
    n = len(x)
    perm = torch.as_tensor(rng.permutation(n))
    n_train, n_val = int(n * fractions[0]), int(n * fractions[1])
    parts = (perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :])
    return tuple(Split(x[p], y[p]) for p in parts)  # type: ignore[return-value]


def label_noise(y: np.ndarray, n_classes: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Replace a fraction ``rate`` of the labels by uniform random ones (as ``flip_y``)."""
    flip = rng.random(y.shape) < rate
    return np.where(flip, rng.integers(0, n_classes, y.shape), y).astype(np.int64)


def mlp_body(n_in: int, width: int, depth: int, activation: str) -> tuple[nn.Sequential, int]:
    """``depth`` linear + activation layers of ``width`` units (none for ``depth=0``) and the
    width of their output."""
    layers: list[nn.Module] = []
    d = n_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), META_ACTIVATIONS[activation]()]
        d = width
    return nn.Sequential(*layers), d


def scaled_head(h: torch.Tensor, head: nn.Module) -> torch.Tensor:
    """A linear readout of ``h`` scaled by ``1/sqrt(width)`` (the muP-style readout multiplier
    that keeps SGD at its usual lr 0.05 stable on wide features)."""
    return head(h * h.shape[-1] ** -0.5)
