"""A GRU labelling, at every step, the hidden state of a sticky hidden Markov chain from its
noisy multi-dimensional emissions: no single step gives the state away, the model must
integrate the recent past. Adam, its usual defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rlhpo.tasks.base import SEQUENCE_CLASSIFICATION, Task
from rlhpo.tasks.workloads.common import WorkloadFamily, contiguous_splits

N_STATES, N_DIMS = 5, 6


def hmm_sequences(rng: np.random.Generator, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sequences of ``length`` emissions (n, length, N_DIMS) and their hidden states (n, length).

    One chain per task: state means drawn once, a sticky transition matrix (stay 0.9-0.97)."""
    means = rng.normal(0, 1, (N_STATES, N_DIMS))
    stay = rng.uniform(0.9, 0.97, N_STATES)
    trans = rng.dirichlet(np.ones(N_STATES - 1), N_STATES) * (1 - stay)[:, None]
    full = np.zeros((N_STATES, N_STATES))
    for i in range(N_STATES):
        full[i, np.arange(N_STATES) != i] = trans[i]
        full[i, i] = stay[i]
    cum = full.cumsum(axis=1)
    states = np.empty((n, length), dtype=np.int64)
    states[:, 0] = rng.integers(N_STATES, size=n)
    u = rng.uniform(size=(n, length))
    for t in range(1, length):
        states[:, t] = np.minimum((u[:, t, None] > cum[states[:, t - 1]]).sum(axis=1), N_STATES - 1)
    x = means[states] + rng.normal(0, 1.6, (n, length, N_DIMS))
    return x.astype(np.float32), states


class GRUTagger(nn.Module):
    def __init__(self, hidden: int, layers: int) -> None:
        super().__init__()
        self.rnn = nn.GRU(N_DIMS, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, N_STATES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(x)
        return self.head(h)


@dataclass(frozen=True)
class GRUSize:
    hidden: int = 64
    layers: int = 1
    length: int = 48
    train_sequences: int = 6000
    steps: int = 2000


class WorkloadGRU(WorkloadFamily):
    name = "workload_gru"
    group = "workloads_dev"
    description = "GRU (hidden 64) tagging the hidden state of a sticky 5-state Markov chain from noisy emissions, Adam"
    novelty = "a GRU sequence tagger trained for 2,000 steps (meta-training: LSTM/RNN classifiers, ~300 steps)"
    data_source = "generated hidden Markov chains with Gaussian emissions"
    architecture = "GRUTagger (nn.GRU + linear head per step)"
    optimizer = "adam"
    usual_batch_size = 32
    SIZES = {
        "tiny": GRUSize(hidden=8, layers=1, length=12, train_sequences=256, steps=30),
        "default": GRUSize(),
        "large": GRUSize(hidden=512, layers=2, length=256, train_sequences=50000, steps=10000),
    }

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        s = self.size
        held = max(128, s.train_sequences // 8)
        x, y = hmm_sequences(rng, s.train_sequences + 2 * held, s.length)
        splits = contiguous_splits(x, y, s.train_sequences, held)
        return self.workload_task(seed, lambda: GRUTagger(s.hidden, s.layers), splits, SEQUENCE_CLASSIFICATION)
