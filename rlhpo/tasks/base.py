"""Tasks and task families: what a controller is asked to train.

A :class:`Task` is one training problem. It knows nothing of reinforcement learning: the
training session (:mod:`rlhpo.training.session`) trains it, the environment wraps that session.
A :class:`TaskFamily` samples tasks from a seed so meta-training sees thousands of them.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from rlhpo.errors import TaskError
from rlhpo.types import OPTIMIZERS, SENSIBLE_STARTS, START_REGIMES, Hyperparams, OptimizerName, Split


def accuracy(output: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of correct arg-max predictions (for sequence outputs, over all positions)."""
    pred = output.argmax(dim=-1)
    return float((pred == target).float().mean())


def r2_score(output: torch.Tensor, target: torch.Tensor) -> float:
    """Coefficient of determination of a regression output."""
    out = output.reshape(target.shape)
    ss_res = torch.sum((target - out) ** 2)
    ss_tot = torch.sum((target - target.mean(dim=0)) ** 2).clamp_min(1e-12)
    return float(1.0 - ss_res / ss_tot)


def negative_loss(output: torch.Tensor, target: torch.Tensor) -> float:
    """Metric for tasks whose only quality measure is the loss itself (higher is better)."""
    return -float(output.mean())


def sequence_cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over (batch, time, vocab) logits and (batch, time) targets."""
    return nn.functional.cross_entropy(output.reshape(-1, output.shape[-1]), target.reshape(-1))


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(output.reshape(target.shape), target)


def mean_output(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Loss for models that compute their own per-example loss (the noisy quadratic)."""
    return output.mean()


@dataclass(frozen=True)
class Objective:
    """What a task minimises and reports: its loss, its metric (higher is better) and the metric's name."""

    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metric_fn: Callable[[torch.Tensor, torch.Tensor], float]
    metric_name: str


CLASSIFICATION = Objective(nn.functional.cross_entropy, accuracy, "accuracy")
REGRESSION = Objective(mse, r2_score, "r2")
LOSS_ONLY = Objective(mean_output, negative_loss, "neg_loss")
SEQUENCE_CLASSIFICATION = Objective(sequence_cross_entropy, accuracy, "char_accuracy")


