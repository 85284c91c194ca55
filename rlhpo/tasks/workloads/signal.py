"""A 1-D CNN classifying generated signals by waveform: sine, square, sawtooth, triangle, up- and
down-chirp, amplitude-modulated tone and noise bursts, each at a random frequency, phase and
amplitude, with additive noise and a random offset. Adam, its usual defaults, batch 100.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rlhpo.tasks.base import CLASSIFICATION, Task
from rlhpo.tasks.workloads.common import WorkloadFamily, contiguous_splits

WAVEFORMS = ("sine", "square", "sawtooth", "triangle", "chirp_up", "chirp_down", "am", "bursts")


def signals(rng: np.random.Generator, n: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` signals of ``length`` samples and their waveform classes."""
    y = rng.integers(len(WAVEFORMS), size=n)
    t = np.arange(length)[None, :] / length
    f = rng.uniform(2.0, 8.0, (n, 1))
    phase = rng.uniform(0, 1, (n, 1))
    cyc = (f * t + phase) % 1.0  # position in the cycle
    sweep = rng.uniform(3.0, 9.0, (n, 1))
    out = {
        0: np.sin(2 * np.pi * cyc),
        1: np.sign(np.sin(2 * np.pi * cyc)),
        2: 2 * cyc - 1,
        3: 4 * np.abs(cyc - 0.5) - 1,
        4: np.sin(2 * np.pi * (f * t + sweep * t**2 + phase)),
        5: np.sin(2 * np.pi * ((f + sweep) * t - sweep * t**2 + phase)),
        6: np.sin(2 * np.pi * 3 * f * t) * (0.5 + 0.5 * np.sin(2 * np.pi * cyc)),
        7: rng.normal(0, 1, (n, length)) * (np.sin(2 * np.pi * cyc) > 0.3),
    }
    x = np.zeros((n, length))
    for k, wave in out.items():
        x[y == k] = wave[y == k]
    x = x * rng.uniform(0.5, 2.0, (n, 1)) + rng.normal(0, 0.5, (n, 1)) + rng.normal(0, 0.6, (n, length))
    return x.astype(np.float32), y.astype(np.int64)


class SignalCNN(nn.Module):
    """``depth`` blocks of Conv1d (kernel 5) + ReLU + max-pool 2 (width doubling), global
    average pooling, a linear classifier."""

    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 1
        for i in range(depth):
            w = width * 2**i
            layers += [nn.Conv1d(c, w, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, len(WAVEFORMS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.unsqueeze(-2)).mean(dim=-1))


@dataclass(frozen=True)
class SignalSize:
    width: int = 16
    depth: int = 3
    length: int = 128
    train_signals: int = 20000
    steps: int = 4000


class WorkloadSignal(WorkloadFamily):
    name = "workload_signal"
    group = "workloads_dev"
    description = "1-D CNN (3 conv blocks, 16-64 channels) classifying 8 generated waveforms of 128 samples, Adam, batch 100"
    novelty = "a 1-D CNN signal classifier trained for 4,000 steps"
    data_source = "generated waveforms (sine, square, sawtooth, triangle, chirps, AM, bursts) with noise"
    architecture = "SignalCNN (Conv1d + ReLU + MaxPool1d)"
    optimizer = "adam"
    usual_batch_size = 100
    SIZES = {
        "tiny": SignalSize(width=4, depth=1, length=32, train_signals=500, steps=30),
        "default": SignalSize(),
        "large": SignalSize(width=128, depth=5, length=1024, train_signals=200000, steps=10000),
    }

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        s = self.size
        held = max(256, s.train_signals // 10)
        x, y = signals(rng, s.train_signals + 2 * held, s.length)
        splits = contiguous_splits(x, y, s.train_signals, held)
        return self.workload_task(seed, lambda: SignalCNN(s.width, s.depth), splits, CLASSIFICATION, eval_max_examples=2048)
