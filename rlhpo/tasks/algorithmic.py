"""A tiny transformer on generated algorithmic sequence tasks (held-out, ``dev`` group).

Each task draws distinct random integer sequences and one operation to learn position by position:
``reverse`` the sequence, ``sort`` it, its running maximum (``cummax``), or for each position how
many times that position's token occurs in the whole sequence (``count``); a random 2-10% of
target tokens (in every split) are replaced by uniform random ones, so the best loss is not zero
and losses stay comparable across methods (as ``flip_y`` in scikit-learn's generators). The model is a
pre-LayerNorm transformer encoder written out by hand (single- or multi-head self-attention,
learned positional embeddings, no dropout, so it runs under ``torch.func.vmap``). Nothing here
is shared with meta-training: no MLP sampler, no scikit-learn data.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from rlhpo.tasks.base import (
    Objective,
    Split,
    Task,
    TaskFamily,
    accuracy,
    sample_default_hparams,
    scale_init,
    sequence_cross_entropy,
)

OPERATIONS = ("reverse", "sort", "cummax", "count")
#: per-position cross-entropy (mean over every position of every sequence), token accuracy
TOKEN_CLASSIFICATION = Objective(sequence_cross_entropy, accuracy, "token_accuracy")


def _targets(seqs: np.ndarray, op: str) -> np.ndarray:
    if op == "reverse":
        return seqs[:, ::-1].copy()
    if op == "sort":
        return np.sort(seqs, axis=1)
    if op == "cummax":
        return np.maximum.accumulate(seqs, axis=1)
    if op == "count":
        return (seqs[:, :, None] == seqs[:, None, :]).sum(axis=2)
    raise ValueError(op)


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention over (..., time, dim) inputs."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *lead, t, d = x.shape
        h, dh = self.heads, d // self.heads
        q, k, v = self.qkv(x).reshape(*lead, t, 3, h, dh).unbind(dim=-3)  # each (..., t, h, dh)
        q, k, v = (z.transpose(-3, -2) for z in (q, k, v))  # (..., h, t, dh)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dh), dim=-1)
        y = (att @ v).transpose(-3, -2).reshape(*lead, t, d)
        return self.out(y)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, expansion: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, expansion * dim), nn.GELU(), nn.Linear(expansion * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.ff(self.ln2(x))


class TinyTransformer(nn.Module):
    """Token + learned position embeddings, pre-LN transformer blocks, a per-position linear head."""

    def __init__(self, vocab: int, length: int, n_out: int, dim: int, heads: int, layers: int, expansion: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(0.1 * torch.randn(length, dim))
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, expansion) for _ in range(layers))
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tok(x) + self.pos
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln(h))


class AlgorithmicSequence(TaskFamily):
    name = "algorithmic_seq"
    description = (
        "tiny transformer (hand-written self-attention + LayerNorm) learning reverse / sort / running max / "
        "token count of short random integer sequences, position by position"
    )
    novelty = "attention architecture and generated algorithmic sequence data (both never seen in meta-training)"
    data_source = "generated integer sequences (reverse/sort/cummax/count)"
    architecture = "TinyTransformer (self-attention + LayerNorm)"
    usual_batch_size = 16

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        op = OPERATIONS[int(rng.integers(len(OPERATIONS)))]
        vocab = int(rng.integers(6, 17))
        length = int(rng.integers(5, 11))
        n = int(rng.integers(3000, 6001))
        # distinct sequences, so no validation or test sequence was seen in training
        draws = np.unique(rng.integers(0, vocab, (2 * n, length)), axis=0)
        seqs = draws[rng.permutation(len(draws))[:n]]
        n = len(seqs)
        n_out = length + 1 if op == "count" else vocab
        label_noise = float(rng.uniform(0.02, 0.1))
        ys = _targets(seqs, op)
        flip = rng.random(ys.shape) < label_noise
        ys = np.where(flip, rng.integers(0, n_out, ys.shape), ys)
        n_train, n_val = int(0.7 * n), int(0.15 * n)
        x, y = torch.as_tensor(seqs, dtype=torch.long), torch.as_tensor(ys, dtype=torch.long)
        train = Split(x[:n_train], y[:n_train])
        val = Split(x[n_train : n_train + n_val], y[n_train : n_train + n_val])
        test = Split(x[n_train + n_val :], y[n_train + n_val :])
        dim = int(rng.choice([32, 48]))
        heads = int(rng.choice([1, 2, 4]))
        layers = int(rng.integers(1, 3))
        expansion = int(rng.choice([2, 4]))
        init_scale = float(10 ** rng.uniform(-0.3, 0.3))
        opt, hp = sample_default_hparams(rng, len(train))
        arch = dict(dim=dim, heads=heads, layers=layers, expansion=expansion, init_scale=init_scale)
        return self.make_task(
            seed,
            lambda: scale_init(TinyTransformer(vocab, length, n_out, dim, heads, layers, expansion), init_scale),
            (train, val, test),
            TOKEN_CLASSIFICATION,
            int(rng.integers(5000, 12001)),
            (opt, hp),
            dict(arch, operation=op, vocab=vocab, length=length, label_noise=label_noise),
            variant=op,
            eval_max_examples=512,
        )
