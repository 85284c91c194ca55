"""Task meta-features, computed before training: what the warm start compares tasks by.

Static features come from the model and the training data alone (no forward pass): examples,
input shape and type, output kind and classes, parameter count, depth, layer kinds, optimizer
kind, budget in epochs. Optional probe features (:func:`probe_features`) train a throw-away copy
of the model on a few minibatches: the initial loss, the gradient-norm scale and the loss change
after a few steps at three learning rates around the optimizer's usual one. Their cost (examples,
forward/backward passes, seconds) is measured and returned with them.

Bad inputs never raise: a model without parameters, data too small for a probe, a loss that cannot
be inferred or an unknown layer kind give one warning line (``RecommendWarning``) and a fallback.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from rlhpo.control.prior import optimizer_kind
from rlhpo.tasks import SENSIBLE_STARTS, Task
from rlhpo.tasks.base import mean_output, mse, sequence_cross_entropy
from rlhpo.training.session import make_optimizer

OUTPUT_KINDS: tuple[str, ...] = ("classification", "regression", "sequence", "other")
OPTIMIZER_KINDS: tuple[str, ...] = tuple(SENSIBLE_STARTS)
#: lr multiples of the optimizer's usual lr that the probe's short sweep tries
PROBE_LR_FACTORS: tuple[float, ...] = (0.1, 1.0, 10.0)
#: data smaller than this gets no probe (a warning says so)
MIN_PROBE_EXAMPLES = 16

_LAYER_KINDS: dict[str, tuple[type, ...]] = {
    "conv": (nn.modules.conv._ConvNd,),
    "recurrent": (nn.RNNBase, nn.RNNCellBase),
    "attention": (nn.MultiheadAttention,),
    "norm": (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
    "embedding": (nn.Embedding, nn.EmbeddingBag),
}
_PLAIN_LAYERS: tuple[type, ...] = (nn.Linear, nn.Bilinear, nn.PReLU)
#: a custom module's class name that says its kind (e.g. a hand-written attention block)
_NAME_HINTS: dict[str, tuple[str, ...]] = {
    "conv": ("conv",), "recurrent": ("rnn", "lstm", "gru"), "attention": ("attention", "attn", "transformer"),
    "norm": ("norm",), "embedding": ("embed",),
}


class RecommendWarning(UserWarning):
    """A meta-feature could not be computed as asked; the warm start fell back (the message says how)."""


def warn(message: str) -> None:
    warnings.warn(f"rlhpo recommend: {message}", RecommendWarning, stacklevel=3)


@dataclass
class ProbeFeatures:
    """What a few minibatches on a copy of the model show, and what they cost."""

    initial_loss: float
    grad_norm: float
    #: log(loss after / loss before) of a few steps at each of PROBE_LR_FACTORS x the usual lr
    sweep: tuple[float, ...]
    examples: int
    passes: int
    seconds: float


@dataclass
class MetaFeatures:
    """A task as the meta-models see it (see the module docstring)."""

    n_train: int
    input_shape: tuple[int, ...]
    input_kind: str  # "float" or "int" (token ids, categorical codes)
    output_kind: str  # one of OUTPUT_KINDS
    n_classes: int  # 0 unless classification / sequence
    n_params: int
    depth: int  # parametrised layers (an n-layer RNN counts n)
    layers: dict[str, bool]  # conv, recurrent, attention, norm, embedding, other
    optimizer: str
    budget_epochs: float
    probe: Optional[ProbeFeatures] = None
    notes: list[str] = field(default_factory=list)

    @property
    def input_size(self) -> int:
        return int(np.prod(self.input_shape)) if self.input_shape else 1

    def as_row(self) -> dict[str, Any]:
        """One flat row (the meta-dataset's columns, and what :func:`feature_vector` reads)."""
        row: dict[str, Any] = dict(
            n_train=self.n_train, input_shape="x".join(map(str, self.input_shape)), input_size=self.input_size,
            input_kind=self.input_kind, output_kind=self.output_kind, n_classes=self.n_classes,
            n_params=self.n_params, depth=self.depth, optimizer=self.optimizer, budget_epochs=self.budget_epochs,
        )
        row.update({f"layer_{k}": int(v) for k, v in self.layers.items()})
        if self.probe is not None:
            p = asdict(self.probe)
            sweep = p.pop("sweep")
            row.update({f"probe_{k}": v for k, v in p.items()})
            row.update({f"probe_sweep{i}": v for i, v in enumerate(sweep)})
        return row


# -- data --------------------------------------------------------------------------------------


def _dataset_of(data: Any) -> Any:
    """A DataLoader's dataset, a Split / (x, y) pair as is, or the dataset itself."""
    return data.dataset if isinstance(data, torch.utils.data.DataLoader) else data


def _xy_tensors(data: Any) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` when the data holds them as tensors: a Split, a pair, a TensorDataset."""
    data = _dataset_of(data)
    if hasattr(data, "x") and hasattr(data, "y") and isinstance(data.x, torch.Tensor):
        return data.x, data.y
    if isinstance(data, torch.utils.data.TensorDataset) and len(data.tensors) >= 2:
        return data.tensors[0], data.tensors[1]
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return data[0], data[1]
    return None


def data_length(data: Any) -> int:
    xy = _xy_tensors(data)
    if xy is not None:
        return int(xy[0].shape[0])
    try:
        return len(_dataset_of(data))
    except TypeError:
        return 0


def sample_batch(data: Any, n: int, generator: torch.Generator) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` random examples (without replacement) as an ``(x, y)`` pair; None if not possible."""
    size = data_length(data)
    if size == 0:
        return None
    idx = torch.randperm(size, generator=generator)[: min(n, size)]
    xy = _xy_tensors(data)
    if xy is not None:
        return xy[0][idx], xy[1][idx]
    try:
        ds = _dataset_of(data)
        batch = torch.utils.data.default_collate([ds[int(i)] for i in idx])
    except Exception:  # a dataset whose items do not collate: no batch, the caller falls back
        return None
    if isinstance(batch, (tuple, list)) and len(batch) >= 2 and all(isinstance(t, torch.Tensor) for t in batch[:2]):
        return batch[0], batch[1]
    return None


def output_kind(y: torch.Tensor, loss_fn: Optional[Callable] = None) -> tuple[str, int]:
    """The output kind and number of classes, from the loss function when it is a known one,
    else from the targets: integer targets of one value per example are classes, of several a
    sequence; floating targets a regression."""
    known = {nn.functional.cross_entropy: "classification", sequence_cross_entropy: "sequence", mse: "regression",
             nn.functional.mse_loss: "regression", mean_output: "other"}
    kind = known.get(loss_fn) if loss_fn is not None else None  # type: ignore[call-overload]
    if kind is None:
        if y.is_floating_point():
            kind = "regression"
        else:
            kind = "classification" if y.dim() == 1 else "sequence"
    n_classes = int(y.max()) + 1 if kind in ("classification", "sequence") and y.numel() and not y.is_floating_point() else 0
    return kind, n_classes


# -- model -------------------------------------------------------------------------------------


def model_features(model: nn.Module) -> tuple[int, int, dict[str, bool], list[str]]:
    """Parameter count, depth (modules holding parameters of their own; an n-layer RNN counts n),
    layer-kind flags, and the names of unknown parametrised layer kinds (flagged ``other``)."""
    n_params = sum(p.numel() for p in model.parameters())
    flags = {k: False for k in _LAYER_KINDS} | {"other": False}
    depth, unknown = 0, []
    for m in model.modules():
        name = type(m).__name__.lower()
        hinted = [k for k, hints in _NAME_HINTS.items() if any(h in name for h in hints)]
        for k in hinted:
            flags[k] = True
        if not any(True for _ in m.parameters(recurse=False)):
            continue
        depth += int(getattr(m, "num_layers", 1)) if isinstance(m, nn.RNNBase) else 1
        kinds = [k for k, types in _LAYER_KINDS.items() if isinstance(m, types)] + hinted
        for k in kinds:
            flags[k] = True
        if not kinds and not isinstance(m, _PLAIN_LAYERS):
            flags["other"] = True
            unknown.append(type(m).__name__)
    return int(n_params), depth, flags, sorted(set(unknown))


# -- probe -------------------------------------------------------------------------------------


def _loss_of(model: nn.Module, loss_fn: Callable, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return loss_fn(model(batch[0]), batch[1])


def probe_features(
    model: nn.Module, data: Any, loss_fn: Callable, optimizer: str, batch_size: int = 32, steps: int = 3, seed: int = 0
) -> Optional[ProbeFeatures]:
    """Probe a deep copy of ``model`` (the original is untouched, and so is torch's global RNG):
    the loss and gradient norm at initialisation on one batch, then, from the initial weights
    each time, ``steps`` steps at each of :data:`PROBE_LR_FACTORS` x the optimizer's usual lr,
    scored as log(loss after / before) on a fixed batch. None (with a warning) if it cannot run."""
    n = data_length(data)
    if n < MIN_PROBE_EXAMPLES:
        warn(f"{n} training examples are too few for a probe (need {MIN_PROBE_EXAMPLES}); using static meta-features only")
        return None
    t0 = time.perf_counter()
    bs = max(1, min(batch_size, n // 2))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        try:
            return _probe(model, data, loss_fn, optimizer, bs, steps, g, t0)
        except Exception as e:  # a model or loss the probe cannot drive: static features only
            warn(f"the probe failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); using static meta-features only")
            return None


def _probe(model: nn.Module, data: Any, loss_fn: Callable, optimizer: str, bs: int, steps: int,
           g: torch.Generator, t0: float) -> Optional[ProbeFeatures]:
    ref = sample_batch(data, bs, g)
    if ref is None:
        warn("could not draw a batch of (input, target) tensors from the data; using static meta-features only")
        return None
    net = copy.deepcopy(model).train()
    init = copy.deepcopy(net.state_dict())
    loss = _loss_of(net, loss_fn, ref)
    loss.backward()
    grad_norm = float(torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in net.parameters() if p.grad is not None)))
    initial = float(loss.detach())
    examples, passes = len(ref[0]), 1
    base_lr, base_wd = SENSIBLE_STARTS[optimizer]
    sweep = []
    for factor in PROBE_LR_FACTORS:
        net.load_state_dict(init)
        from rlhpo.tasks import Hyperparams

        opt = make_optimizer(optimizer, net.parameters(), Hyperparams(base_lr * factor, bs, base_wd))
        for _ in range(steps):
            batch = sample_batch(data, bs, g)
            opt.zero_grad()
            _loss_of(net, loss_fn, batch).backward()  # type: ignore[arg-type]
            opt.step()
            examples, passes = examples + bs, passes + 1
        with torch.no_grad():
            after = float(_loss_of(net, loss_fn, ref))
        examples, passes = examples + len(ref[0]), passes + 1
        ratio = after / initial if initial > 0 and math.isfinite(after) else (float("inf") if not math.isfinite(after) else 1.0)
        sweep.append(float(np.clip(np.log(max(ratio, 1e-6)), -5.0, 5.0)) if math.isfinite(ratio) else 5.0)
    return ProbeFeatures(initial, grad_norm, tuple(sweep), examples, passes, time.perf_counter() - t0)


# -- the entry point ---------------------------------------------------------------------------


def default_loss(kind: str) -> Optional[Callable]:
    return {"classification": nn.functional.cross_entropy, "sequence": sequence_cross_entropy, "regression": mse}.get(kind)


def task_meta_features(task: Task, probe: bool = False, seed: int = 0) -> MetaFeatures:
    """The meta-features of an :class:`rlhpo.tasks.Task` (its model built under a forked RNG)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = task.model_fn()
    return meta_features(model, task.train, task.optimizer, task.budget_examples, loss_fn=task.loss_fn, probe=probe, seed=seed)


def meta_features(
    model: nn.Module, train_data: Any, optimizer: Any, total_examples: Optional[int] = None,
    loss_fn: Optional[Callable] = None, probe: bool = False, seed: int = 0,
) -> MetaFeatures:
    """The meta-features of a user's model and training data (a Dataset, a DataLoader, a Split or
    an ``(x, y)`` pair of tensors). ``optimizer``: "sgd" / "adam" / "adamw" or a torch optimizer
    (another kind counts as adam, with a warning). ``total_examples``: the run's budget (None: 10
    epochs, with a warning). Never raises for bad inputs; ``notes`` lists every fallback taken."""
    notes: list[str] = []

    def note(msg: str) -> None:
        notes.append(msg)
        warn(msg)

    n_train = data_length(train_data)
    first = sample_batch(train_data, min(512, max(1, n_train)), torch.Generator().manual_seed(seed)) if n_train else None
    if first is None:
        note("could not read (input, target) tensors from the training data; input and output features fall back to unknown")
        x_shape, x_kind, kind, n_classes = (), "float", "other", 0
    else:
        x, y = first
        x_shape, x_kind = tuple(int(s) for s in x.shape[1:]), ("float" if x.is_floating_point() else "int")
        kind, n_classes = output_kind(y, loss_fn)
    n_params, depth, layers, unknown = model_features(model)
    if n_params == 0:
        note("the model has no parameters; there is nothing to tune, the recommendation falls back to your values")
    if unknown:
        note(f"unsupported layer kind(s) {unknown}: counted in depth and flagged 'other'")
    kind_opt = optimizer_kind(optimizer)
    if kind_opt is None:
        name = type(optimizer).__name__ if not isinstance(optimizer, str) else optimizer
        note(f"optimizer {name!r} is not sgd/adam/adamw; treated as adam")
        kind_opt = "adam"
    if total_examples is None or total_examples <= 0:
        note("total_examples not given; assuming a budget of 10 epochs")
        total_examples = 10 * max(1, n_train)
    feats = MetaFeatures(n_train, x_shape, x_kind, kind, n_classes, n_params, depth, layers, kind_opt,
                         float(total_examples) / max(1, n_train), notes=notes)
    if probe and n_params > 0:
        loss = loss_fn or default_loss(kind)
        if loss is None:
            note(f"no loss function given for a {kind!r} output; pass loss_fn= for probe features (static only)")
        else:
            feats.probe = probe_features(model, train_data, loss, kind_opt, seed=seed)
    return feats
