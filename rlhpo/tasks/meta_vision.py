"""Meta-training family of 2-D convolutional networks with normalisation layers.

``shapes_conv``: generated small grey images (8x8 to 16x16) of bars, outlines, crosses, rings,
checkerboards and stripes at random positions, sizes and contrasts, on a noisy background with
a random gradient; a CNN of ``nn.Conv2d`` + ``nn.GroupNorm`` or ``nn.BatchNorm2d`` layers, plain
or residual blocks, global average pooling and a linear head. (The held-out ``series_conv`` is
1-D convolution with BatchNorm1d; the near ``digits_cnn`` has no normalisation.)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rlhpo.tasks.base import (
    CLASSIFICATION,
    Task,
    TaskFamily,
    sample_default_hparams,
    scale_init,
    standardize,
)
from rlhpo.tasks.meta_common import (
    META_ACTIVATIONS,
    epochs_budget,
    label_noise,
    sample_activation,
    tensor_splits,
)

PATTERNS = ("hbar", "vbar", "diagonal", "square", "filled_square", "cross", "ring", "checker", "stripes", "dot_pair")


def _pattern(rng: np.random.Generator, kind: str, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """One image of pattern ``kind`` in [0, 1] at a random position and scale, on the pixel
    grid ``yy, xx`` (``np.mgrid`` of the image size)."""
    size = yy.shape[0]
    cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
    r = rng.uniform(size * 0.2, size * 0.4)
    w = rng.uniform(0.6, 1.5)  # stroke half-width in pixels
    if kind == "hbar":
        return ((np.abs(yy - cy) < w) & (np.abs(xx - cx) < r)).astype(np.float32)
    if kind == "vbar":
        return ((np.abs(xx - cx) < w) & (np.abs(yy - cy) < r)).astype(np.float32)
    if kind == "diagonal":
        sign = 1.0 if rng.random() < 0.5 else -1.0
        return ((np.abs((yy - cy) - sign * (xx - cx)) < 1.4 * w) & (np.abs(xx - cx) < r)).astype(np.float32)
    if kind in ("square", "filled_square"):
        d = np.maximum(np.abs(yy - cy), np.abs(xx - cx))
        return (d < r).astype(np.float32) if kind == "filled_square" else (np.abs(d - r) < w).astype(np.float32)
    if kind == "cross":
        return (
            ((np.abs(yy - cy) < w) | (np.abs(xx - cx) < w)) & (np.maximum(np.abs(yy - cy), np.abs(xx - cx)) < r)
        ).astype(np.float32)
    if kind == "ring":
        return (np.abs(np.hypot(yy - cy, xx - cx) - r) < w).astype(np.float32)
    if kind == "checker":
        p = int(rng.integers(1, 4))
        return (((yy // p + xx // p) % 2) == 0).astype(np.float32)
    if kind == "stripes":
        period = rng.uniform(2.5, 5.0)
        a = rng.uniform(0, np.pi)
        return (np.sin(2 * np.pi * (np.cos(a) * xx + np.sin(a) * yy) / period) > 0).astype(np.float32)
    # dot_pair: two small blobs
    img = np.zeros_like(yy)
    for _ in range(2):
        py, px = rng.uniform(1, size - 1, 2)
        img += np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / (2 * w**2))
    return np.clip(img, 0, 1)


def make_pattern_images(
    rng: np.random.Generator, patterns: tuple[str, ...], n: int, size: int, noise: float
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``(n, 1, size, size)`` of the given patterns (label: the pattern's index)."""
    labels = rng.integers(0, len(patterns), n)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    imgs = np.stack([_pattern(rng, patterns[c], yy, xx) for c in labels])[:, None]
    contrast = rng.uniform(0.5, 1.5, n) * np.where(rng.random(n) < 0.8, 1.0, -1.0)
    slopes = rng.uniform(-0.5, 0.5, (n, 2)) / size  # a background gradient of up to +-0.5 across the image
    gradient = slopes[:, 0, None, None] * xx + slopes[:, 1, None, None] * yy
    imgs = contrast[:, None, None, None] * imgs + gradient[:, None] + noise * rng.standard_normal(imgs.shape)
    return imgs.astype(np.float32), labels.astype(np.int64)


