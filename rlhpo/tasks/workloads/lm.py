"""A byte-level causal transformer language model (nanoGPT-like) on Python source text of the
standard library's packages, split by package: one package is the validation text, another the
test text, the rest the training text (which ones depends on the task seed). Nothing is fetched.
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from rlhpo.tasks.base import SEQUENCE_CLASSIFICATION, Split, Task
from rlhpo.tasks.workloads.common import WorkloadFamily

VOCAB = 256  # bytes
#: standard-library packages (directories, present in CPython 3.10-3.13) whose source is the corpus
PACKAGES = (
    "asyncio", "email", "xml", "multiprocessing", "unittest", "importlib", "http", "logging",
    "urllib", "html", "concurrent", "wsgiref", "ctypes",
)  # fmt: skip
#: validation and test windows per task (evenly spread over their package's text)
HELD_WINDOWS = 512


@lru_cache(maxsize=None)
def package_bytes(package: str) -> np.ndarray:
    """The package's ``.py`` files (tests excluded), sorted by path, concatenated as bytes."""
    root = Path(sysconfig.get_paths()["stdlib"]) / package
    files = sorted(p for p in root.rglob("*.py") if p.relative_to(root).parts[0] not in ("test", "tests"))
    data = b"\n".join(p.read_bytes() for p in files)
    return np.frombuffer(data, dtype=np.uint8).astype(np.int64)


def windows(codes: np.ndarray, context: int, count: int | None = None) -> Split:
    """Windows of ``context + 1`` bytes as (input, next-byte target) pairs: every ``context``-th
    one, or ``count`` spread evenly over the text."""
    n = len(codes) - context - 1
    starts = np.arange(0, n, context) if count is None else np.linspace(0, n - 1, min(count, n)).astype(np.int64)
    t = torch.as_tensor(np.stack([codes[s : s + context + 1] for s in starts]))
    return Split(t[:, :-1].contiguous(), t[:, 1:].contiguous())


class CausalTransformer(nn.Module):
    """Token and learned position embeddings, pre-LayerNorm transformer blocks with a causal
    mask (GELU MLP 4x, no dropout), a final LayerNorm and a linear head over the bytes."""

    def __init__(self, context: int, d_model: int, n_layers: int, n_heads: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, d_model)
        self.pos = nn.Parameter(torch.randn(context, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, 4 * d_model, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, VOCAB)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[-1]
        h = self.blocks(self.tok(x) + self.pos[:t], mask=self.mask[:t, :t], is_causal=True)
        return self.head(self.norm(h))


@dataclass(frozen=True)
class LMSize:
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    context: int = 64
    steps: int = 1500


class WorkloadLM(WorkloadFamily):
    name = "workload_lm"
    group = "workloads_final"
    description = "byte-level causal transformer LM (pre-LN, d 64, 2 blocks, context 64) on stdlib package source, AdamW"
    novelty = "a transformer LM trained for 1,500 steps (meta-training runs ~300 steps of other models)"
    data_source = "stdlib package source text, bytes, split by package"
    architecture = "CausalTransformer (pre-LN nn.TransformerEncoder, causal mask)"
    optimizer = "adamw"
    usual_batch_size = 32
    SIZES = {
        "tiny": LMSize(d_model=16, n_layers=1, n_heads=2, context=16, steps=40),
        "default": LMSize(),
        "large": LMSize(d_model=384, n_layers=6, n_heads=6, context=256, steps=5000),
    }

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        s = self.size
        order = [PACKAGES[i] for i in rng.permutation(len(PACKAGES))]
        val_pkg, test_pkg, train_pkgs = order[0], order[1], sorted(order[2:])
        train = windows(np.concatenate([package_bytes(p) for p in train_pkgs]), s.context)
        val = windows(package_bytes(val_pkg), s.context, HELD_WINDOWS)
        test = windows(package_bytes(test_pkg), s.context, HELD_WINDOWS)
        return self.workload_task(
            seed,
            lambda: CausalTransformer(s.context, s.d_model, s.n_layers, s.n_heads),
            (train, val, test),
            SEQUENCE_CLASSIFICATION,
            info=dict(val_package=val_pkg, test_package=test_pkg, train_packages=tuple(train_pkgs)),
            variant=f"{val_pkg}.{test_pkg}",
            eval_max_examples=HELD_WINDOWS,
        )
