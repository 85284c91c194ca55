"""Meta-training families on generated tabular and manifold data.

* ``toy_lnresnet``: scikit-learn's 2-D toy classification generators (moons, circles, Gaussian
  quantiles, blobs) lifted into 4-32 dimensions, with extra noise dimensions; a residual network
  with LayerNorm (pre- or post-norm, one- or two-layer branches, scaled residual branches);
* ``categorical_fm``: records of 3-8 categorical fields whose class (20-50 classes) comes from
  per-field effects and one pairwise interaction; a factorisation machine with a deep part
  (DeepFM) over field embeddings, 5k-30k records;
* ``manifold_ae``: scikit-learn's swiss roll / S-curve (or a generated helix) embedded in 8-32
  dimensions; a denoising autoencoder with a 2-4 unit bottleneck, reconstruction MSE.

``categorical_fm`` embeds each field by a linear map of its one-hot code (the same
computation as an embedding lookup), not ``nn.Embedding``: ``nn.Embedding`` is the one layer
type that tells the held-out ``code_bow`` (its mean-bag + linear variant) apart from
meta-training models, so meta-training must not use it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rlhpo.tasks.base import (
    CLASSIFICATION,
    REGRESSION,
    Task,
    TaskFamily,
    sample_default_hparams,
    scale_init,
    split_arrays,
    standardize,
)
from rlhpo.tasks.meta_common import (
    META_ACTIVATIONS,
    epochs_budget,
    label_noise,
    lift,
    mlp_body,
    sample_activation,
    scaled_head,
    tensor_splits,
)

# --------------------------------------------------------------------------- residual net + LayerNorm

TOY_DATA = ("moons", "circles", "quantiles", "blobs")


def make_toy_classification(rng: np.random.Generator, kind: str, n: int) -> tuple[np.ndarray, np.ndarray, int]:
    """2-D (or 2-4-D for quantiles and blobs) toy classification data and its class count."""
    # scikit-learn (the train extra): imported when a task is sampled, not with rlhpo
    from sklearn.datasets import (
        make_blobs,
        make_circles,
        make_gaussian_quantiles,
        make_moons,
    )

    state = int(rng.integers(2**31))
    if kind == "moons":
        x, y = make_moons(n, noise=float(rng.uniform(0.05, 0.3)), random_state=state)
        return x, y, 2
    if kind == "circles":
        x, y = make_circles(
            n, noise=float(rng.uniform(0.02, 0.15)), factor=float(rng.uniform(0.3, 0.8)), random_state=state
        )
        return x, y, 2
    if kind == "quantiles":
        k = int(rng.integers(2, 4))
        x, y = make_gaussian_quantiles(n_samples=n, n_features=int(rng.integers(2, 5)), n_classes=k, random_state=state)
        return x, y, k
    k = int(rng.integers(3, 9))
    x, y = make_blobs(
        n, n_features=int(rng.integers(2, 5)), centers=k, cluster_std=float(rng.uniform(0.8, 3.0)), random_state=state
    )
    return x, y, k


class LNResBlock(nn.Module):
    """``x + s f(LN(x))`` (pre-norm) or ``LN(x + s f(x))`` (post-norm); ``f`` is one or two linear
    layers with an activation, ``s`` a fixed branch scale."""

    def __init__(self, width: int, activation: str, post_norm: bool, two_layer: bool, branch_scale: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        layers: list[nn.Module] = [nn.Linear(width, width), META_ACTIVATIONS[activation]()]
        if two_layer:
            layers.append(nn.Linear(width, width))
        self.branch = nn.Sequential(*layers)
        self.post_norm, self.branch_scale = post_norm, branch_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.post_norm:
            return self.norm(x + self.branch_scale * self.branch(x))
        return x + self.branch_scale * self.branch(self.norm(x))


class LNResNet(nn.Module):
    def __init__(
        self, n_in: int, n_out: int, width: int, blocks: int, activation: str, post_norm: bool, two_layer: bool
    ) -> None:
        super().__init__()
        self.stem = nn.Linear(n_in, width)
        scale = blocks**-0.5
        self.blocks = nn.Sequential(
            *(LNResBlock(width, activation, post_norm, two_layer, scale) for _ in range(blocks))
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return scaled_head(self.norm(self.blocks(self.stem(x))), self.head)


def sample_lnresnet_arch(rng: np.random.Generator) -> dict:
    return dict(
        width=int(rng.choice([32, 64, 128])),
        blocks=int(rng.integers(2, 7)),
        activation=sample_activation(rng),
        post_norm=bool(rng.random() < 0.5),
        two_layer=bool(rng.random() < 0.5),
    )


class ToyLNResNet(TaskFamily):
    name = "toy_lnresnet"
    description = "sklearn moons/circles/Gaussian quantiles/blobs lifted into 4-32 dims; residual net with LayerNorm (pre/post-norm)"
    data_source = "sklearn.make_moons/make_circles/make_gaussian_quantiles/make_blobs, lifted"
    architecture = "LNResNet (residual blocks, pre- or post-LayerNorm, scaled branches)"

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        kind = TOY_DATA[int(rng.integers(len(TOY_DATA)))]
        n = int(10 ** rng.uniform(np.log10(400), np.log10(8000)))
        x, y, n_classes = make_toy_classification(rng, kind, n)
        dim = int(rng.integers(4, 33))
        warp = float(rng.uniform(0.0, 0.8))
        noise_dims = rng.standard_normal((n, int(rng.integers(0, 9))))
        x = np.concatenate([lift(x, dim, rng, warp), noise_dims], axis=1)
        flip = float(rng.uniform(0.0, 0.1))
        train, val, test = split_arrays(x, label_noise(y, n_classes, flip, rng), rng)
        standardize(train, val, test)
        arch = sample_lnresnet_arch(rng)
        opt, hp = sample_default_hparams(rng, len(train))
        n_in = x.shape[1]
        return self.make_task(
            seed,
            lambda: LNResNet(n_in, n_classes, **arch),
            (train, val, test),
            CLASSIFICATION,
            epochs_budget(rng, len(train), (2.0, 30.0), (1500, 8000)),
            (opt, hp),
            dict(arch, data=kind, inputs=n_in, warp=warp, label_noise=flip, classes=n_classes, n=n),
            variant=kind,
        )


# --------------------------------------------------------------------------- categorical DeepFM


def make_categorical_records(
    rng: np.random.Generator, n: int, cards: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``(n, fields)`` and classes drawn from ``softmax(effects / temperature)``: a random
    effect per (field, value, class) plus one pairwise (field, field) interaction table."""
    codes = np.stack([rng.integers(0, c, n) for c in cards], axis=1)
    logits = np.zeros((n, n_classes))
    for f, c in enumerate(cards):
        logits += rng.normal(0, float(rng.uniform(0.5, 1.5)), (c, n_classes))[codes[:, f]]
    a, b = rng.choice(len(cards), 2, replace=False)
    logits += rng.normal(0, 1.5, (cards[a], cards[b], n_classes))[codes[:, a], codes[:, b]]
    logits /= float(rng.uniform(0.3, 1.0))  # temperature: how deterministic the classes are
    g = rng.gumbel(size=logits.shape)
    return codes.astype(np.int64), (logits + g).argmax(axis=1).astype(np.int64)


