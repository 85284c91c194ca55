"""``rlhpo.recommend(model, train_data, optimizer=..., total_examples=...)``: starting
hyperparameters for a new task from the meta-training tasks it resembles.

The meta-model is the one ``python -m rlhpo.recommend.select`` chose by leave-one-family-out error
(``data/selection.json``), fitted on the shipped meta-dataset (``data/meta_dataset.jsonl``) the
first time it is needed in a process. The nearest known tasks always come from kNN in the same
standardised feature space. Bad inputs fall back to the user's values (``fallback=True``,
``confidence=0``) with a one-line warning; nothing here raises for them.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from rlhpo.recommend.meta_features import MetaFeatures, data_length, meta_features, optimizer_kind, warn
from rlhpo.recommend.models import (
    FEATURE_SETS,
    SELECTION,
    MetaModel,
    dataset_arrays,
    feature_row,
    load_meta_dataset,
    to_hparams_values,
)
from rlhpo.tasks import SENSIBLE_STARTS, Hyperparams, Task
from rlhpo.tasks.space import SearchSpace


@dataclass
class Recommendation:
    """What :func:`recommend` advises.

    :param hparams: the recommended starting lr, batch size and weight decay (within the search
        bounds: lr in [1e-5, 1], batch size in [8, 512] capped at the training-set size, weight
        decay in [1e-6, 0.1])
    :param confidence: 1 / (1 + sd), sd the meta-model's standard deviation of log10(lr), scaled so
        that +-1 sd held 68% of the held-out families' tasks in leave-one-family-out: 1 is certain,
        0.5 is +-1 decade; 0 for a fallback
    :param lr_range: lr * 10**(-sd) .. lr * 10**sd: the advice widens as the meta-model is less sure
    :param nearest: the nearest meta-training tasks (task, family, distance, their best values)
    :param model: which meta-model and feature set produced it ("fallback" if none)
    :param fallback: True when the user's values came back unchanged (``reason`` says why)
    :param probe_examples: training examples the probe used (0 without a probe)
    """

    hparams: Hyperparams
    confidence: float
    lr_range: tuple[float, float]
    nearest: list[dict] = field(default_factory=list)
    model: str = "fallback"
    features: Optional[MetaFeatures] = None
    fallback: bool = False
    reason: str = ""
    probe_examples: int = 0

    def record(self) -> dict:
        """A flat record (for ``history`` and result tables)."""
        return dict(
            recommended=True, lr=self.hparams.lr, batch_size=self.hparams.batch_size,
            weight_decay=self.hparams.weight_decay, confidence=self.confidence, lr_low=self.lr_range[0],
            lr_high=self.lr_range[1], model=self.model, fallback=self.fallback, probe_examples=self.probe_examples,
            nearest=[n["task"] for n in self.nearest],
        )

    def __str__(self) -> str:
        hp = self.hparams
        lines = [
            f"recommended start: lr {hp.lr:.3g} (range {self.lr_range[0]:.3g} .. {self.lr_range[1]:.3g}), "
            f"batch size {hp.batch_size}, weight decay {hp.weight_decay:.3g}",
            f"confidence {self.confidence:.2f} ({self.model})" + (f"; fallback: {self.reason}" if self.fallback else ""),
        ]
        if self.probe_examples:
            lines.append(f"probe cost: {self.probe_examples} training examples")
        if self.nearest:
            lines.append("nearest meta-training tasks (their best lr / batch / wd):")
            lines += [f"  {n['task']:<30} distance {n['distance']:.2f}  lr {n['best_lr']:.3g}  batch {n['best_batch_size']}  "
                      f"wd {n['best_weight_decay']:.3g}" for n in self.nearest]
        return "\n".join(lines)


@functools.lru_cache(maxsize=4)
def fitted(kind: Optional[str] = None, features: Optional[str] = None) -> tuple[MetaModel, MetaModel, list[dict]]:
    """The chosen meta-model (or ``kind`` on ``features``), a kNN for the nearest tasks, and the
    meta-dataset rows they were fitted on (those with every feature)."""
    selection = json.loads(SELECTION.read_text()) if SELECTION.exists() else {"chosen": {"model": "knn", "features": "static"}, "table": []}
    kind, features = kind or selection["chosen"]["model"], features or selection["chosen"]["features"]
    entry = next((r for r in selection["table"] if (r["model"], r["features"]) == (kind, features)), {})
    rows = load_meta_dataset()
    X, Y, opts, _ = dataset_arrays(rows, features)
    if len(Y) < 5:
        raise ValueError(f"the meta-dataset has {len(Y)} usable row(s); at least 5 are needed")
    names = FEATURE_SETS[features]
    rows = [r for r in rows if not np.isnan(feature_row(r, names)).any()]
    model = MetaModel(kind, features, sd_scale=float(entry.get("lr_sd_scale", 1.0))).fit(X, Y, opts)
    return model, MetaModel("knn", features, k=5).fit(X, Y, opts), rows


def user_values(optimizer: Any, train_data: Any, kind: str) -> Hyperparams:
    """The values the user would start from: a torch optimizer's lr and weight decay (else the
    optimizer kind's usual ones), a DataLoader's batch size (else 32), capped at the data size."""
    lr, wd = SENSIBLE_STARTS[kind]
    if isinstance(optimizer, torch.optim.Optimizer):
        g = optimizer.param_groups[0]
        lr, wd = float(g.get("lr", lr)), float(g.get("weight_decay", wd) or 0.0)
    bs = getattr(train_data, "batch_size", None) or 32
    return Hyperparams(lr, int(max(1, min(bs, data_length(train_data) or bs))), wd)


def _fallback(user: Hyperparams, reason: str, feats: Optional[MetaFeatures] = None) -> Recommendation:
    warn(f"{reason}; keeping your values (lr {user.lr:.3g}, batch size {user.batch_size}, weight decay {user.weight_decay:.3g})")
    return Recommendation(user, 0.0, (user.lr, user.lr), features=feats, fallback=True, reason=reason)


def clip_to_space(lr: float, bs: float, wd: float, n_train: int) -> Hyperparams:
    s = SearchSpace()
    lo, hi = min(s.batch_size[0], n_train), max(min(s.batch_size[0], n_train), min(s.batch_size[1], n_train))
    return Hyperparams(float(np.clip(lr, *s.lr)), int(np.clip(round(bs), lo, hi)), float(np.clip(wd, *s.weight_decay)))


def recommend(
    model: nn.Module,
    train_data: Any,
    optimizer: Any = "adam",
    total_examples: Optional[int] = None,
    *,
    loss_fn: Optional[Callable] = None,
    probe: Optional[bool] = None,
    meta_model: Optional[str] = None,
    seed: int = 0,
    fallback: Optional[Hyperparams] = None,
) -> Recommendation:
    """Recommend starting hyperparameters for training ``model`` on ``train_data``.

    :param model: the model to train (never modified: a probe trains a copy)
    :param train_data: a Dataset, DataLoader, :class:`rlhpo.tasks.Split` or ``(x, y)`` tensors
    :param optimizer: "sgd" (momentum 0.9), "adam", "adamw", or a torch optimizer (its lr and
        weight decay are the fallback)
    :param total_examples: the run's budget in training examples (None: 10 epochs, with a warning)
    :param loss_fn: ``loss_fn(model(x), y)``, for the probe (None: inferred from the targets)
    :param probe: use probe features (None: whatever the chosen meta-model uses)
    :param meta_model: "knn", "gp", "gbr" or "prior" instead of the chosen one
    :param fallback: the values to keep when no recommendation can be made (None: the
        optimizer's lr and weight decay, the loader's batch size, else the usual defaults)
    """
    kind = optimizer_kind(optimizer) or "adam"
    user = fallback or user_values(optimizer, train_data, kind)
    try:
        chosen, knn, rows = fitted(meta_model, None if probe is None else ("probe" if probe else "static"))
    except (FileNotFoundError, ValueError, KeyError) as e:
        return _fallback(user, f"no usable meta-dataset ({e})")
    feats = meta_features(model, train_data, optimizer, total_examples, loss_fn=loss_fn, probe=chosen.features == "probe", seed=seed)
    if feats.n_params == 0:
        return _fallback(user, "the model has no parameters", feats)
    if feats.n_train == 0:
        return _fallback(user, "the training data is empty or unreadable", feats)
    x = feature_row(feats.as_row(), FEATURE_SETS[chosen.features])
    if np.isnan(x).any():  # e.g. the probe could not run: the static model instead
        chosen, knn, rows = fitted(meta_model, "static")
        x = feature_row(feats.as_row(), FEATURE_SETS["static"])
    return _advice(chosen, knn, rows, x, feats)


def _advice(chosen: MetaModel, knn: MetaModel, rows: list[dict], x: np.ndarray, feats: MetaFeatures) -> Recommendation:
    mu, sd = chosen.predict(x[None, :], [feats.optimizer])
    lr, bs, wd = to_hparams_values(feats.optimizer, mu[0])
    hp = clip_to_space(lr, bs, wd, feats.n_train)
    s = float(sd[0, 0]) * chosen.sd_scale if math.isfinite(sd[0, 0]) else 3.0
    j, d, _ = knn.neighbours(knn._z(x)[0], feats.optimizer)
    nearest = [dict(task=rows[i]["task"], family=rows[i]["family"], distance=float(di), best_lr=rows[i]["best_lr"],
                    best_batch_size=rows[i]["best_batch_size"], best_weight_decay=rows[i]["best_weight_decay"])
               for i, di in zip(j, d)]
    return Recommendation(
        hp, 1.0 / (1.0 + s), (hp.lr * 10 ** -s, hp.lr * 10**s), nearest, f"{chosen.kind} on {chosen.features} features",
        feats, probe_examples=feats.probe.examples if feats.probe is not None else 0,
    )


def recommend_task(task: Task, **kwargs: Any) -> Recommendation:
    """:func:`recommend` for an :class:`rlhpo.tasks.Task` (its model built under a forked RNG;
    its start values are the fallback)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(kwargs.get("seed", 0))
        model = task.model_fn()
    kwargs.setdefault("fallback", task.default_hparams)
    return recommend(model, task.train, task.optimizer, task.budget_examples, loss_fn=task.loss_fn, **kwargs)


