"""Meta-training families of sequence and set models.

* ``seq_recurrent``: an LSTM or a vanilla (tanh) RNN reads a generated token sequence (one-hot)
  and classifies it: its parity, its majority token, or the token it started with (recall);
* ``set_attention``: a permutation-invariant self-attention network (``nn.MultiheadAttention``,
  mean or attention pooling) classifies generated 2-D point sets by the shape they sample.

Neither shares data or an architecture generator with the held-out families (``algorithmic_seq``
writes its own attention and uses token embeddings; ``char_lm`` is a GRU on text).
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

# --------------------------------------------------------------------------- recurrent

SEQUENCE_TASKS = ("parity", "majority", "recall")


def make_token_sequences(
    rng: np.random.Generator, kind: str, n: int, length: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Tokens ``(n, length)``, labels ``(n,)`` and the vocabulary size of one sequence task."""
    if kind == "parity":
        seqs = rng.integers(0, 2, (n, length))
        return seqs, seqs.sum(axis=1) % 2, 2
    if kind == "majority":
        vocab = int(rng.integers(2, 4))
        seqs = rng.integers(0, vocab, (n, length))
        counts = (seqs[:, :, None] == np.arange(vocab)).sum(axis=1)
        return seqs, counts.argmax(axis=1), vocab  # ties go to the lowest token
    if kind == "recall":
        vocab = int(rng.integers(3, 9))
        seqs = rng.integers(0, vocab, (n, length))
        return seqs, seqs[:, 0].copy(), vocab
    raise ValueError(kind)


class RecurrentClassifier(nn.Module):
    """LSTM or tanh RNN over one-hot tokens; a linear head on the last (or mean) hidden state."""

    def __init__(self, vocab: int, n_out: int, cell: str, hidden: int, layers: int, readout: str) -> None:
        super().__init__()
        rnn = {"lstm": nn.LSTM, "rnn": nn.RNN}[cell]
        self.rnn = rnn(vocab, hidden, num_layers=layers, batch_first=True)
        self.readout = readout
        self.head = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(x)
        return self.head(h[:, -1] if self.readout == "last" else h.mean(dim=1))


def sample_recurrent_arch(rng: np.random.Generator) -> dict:
    return dict(
        cell=str(rng.choice(["lstm", "rnn"])),
        hidden=int(rng.choice([16, 32, 48])),
        layers=int(rng.integers(1, 3)),
        readout=str(rng.choice(["last", "mean"])),
    )


class RecurrentSequence(TaskFamily):
    name = "seq_recurrent"
    description = "LSTM / tanh RNN classifying generated token sequences (parity, majority token, first-token recall)"
    data_source = "generated token sequences (parity/majority/recall)"
    architecture = "RecurrentClassifier (nn.LSTM or nn.RNN on one-hot tokens)"

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        kind = SEQUENCE_TASKS[int(rng.integers(len(SEQUENCE_TASKS)))]
        length = int(rng.integers(4, 9)) if kind == "parity" else int(rng.integers(5, 15))
        n = int(rng.integers(800, 5001))
        seqs, labels, vocab = make_token_sequences(rng, kind, n, length)
        n_out = 2 if kind == "parity" else vocab
        noise = float(rng.uniform(0.0, 0.05))
        labels = label_noise(labels, n_out, noise, rng)
        x = torch.nn.functional.one_hot(torch.as_tensor(seqs), vocab).float()
        y = torch.as_tensor(labels)
        train, val, test = tensor_splits(x, y, rng)
        arch = sample_recurrent_arch(rng)
        init_scale = float(10 ** rng.uniform(-0.3, 0.2))
        opt, hp = sample_default_hparams(rng, len(train))
        return self.make_task(
            seed,
            lambda: scale_init(RecurrentClassifier(vocab, n_out, **arch), init_scale),
            (train, val, test),
            CLASSIFICATION,
            epochs_budget(rng, len(train), (1.0, 10.0), (1500, 6000)),
            (opt, hp),
            dict(arch, init_scale=init_scale, task=kind, length=length, vocab=vocab, classes=n_out, label_noise=noise),
            variant=f"{kind}-{arch['cell']}",
            eval_max_examples=512,
        )


# --------------------------------------------------------------------------- point sets

SHAPES = ("circle", "line", "square", "blob", "two_clusters", "triangle", "cross")


