"""An embedding + MLP model on a large generated tabular data set (60,000 rows): numeric and
categorical columns, a binary label from a random teacher with main effects, interactions
between categories and numbers, and label noise. Adam, its usual defaults, batch 256.

The categorical codes travel in the same float tensor as the numeric columns (exact integers);
the model splits them off and embeds them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rlhpo.tasks.base import CLASSIFICATION, Task
from rlhpo.tasks.workloads.common import WorkloadFamily, contiguous_splits

N_NUMERIC = 10
CARDINALITIES = (4, 12, 30, 100, 300)


def tabular_rows(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows: N_NUMERIC numeric columns (skewed and correlated), then one code per
    categorical column; binary labels from a random teacher."""
    mix = rng.normal(0, 1, (N_NUMERIC, N_NUMERIC)) / np.sqrt(N_NUMERIC)
    num = rng.normal(0, 1, (n, N_NUMERIC)) @ mix
    num[:, :3] = np.sign(num[:, :3]) * np.abs(num[:, :3]) ** 1.5  # heavy tails
    cats = np.stack([np.minimum(rng.zipf(1.6, n) - 1, c - 1) for c in CARDINALITIES], axis=1)
    w1 = rng.normal(0, 1, (N_NUMERIC, 16))
    w2 = rng.normal(0, 1, 16) / 4
    logit = np.tanh(num @ w1 / np.sqrt(N_NUMERIC)) @ w2
    for j, c in enumerate(CARDINALITIES):
        logit += rng.normal(0, 0.6, c)[cats[:, j]]
        slope = rng.normal(0, 0.5, c)
        logit += slope[cats[:, j]] * num[:, j % N_NUMERIC]  # category x number interactions
    logit += rng.normal(0, 0.5, n)
    y = (logit > np.median(logit)).astype(np.int64)
    x = np.concatenate([num, cats.astype(np.float64)], axis=1)
    return x.astype(np.float32), y


class EmbeddingMLP(nn.Module):
    """Numeric columns (standardised by the training split's statistics) concatenated with one
    embedding per categorical column, then an MLP of ``depth`` hidden ReLU layers."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, width: int, depth: int, embed: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.embeds = nn.ModuleList(nn.Embedding(c, embed) for c in CARDINALITIES)
        layers: list[nn.Module] = []
        d = N_NUMERIC + embed * len(CARDINALITIES)
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        layers.append(nn.Linear(d, 2))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        num = (x[..., :N_NUMERIC] - self.mean) / self.std
        codes = x[..., N_NUMERIC:].long()
        parts = [num] + [e(codes[..., j]) for j, e in enumerate(self.embeds)]
        return self.mlp(torch.cat(parts, dim=-1))


@dataclass(frozen=True)
class TabularSize:
    width: int = 256
    depth: int = 3
    embed: int = 8
    rows: int = 60000
    steps: int = 4000


class WorkloadTabular(WorkloadFamily):
    name = "workload_tabular"
    group = "workloads_final"
    description = "embedding + MLP (3 x 256) on 60,000 generated rows (10 numeric, 5 categorical columns), Adam, batch 256"
    novelty = "a 60k-row tabular model with categorical embeddings trained for 4,000 steps"
    data_source = "generated tabular rows (numeric + Zipf categorical, teacher with interactions)"
    architecture = "EmbeddingMLP (per-column nn.Embedding + ReLU MLP)"
    optimizer = "adam"
    usual_batch_size = 256
    SIZES = {
        "tiny": TabularSize(width=16, depth=1, embed=2, rows=2000, steps=30),
        "default": TabularSize(),
        "large": TabularSize(width=1024, depth=4, embed=32, rows=1000000, steps=10000),
    }

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        s = self.size
        x, y = tabular_rows(rng, s.rows)
        n_train, n_val = int(0.7 * s.rows), int(0.15 * s.rows)
        splits = contiguous_splits(x, y, n_train, n_val)
        mean = splits[0].x[:, :N_NUMERIC].mean(dim=0)
        std = splits[0].x[:, :N_NUMERIC].std(dim=0).clamp_min(1e-6)
        model_fn = lambda: EmbeddingMLP(mean, std, s.width, s.depth, s.embed)  # noqa: E731
        return self.workload_task(seed, model_fn, splits, CLASSIFICATION, eval_max_examples=4096)