def _norm(kind: str, channels: int, groups: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.GroupNorm(min(groups, channels), channels)


class ConvNormBlock(nn.Module):
    """conv-norm-act, or a residual block ``act(x + norm(conv(act(norm(conv(x))))))``."""

    def __init__(self, channels: int, norm: str, groups: int, activation: str, residual: bool) -> None:
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm1 = _norm(norm, channels, groups)
        self.act = META_ACTIVATIONS[activation]()
        if residual:
            self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
            self.norm2 = _norm(norm, channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.norm1(self.conv1(x)))
        if not self.residual:
            return h
        return self.act(x + self.norm2(self.conv2(h)))


class ConvNormNet(nn.Module):
    """Stem conv-norm-act, an optional 2x2 average-pool downsampling, ``blocks`` conv blocks,
    global average pooling, a linear head."""

    def __init__(
        self,
        n_out: int,
        channels: int,
        blocks: int,
        norm: str,
        groups: int,
        activation: str,
        residual: bool,
        downsample: bool,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(1, channels, 3, padding=1),
            _norm(norm, channels, groups),
            META_ACTIVATIONS[activation](),
        ]
        if downsample:
            layers.append(nn.AvgPool2d(2))
        layers += [ConvNormBlock(channels, norm, groups, activation, residual) for _ in range(blocks)]
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def sample_convnorm_arch(rng: np.random.Generator, size: int) -> dict:
    return dict(
        channels=int(rng.choice([6, 8, 12])),
        blocks=int(rng.integers(1, 3)),
        norm="batch" if rng.random() < 0.3 else "group",
        groups=int(rng.choice([1, 2, 4])),
        activation=sample_activation(rng, ("relu", "gelu", "silu", "selu", "prelu")),
        residual=bool(rng.random() < 0.5),
        downsample=bool(size == 16 or (size == 12 and rng.random() < 0.5)),
    )


class ShapesConv(TaskFamily):
    name = "shapes_conv"
    description = (
        "2-D CNN with GroupNorm/BatchNorm2d (plain or residual blocks) classifying generated 8x8-16x16 pattern images"
    )
    data_source = "generated pattern images (bars/outlines/crosses/rings/checkers/stripes)"
    architecture = "ConvNormNet (Conv2d + GroupNorm/BatchNorm2d, optional residual blocks, global pooling)"

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        n_classes = int(rng.integers(3, len(PATTERNS) + 1))
        patterns = tuple(PATTERNS[i] for i in sorted(rng.choice(len(PATTERNS), n_classes, replace=False)))
        size = int(rng.choice([8, 12, 16]))
        n = int(rng.integers(500, 2501))
        noise = float(rng.uniform(0.05, 0.5))
        imgs, labels = make_pattern_images(rng, patterns, n, size, noise)
        flip = float(rng.uniform(0.0, 0.05))
        labels = label_noise(labels, n_classes, flip, rng)
        train, val, test = tensor_splits(torch.as_tensor(imgs), torch.as_tensor(labels), rng)
        standardize(train, val, test, per_feature=False)
        arch = sample_convnorm_arch(rng, size)
        init_scale = float(10 ** rng.uniform(-0.3, 0.3))
        opt, hp = sample_default_hparams(rng, len(train))
        return self.make_task(
            seed,
            lambda: scale_init(ConvNormNet(n_classes, **arch), init_scale),
            (train, val, test),
            CLASSIFICATION,
            epochs_budget(rng, len(train), (1.0, 10.0), (800, 3000)),
            (opt, hp),
            dict(
                arch,
                init_scale=init_scale,
                patterns=patterns,
                size=size,
                noise=noise,
                label_noise=flip,
                classes=n_classes,
            ),
            variant=f"{size}px-{n_classes}way",
            eval_max_examples=256,
        )