def warm_start(controller: Any, train_data: Any) -> Any:
    """Start ``controller`` (an :class:`rlhpo.Controller`, before its first step) from
    :func:`recommend`'s advice for its ``model`` on ``train_data``: the optimizer's lr and weight
    decay now (each param group keeps its ratio; a weight decay of 0 stays 0), the batch size now
    if the controller has a sampler, else in the loader that ``controller.make_loader`` makes.
    ``controller.history[0]`` records the recommendation (``recommended=True``), and so does
    TensorBoard (``controller/recommended_*`` and the text ``controller/recommendation``).
    Without a model or data it warns and keeps the values as they are."""
    user = controller.hparams
    if controller.model is None or train_data is None:
        rec = _fallback(user, "warm_start needs model= and train_data= (the model to train and its training data)")
    else:
        rec = recommend(controller.model, train_data, controller.optimizer, controller.total_examples, fallback=user)
    if not rec.fallback:
        controller.warm_start(rec.hparams)
    controller.recommendation = rec
    controller.history.insert(0, dict(examples=0, **rec.record()))
    if controller.writer is not None:
        for key in ("lr", "batch_size", "weight_decay", "confidence"):
            controller.writer.add_scalar(f"controller/recommended_{key}", float(rec.record()[key]), 0)
        controller.writer.add_text("controller/recommendation", str(rec).replace("\n", "  \n"), 0)
    return controller