class DeepFM(nn.Module):
    """Field embeddings (a bias-free linear map of each field's one-hot code), a first-order
    term, the factorisation-machine pairwise term and an MLP over the concatenated embeddings."""

    def __init__(self, cards: tuple[int, ...], n_out: int, dim: int, width: int, depth: int, activation: str) -> None:
        super().__init__()
        self.register_buffer("offsets", torch.as_tensor(np.concatenate([[0], np.cumsum(cards)[:-1]]), dtype=torch.long))
        self.total = int(sum(cards))
        self.embed = nn.Linear(self.total, dim, bias=False)
        self.first = nn.Linear(self.total, n_out)
        self.deep, d = mlp_body(dim * len(cards), width, depth, activation)
        self.head = nn.Linear(d + dim, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        onehot = nn.functional.one_hot(x + self.offsets, self.total).float()  # (batch, fields, total)
        v = self.embed(onehot)  # (batch, fields, dim)
        pairwise = 0.5 * (v.sum(dim=-2) ** 2 - (v**2).sum(dim=-2))
        h = torch.cat([self.deep(v.flatten(-2)), pairwise], dim=-1)
        return self.first(onehot.sum(dim=-2)) + scaled_head(h, self.head)


class CategoricalFM(TaskFamily):
    name = "categorical_fm"
    description = (
        "generated categorical records (3-8 fields, 20-50 classes from field effects + one interaction); DeepFM"
    )
    data_source = "generated categorical records (field effects + pairwise interaction, 20-50 classes)"
    architecture = "DeepFM (one-hot field embeddings, FM pairwise term + MLP)"

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        n = int(10 ** rng.uniform(np.log10(5000), np.log10(30000)))
        cards = rng.integers(3, 25, int(rng.integers(3, 9)))
        n_classes = int(rng.integers(20, 51))
        codes, labels = make_categorical_records(rng, n, cards, n_classes)
        train, val, test = tensor_splits(torch.as_tensor(codes), torch.as_tensor(labels), rng)
        cards_t = tuple(int(c) for c in cards)
        arch = dict(
            dim=int(rng.choice([4, 8, 16])),
            width=int(rng.choice([64, 128])),
            depth=int(rng.integers(1, 3)),
            activation=sample_activation(rng, ("relu", "gelu", "silu", "prelu")),
        )
        init_scale = float(10 ** rng.uniform(-0.3, 0.3))
        opt, hp = sample_default_hparams(rng, len(train))
        return self.make_task(
            seed,
            lambda: scale_init(DeepFM(cards_t, n_classes, **arch), init_scale),
            (train, val, test),
            CLASSIFICATION,
            epochs_budget(rng, len(train), (0.3, 3.0), (3000, 12000)),
            (opt, hp),
            dict(arch, init_scale=init_scale, cards=cards_t, classes=n_classes, n=n),
            variant=f"{n_classes}way",
        )


# --------------------------------------------------------------------------- manifold autoencoder


def make_manifold(rng: np.random.Generator, kind: str, n: int) -> np.ndarray:
    """``n`` points of a 3-D manifold: swiss roll, S-curve or a helix (generated here)."""
    # scikit-learn (the train extra): imported when a task is sampled, not with rlhpo
    from sklearn.datasets import (
        make_s_curve,
        make_swiss_roll,
    )

    state = int(rng.integers(2**31))
    if kind == "swiss_roll":
        return make_swiss_roll(n, noise=0.0, random_state=state)[0]
    if kind == "s_curve":
        return make_s_curve(n, noise=0.0, random_state=state)[0]
    t = rng.uniform(0, float(rng.uniform(2, 6)) * np.pi, n)
    return np.stack([np.cos(t), np.sin(t), 0.15 * t], axis=1)


class AutoEncoder(nn.Module):
    """MLP encoder to a ``bottleneck``-unit code, a mirrored decoder."""

    def __init__(self, n_in: int, width: int, depth: int, bottleneck: int, activation: str) -> None:
        super().__init__()
        act = META_ACTIVATIONS[activation]
        widths = [width // 2**i for i in range(depth)]
        enc: list[nn.Module] = []
        dec: list[nn.Module] = []
        d = n_in
        for w in widths:
            enc += [nn.Linear(d, w), act()]
            d = w
        enc.append(nn.Linear(d, bottleneck))
        d = bottleneck
        for w in reversed(widths):
            dec += [nn.Linear(d, w), act()]
            d = w
        dec.append(nn.Linear(d, n_in))
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class ManifoldAutoencoder(TaskFamily):
    name = "manifold_ae"
    description = "swiss roll / S-curve / helix embedded in 8-32 dims; denoising MLP autoencoder (2-4 unit code), reconstruction MSE"
    data_source = "sklearn.make_swiss_roll/make_s_curve, generated helix, embedded in 8-32 dims"
    architecture = "AutoEncoder (MLP encoder, 2-4 unit bottleneck, mirrored decoder)"

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        kind = str(rng.choice(["swiss_roll", "s_curve", "helix"]))
        n = int(10 ** rng.uniform(np.log10(500), np.log10(6000)))
        dim = int(rng.integers(8, 33))
        warp = float(rng.uniform(0.0, 0.8))
        clean = lift(make_manifold(rng, kind, n), dim, rng, warp)
        clean = (clean - clean.mean(axis=0)) / np.maximum(clean.std(axis=0), 1e-6)
        noise = float(rng.uniform(0.0, 0.3))
        x = clean + noise * rng.standard_normal(clean.shape).astype(np.float32)
        train, val, test = split_arrays(x, clean, rng)
        arch = dict(
            width=int(rng.choice([32, 64, 128])),
            depth=int(rng.integers(1, 3)),
            bottleneck=int(rng.integers(2, 5)),
            activation=sample_activation(rng, ("tanh", "silu", "gelu", "celu", "selu")),
        )
        init_scale = float(10 ** rng.uniform(-0.3, 0.3))
        opt, hp = sample_default_hparams(rng, len(train))
        return self.make_task(
            seed,
            lambda: scale_init(AutoEncoder(dim, **arch), init_scale),
            (train, val, test),
            REGRESSION,
            epochs_budget(rng, len(train), (2.0, 40.0), (2000, 12000)),
            (opt, hp),
            dict(arch, init_scale=init_scale, manifold=kind, dim=dim, warp=warp, input_noise=noise, n=n),
            variant=kind,
        )
