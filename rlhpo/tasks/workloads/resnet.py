"""A residual CNN with BatchNorm (a small ResNet) classifying generated texture images: which of
ten orientation x frequency classes an image's grating belongs to, under a random phase,
contrast, a weaker distractor grating and pixel noise. SGD with momentum, its usual defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rlhpo.tasks.base import CLASSIFICATION, Task
from rlhpo.tasks.workloads.common import WorkloadFamily, contiguous_splits

N_CLASSES = 10  # 5 orientations x 2 frequencies


def textures(rng: np.random.Generator, n: int, image: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` single-channel ``image`` x ``image`` textures and their classes."""
    y = rng.integers(N_CLASSES, size=n)
    theta = (y % 5) * np.pi / 5 + rng.normal(0, 0.15, n)
    freq = np.where(y // 5 == 0, 0.14, 0.21) * rng.uniform(0.85, 1.15, n)
    u = np.arange(image, dtype=np.float64)
    yy, xx = np.meshgrid(u, u, indexing="ij")

    def grating(th: np.ndarray, f: np.ndarray, phase: np.ndarray) -> np.ndarray:
        proj = np.cos(th)[:, None, None] * xx + np.sin(th)[:, None, None] * yy
        return np.sin(2 * np.pi * f[:, None, None] * proj + phase[:, None, None])

    img = rng.uniform(0.5, 1.5, n)[:, None, None] * grating(theta, freq, rng.uniform(0, 2 * np.pi, n))
    img += rng.uniform(0.2, 0.6, n)[:, None, None] * grating(
        rng.uniform(0, np.pi, n), rng.uniform(0.08, 0.3, n), rng.uniform(0, 2 * np.pi, n)
    )
    img += rng.normal(0, 1.5, img.shape)
    return img[:, None].astype(np.float32), y.astype(np.int64)


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the (1x1 conv + BN when the shape changes) shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out),
        )  # fmt: skip
        self.short: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.short(x))


class ResNet(nn.Module):
    """A 3x3 stem, then stages of ``blocks`` basic blocks at widths w, 2w (stride 2 between
    stages), global average pooling and a linear classifier."""

    def __init__(self, width: int, blocks: int, n_classes: int = N_CLASSES) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
        c = width
        for stage, w in enumerate((width, 2 * width)):
            for b in range(blocks):
                layers.append(BasicBlock(c, w, 2 if stage > 0 and b == 0 else 1))
                c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(-2, -1)))


@dataclass(frozen=True)
class ResNetSize:
    width: int = 8
    blocks: int = 1
    image: int = 16
    train_images: int = 10000
    steps: int = 2000


class WorkloadResNet(WorkloadFamily):
    name = "workload_resnet"
    group = "workloads_final"
    description = "ResNet (BatchNorm, widths 8/16, 16x16 inputs) classifying generated grating textures, SGD + momentum"
    novelty = "a BatchNorm ResNet trained for 2,000 SGD steps on texture images (never seen in meta-training)"
    data_source = "generated oriented-grating textures with distractors and noise"
    architecture = "ResNet (BasicBlock: Conv2d + BatchNorm2d, residual)"
    optimizer = "sgd"
    usual_batch_size = 64
    SIZES = {
        "tiny": ResNetSize(width=4, blocks=1, image=8, train_images=512, steps=30),
        "default": ResNetSize(),
        "large": ResNetSize(width=64, blocks=2, image=32, train_images=50000, steps=10000),
    }

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        s = self.size
        held = max(256, s.train_images // 10)
        x, y = textures(rng, s.train_images + 2 * held, s.image)
        splits = contiguous_splits(x, y, s.train_images, held)
        return self.workload_task(seed, lambda: ResNet(s.width, s.blocks), splits, CLASSIFICATION)