def _shape_points(rng: np.random.Generator, shape: str, k: int) -> np.ndarray:
    """``k`` points on (or around) a unit-size shape centred at the origin."""
    t = rng.uniform(0, 1, k)
    if shape == "circle":
        p = np.stack([np.cos(2 * np.pi * t), np.sin(2 * np.pi * t)], 1)
    elif shape == "line":
        p = np.stack([2 * t - 1, np.zeros(k)], 1)
    elif shape == "square":
        side, s = rng.integers(0, 4, k), 2 * t - 1
        p = np.where(
            (side % 2 == 0)[:, None],
            np.stack([s, np.where(side == 0, 1.0, -1.0)], 1),
            np.stack([np.where(side == 1, 1.0, -1.0), s], 1),
        )
    elif shape == "blob":
        p = rng.standard_normal((k, 2)) * 0.5
    elif shape == "two_clusters":
        p = rng.standard_normal((k, 2)) * 0.2 + np.where(rng.random(k) < 0.5, 1.0, -1.0)[:, None] * [1.0, 0.0]
    elif shape == "triangle":
        corners = np.array([[0.0, 1.0], [-0.87, -0.5], [0.87, -0.5]])
        i = rng.integers(0, 3, k)
        p = corners[i] + t[:, None] * (corners[(i + 1) % 3] - corners[i])
    else:  # cross
        s = 2 * t - 1
        p = np.where((rng.random(k) < 0.5)[:, None], np.stack([s, np.zeros(k)], 1), np.stack([np.zeros(k), s], 1))
    return p


def make_point_sets(
    rng: np.random.Generator, shapes: tuple[str, ...], n: int, k: int, jitter: float
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` sets of ``k`` 2-D points, each sampled from one of ``shapes`` (its label), randomly
    rotated, scaled, shifted and jittered."""
    labels = rng.integers(0, len(shapes), n)
    sets = np.empty((n, k, 2), dtype=np.float32)
    for i, c in enumerate(labels):
        p = _shape_points(rng, shapes[c], k)
        a = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        p = p @ rot * rng.uniform(0.5, 2.0) + rng.normal(0, 1.0, 2)
        sets[i] = p + jitter * rng.standard_normal((k, 2))
    return sets, labels.astype(np.int64)


class SetBlock(nn.Module):
    """Pre-LayerNorm set self-attention block (``nn.MultiheadAttention``) with a feed-forward part."""

    def __init__(self, dim: int, heads: int, activation: str) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), META_ACTIVATIONS[activation](), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.ff(self.ln2(x))


class SetAttentionNet(nn.Module):
    """Per-point linear embedding, set attention blocks, then mean pooling or pooling by
    attention to one learned query, a LayerNorm and a linear head."""

    def __init__(self, n_out: int, dim: int, heads: int, blocks: int, pool: str, activation: str) -> None:
        super().__init__()
        self.embed = nn.Linear(2, dim)
        self.blocks = nn.Sequential(*(SetBlock(dim, heads, activation) for _ in range(blocks)))
        self.pool = pool
        if pool == "attention":
            self.query = nn.Parameter(0.1 * torch.randn(1, 1, dim))
            self.pool_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.embed(x))
        if self.pool == "attention":
            h = self.pool_attn(self.query.expand(h.shape[0], -1, -1), h, h, need_weights=False)[0][:, 0]
        else:
            h = h.mean(dim=1)
        return self.head(self.ln(h))


def sample_set_arch(rng: np.random.Generator) -> dict:
    return dict(
        dim=int(rng.choice([16, 32])),
        heads=int(rng.choice([1, 2, 4])),
        blocks=1 if rng.random() < 0.7 else 2,
        pool=str(rng.choice(["mean", "attention"])),
        activation=sample_activation(rng, ("relu", "gelu", "silu")),
    )


class SetAttention(TaskFamily):
    name = "set_attention"
    description = "self-attention set network (nn.MultiheadAttention, mean/attention pooling) classifying generated 2-D point sets by shape"
    data_source = "generated 2-D point sets (circle/line/square/blob/clusters/triangle/cross)"
    architecture = "SetAttentionNet (nn.MultiheadAttention + LayerNorm, permutation invariant)"

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        n_classes = int(rng.integers(3, len(SHAPES) + 1))
        shapes = tuple(SHAPES[i] for i in sorted(rng.choice(len(SHAPES), n_classes, replace=False)))
        k = int(rng.integers(6, 13))
        n = int(rng.integers(600, 3001))
        jitter = float(rng.uniform(0.02, 0.3))
        sets, labels = make_point_sets(rng, shapes, n, k, jitter)
        train, val, test = tensor_splits(torch.as_tensor(sets), torch.as_tensor(labels), rng)
        standardize(train, val, test, per_feature=False)
        arch = sample_set_arch(rng)
        init_scale = float(10 ** rng.uniform(-0.3, 0.3))
        opt, hp = sample_default_hparams(rng, len(train))
        return self.make_task(
            seed,
            lambda: scale_init(SetAttentionNet(n_classes, **arch), init_scale),
            (train, val, test),
            CLASSIFICATION,
            epochs_budget(rng, len(train), (1.0, 12.0), (1000, 3000)),
            (opt, hp),
            dict(arch, init_scale=init_scale, shapes=shapes, points=k, jitter=jitter, classes=n_classes),
            variant=f"{n_classes}way",
            eval_max_examples=256,
        )