@dataclass
class Task:
    """One training problem.

    :param name: a readable identifier, unique within a family for a given seed
    :param family: the family that sampled it ("custom" for a user's own task)
    :param model_fn: builds a fresh model; called with the global torch seed already fixed
    :param train: training split
    :param val: validation split: the only split a reward, a tuner or early stopping may see
    :param test: test split: used for reported results only
    :param loss_fn: ``loss_fn(model(x), y)`` -> scalar tensor
    :param metric_fn: ``metric_fn(model(x), y)`` -> float, higher is better
    :param metric_name: what ``metric_fn`` measures
    :param budget_examples: training examples one run may use (a larger batch buys no more)
    :param default_hparams: the starting hyperparameters (what a user would run as a constant)
    :param optimizer: ``"sgd"`` (momentum 0.9), ``"adam"`` or ``"adamw"``
    :param eval_max_examples: evaluate losses on at most this many examples of a split
    :param info: what the family sampled (architecture, dataset, ...), for reports
    :param usual_batch_size: the batch size a user would pick for this kind of task without
        tuning (the ``"sensible"`` start of :meth:`with_start` uses it, capped at the training size)
    """

    name: str
    family: str
    model_fn: Callable[[], nn.Module]
    train: Split
    val: Split
    test: Split
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    metric_fn: Callable[[torch.Tensor, torch.Tensor], float]
    metric_name: str
    budget_examples: int
    default_hparams: Hyperparams
    optimizer: OptimizerName = "adam"
    eval_max_examples: int = 1024
    info: dict = field(default_factory=dict)
    usual_batch_size: int = 32

    def validate(self) -> "Task":
        """Check the task is well-formed; raise :class:`TaskError` naming the task otherwise."""
        where = f"task {self.name!r}"
        for split_name in ("train", "val", "test"):
            split = getattr(self, split_name)
            if not isinstance(split, Split):
                raise TaskError(f"{where}: {split_name} must be an rlhpo.tasks.Split, got {type(split).__name__}")
            for part in ("x", "y"):
                t = getattr(split, part)
                if not isinstance(t, torch.Tensor):
                    raise TaskError(
                        f"{where}: {split_name}.{part} must be a torch.Tensor, got {type(t).__name__} "
                        "(convert with torch.as_tensor)"
                    )
                if t.dim() == 0:
                    raise TaskError(f"{where}: {split_name}.{part} must have a first dimension of examples, got a scalar")
            if len(split) == 0:
                raise TaskError(f"{where}: the {split_name} split is empty")
            if split.x.shape[0] != split.y.shape[0]:
                raise TaskError(
                    f"{where}: {split_name}.x has {split.x.shape[0]} rows but {split_name}.y has {split.y.shape[0]}"
                )
            for part in ("x", "y"):
                t = getattr(split, part)
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    n_bad = int((~torch.isfinite(t)).sum())
                    raise TaskError(f"{where}: {split_name}.{part} has {n_bad} non-finite values (NaN or inf)")
            if split_name != "train":
                for part in ("x", "y"):
                    a, b = getattr(self.train, part), getattr(split, part)
                    if a.shape[1:] != b.shape[1:]:
                        raise TaskError(
                            f"{where}: {split_name}.{part} has examples of shape {tuple(b.shape[1:])} but "
                            f"train.{part} has {tuple(a.shape[1:])}"
                        )
        if not isinstance(self.budget_examples, (int, np.integer)) or isinstance(self.budget_examples, bool) or self.budget_examples <= 0:
            raise TaskError(f"{where}: budget_examples must be an integer > 0, got {self.budget_examples!r}")
        if not isinstance(self.eval_max_examples, (int, np.integer)) or self.eval_max_examples < 1:
            raise TaskError(f"{where}: eval_max_examples must be an integer >= 1, got {self.eval_max_examples!r}")
        if self.optimizer not in OPTIMIZERS:
            raise TaskError(f"{where}: optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        ubs = self.usual_batch_size
        if not isinstance(ubs, (int, np.integer)) or isinstance(ubs, bool) or ubs < 1:
            raise TaskError(f"{where}: usual_batch_size must be an integer >= 1, got {ubs!r}")
        for fn in ("model_fn", "loss_fn", "metric_fn"):
            if not callable(getattr(self, fn)):
                raise TaskError(f"{where}: {fn} must be callable, got {type(getattr(self, fn)).__name__}")
        if not isinstance(self.default_hparams, Hyperparams):
            raise TaskError(
                f"{where}: default_hparams must be an rlhpo.tasks.Hyperparams, got {type(self.default_hparams).__name__}"
            )
        self.default_hparams.validate(f"{where}: default_hparams")
        return self

    def with_budget(self, budget_examples: int) -> "Task":
        return replace(self, budget_examples=int(budget_examples))

    def sensible_hparams(self) -> Hyperparams:
        """The task's optimizer at its usual default (:data:`SENSIBLE_STARTS`) and the task's
        usual batch size (at most the training-set size)."""
        lr, wd = SENSIBLE_STARTS[self.optimizer]
        return Hyperparams(lr=lr, batch_size=int(min(self.usual_batch_size, len(self.train))), weight_decay=wd)

    def with_start(self, regime: str) -> "Task":
        """A copy of this task started from ``regime``'s hyperparameters.

        ``"sensible"``: :meth:`sensible_hparams` (same optimizer, its usual lr and weight decay,
        the usual batch size); ``"random"``: the family's sampled start, unchanged. The copy shares
        the data tensors and ``model_fn``; its ``info`` is a new dict with ``start=regime`` added.
        """
        if regime not in START_REGIMES:
            raise TaskError(f"start regime must be one of {START_REGIMES}, got {regime!r}")
        hp = self.sensible_hparams() if regime == "sensible" else self.default_hparams
        return replace(self, default_hparams=hp, info={**self.info, "start": regime})


class TaskFamily:
    """Samples tasks from a seed. Subclasses set ``name`` and implement :meth:`sample`.

    ``budget_scale`` multiplies every sampled task's example budget (tests use tiny budgets).
    """

    name: str = "family"
    description: str = ""
    #: what is new in this family relative to the meta-training families (held-out ones only)
    novelty: str = ""
    #: where the data comes from, e.g. "sklearn.load_digits" (two families with the same string
    #: share data; the held-out ``dev``/``final`` groups use none of the meta-training ones)
    data_source: str = ""
    #: the architecture generator, e.g. "make_mlp" (same rule as ``data_source``)
    architecture: str = ""
    #: the batch size a user would pick for this family's tasks (:attr:`Task.usual_batch_size`)
    usual_batch_size: int = 32

    def __init__(self, budget_scale: float = 1.0) -> None:
        if not (budget_scale > 0 and math.isfinite(budget_scale)):
            raise TaskError(f"budget_scale must be a finite number > 0, got {budget_scale!r}")
        self.budget_scale = float(budget_scale)

    def sample(self, seed: int) -> Task:
        # crc32, not hash(): str hashes change between processes and seeds must not
        rng = np.random.default_rng([zlib.crc32(self.name.encode()), int(seed)])
        task = self._sample(rng, int(seed))
        task.budget_examples = max(64, int(round(task.budget_examples * self.budget_scale)))
        return task.validate()

    def _sample(self, rng: np.random.Generator, seed: int) -> Task:
        raise NotImplementedError

    def make_task(
        self,
        seed: int,
        model_fn: Callable[[], nn.Module],
        splits: tuple[Split, Split, Split],
        objective: "Objective",
        budget_examples: int,
        start: tuple[OptimizerName, Hyperparams],
        info: dict,
        variant: str = "",
        **extra: Any,
    ) -> Task:
        """A task of this family: named ``<family>[-<variant>]-<seed>``, trained from ``start``
        (the optimizer and its starting hyperparameters)."""
        optimizer, hparams = start
        train, val, test = splits
        extra.setdefault("usual_batch_size", self.usual_batch_size)
        return Task(
            name=f"{self.name}-{variant}-{seed}" if variant else f"{self.name}-{seed}",
            family=self.name,
            model_fn=model_fn,
            train=train,
            val=val,
            test=test,
            loss_fn=objective.loss_fn,
            metric_fn=objective.metric_fn,
            metric_name=objective.metric_name,
            budget_examples=int(budget_examples),
            default_hparams=hparams,
            optimizer=optimizer,
            info=info,
            **extra,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(budget_scale={self.budget_scale})"


def sample_optimizer_and_lr(rng: np.random.Generator) -> tuple[OptimizerName, float]:
    """A random optimizer and a starting lr spread over four orders of magnitude.

    The range is centred on each optimizer's usual scale so that some starts are good, some far
    too small and some far too large: a controller must learn to recover from a bad start.
    """
    opt: OptimizerName = OPTIMIZERS[int(rng.integers(len(OPTIMIZERS)))]  # type: ignore[assignment]
    if opt == "sgd":
        lr = float(10 ** rng.uniform(-4.0, 0.0))
    else:
        lr = float(10 ** rng.uniform(-5.0, -1.0))
    return opt, lr


def sample_default_hparams(rng: np.random.Generator, n_train: int) -> tuple[OptimizerName, Hyperparams]:
    opt, lr = sample_optimizer_and_lr(rng)
    bs = int(rng.choice([16, 32, 64, 128]))
    bs = max(1, min(bs, n_train))
    wd = float(10 ** rng.uniform(-5.0, -2.0))
    return opt, Hyperparams(lr=lr, batch_size=bs, weight_decay=wd)


def split_arrays(
    x: np.ndarray, y: np.ndarray, rng: np.random.Generator, fractions: tuple[float, float] = (0.6, 0.2)
) -> tuple[Split, Split, Split]:
    """Shuffle and split arrays into train / val / test tensors."""
    n = len(x)
    perm = rng.permutation(n)
    n_train = int(n * fractions[0])
    n_val = int(n * fractions[1])
    parts = (perm[:n_train], perm[n_train : n_train + n_val], perm[n_train + n_val :])
    y_dtype = torch.long if np.issubdtype(y.dtype, np.integer) else torch.float32
    return tuple(  # type: ignore[return-value]
        Split(torch.as_tensor(x[p], dtype=torch.float32), torch.as_tensor(y[p], dtype=y_dtype)) for p in parts
    )


def standardize(train: Split, *others: Split, per_feature: bool = True) -> None:
    """Scale inputs by training-split statistics, in place (no leakage from val/test).

    ``per_feature=False`` uses one mean and std for all inputs: right for images, whose rarely
    lit border pixels would otherwise be divided by a near-zero std and blow up elsewhere.
    """
    if per_feature:
        mean = train.x.mean(dim=0, keepdim=True)
        std = train.x.std(dim=0, keepdim=True)
        std = torch.where(std < 1e-3, torch.ones_like(std), std)  # constant features: centre only
    else:
        mean, std = train.x.mean(), train.x.std().clamp_min(1e-6)
    for s in (train, *others):
        s.x = (s.x - mean) / std


ACTIVATIONS = ("relu", "tanh", "gelu", "silu")


def sample_mlp_arch(
    rng: np.random.Generator, widths: tuple[int, ...] = (32, 64, 128), depths: tuple[int, int] = (1, 4)
) -> dict:
    """Width, depth (hidden layers, ``depths`` is a half-open range), activation and
    initialisation scale of an MLP: the keyword arguments of :func:`make_mlp`."""
    return dict(
        width=int(rng.choice(list(widths))),
        depth=int(rng.integers(*depths)),
        activation=str(rng.choice(ACTIVATIONS)),
        init_scale=float(10 ** rng.uniform(-0.5, 0.5)),
    )


def make_mlp(
    n_in: int, n_out: int, width: int, depth: int, activation: str = "relu", init_scale: float = 1.0
) -> nn.Module:
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "silu": nn.SiLU}
    if activation not in acts:
        raise TaskError(f"activation must be one of {sorted(acts)}, got {activation!r}")
    layers: list[nn.Module] = []
    d = n_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), acts[activation]()]
        d = width
    layers.append(nn.Linear(d, n_out))
    model = nn.Sequential(*layers)
    scale_init(model, init_scale)
    return model


def scale_init(model: nn.Module, init_scale: float) -> nn.Module:
    """Multiply the default initialisation of every weight matrix by ``init_scale``."""
    if init_scale != 1.0:
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() > 1:
                    p.mul_(init_scale)
    return model
