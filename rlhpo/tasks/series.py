"""Time-series forecasting with a 1-D convolutional network with BatchNorm (held-out, ``final``).

Each task generates one long series: a sum of one to four sinusoids (periods of 4 to 80 steps)
plus AR(1) noise, and asks for the next ``horizon`` values from the last ``window`` ones. The
split is chronological, with a gap between splits so no value is in the windows of two splits.
BatchNorm makes the model train-mode dependent: the batched environment falls back to one
training session per row for it, which is intended.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rlhpo.tasks.base import (
    REGRESSION,
    Split,
    Task,
    TaskFamily,
    sample_default_hparams,
    scale_init,
)

CONV_ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU}


class ConvForecaster(nn.Module):
    """Dilated Conv1d -> BatchNorm1d -> activation blocks (dilation doubling), then a linear head
    on the features of the last ``TAIL`` time steps (their receptive fields cover the recent past).

    A head on the whole flattened feature map (channels x window inputs of unit variance after
    BatchNorm) diverged from SGD's usual lr 0.05 on most tasks; ``TAIL`` positions keep the
    head's input small enough for every optimizer's usual default."""

    TAIL = 4

    def __init__(self, window: int, horizon: int, channels: int, kernel: int, blocks: int, activation: str) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 1
        for i in range(blocks):
            dilation = 2**i
            layers += [
                nn.Conv1d(c_in, channels, kernel, padding=dilation * (kernel // 2), dilation=dilation),
                nn.BatchNorm1d(channels),
                CONV_ACTIVATIONS[activation](),
            ]
            c_in = channels
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels * min(self.TAIL, window), horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.unsqueeze(-2))[..., -self.TAIL :].flatten(-2))


def generate_series(rng: np.random.Generator, length: int) -> tuple[np.ndarray, dict]:
    t = np.arange(length, dtype=np.float64)
    k = int(rng.integers(1, 5))
    periods = 10 ** rng.uniform(np.log10(4.0), np.log10(80.0), k)
    amps = rng.uniform(0.3, 1.5, k)
    phases = rng.uniform(0.0, 2 * np.pi, k)
    s = (amps[:, None] * np.sin(2 * np.pi * t[None, :] / periods[:, None] + phases[:, None])).sum(axis=0)
    phi, sigma = float(rng.uniform(0.5, 0.98)), float(rng.uniform(0.05, 0.5))
    eps = rng.normal(0.0, sigma, length)
    ar = np.empty(length)
    ar[0] = eps[0] / np.sqrt(1 - phi**2)
    for i in range(1, length):
        ar[i] = phi * ar[i - 1] + eps[i]
    return s + ar, dict(components=k, periods=[float(p) for p in periods], ar_phi=phi, ar_sigma=sigma)


class SeriesConv(TaskFamily):
    name = "series_conv"
    description = (
        "forecast the next 1-8 values of a generated series (sinusoids + AR(1) noise) from a 24-48 step window, "
        "dilated 1-D CNN with BatchNorm"
    )
    novelty = "convolution + BatchNorm architecture and generated time series (both never seen in meta-training)"
    data_source = "generated time series (sinusoids + AR(1) noise)"
    architecture = "ConvForecaster (dilated Conv1d + BatchNorm1d)"

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        window = int(rng.choice([24, 32, 48]))
        horizon = int(rng.choice([1, 4, 8]))
        n = int(rng.integers(2500, 5001))  # windows before gaps
        span = window + horizon
        series, info = generate_series(rng, n + span - 1)
        windows = np.lib.stride_tricks.sliding_window_view(series, span)  # (n, span)
        n_train, n_val = int(0.7 * n), int(0.15 * n)
        # chronological, dropping span-1 windows after each boundary: no value in two splits
        parts = ((0, n_train), (n_train + span - 1, n_train + n_val), (n_train + n_val + span - 1, n))
        train_values = series[: n_train + span - 1]
        mu, sd = float(train_values.mean()), float(train_values.std())
        splits = []
        for lo, hi in parts:
            w = torch.as_tensor((windows[lo:hi] - mu) / sd, dtype=torch.float32)
            splits.append(Split(w[:, :window].contiguous(), w[:, window:].contiguous()))
        channels = int(rng.choice([8, 16]))
        kernel = int(rng.choice([3, 5]))
        blocks = int(rng.integers(1, 4))
        act = str(rng.choice(sorted(CONV_ACTIVATIONS)))
        init_scale = float(10 ** rng.uniform(-0.3, 0.3))
        opt, hp = sample_default_hparams(rng, len(splits[0]))
        arch = dict(channels=channels, kernel=kernel, blocks=blocks, activation=act, init_scale=init_scale)
        return self.make_task(
            seed,
            lambda: scale_init(ConvForecaster(window, horizon, channels, kernel, blocks, act), init_scale),
            tuple(splits),  # type: ignore[arg-type]
            REGRESSION,
            int(np.clip(rng.uniform(3, 7) * len(splits[0]), 4000, 15000)),
            (opt, hp),
            dict(arch, **info, window=window, horizon=horizon),
            variant=f"h{horizon}",
        )
