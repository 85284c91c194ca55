"""What :class:`rlhpo.Controller` needs to sit in any training loop: counting the examples each
step really trained, a loader that counts them as the user gets them, a checkpoint of plain
types, and the messages for starting values the policy cannot use.

Counting is exact when the controller sees the batches themselves: the loader of
:meth:`~rlhpo.Controller.make_loader` pops the size of each batch its sampler yielded, in order,
as it hands the batch out (worker processes prefetch ahead of training, so "the batch the
sampler yielded last" would be ahead); :meth:`~rlhpo.Controller.batches` reads the size of
each batch of any other loader; ``step(loss, batch=...)`` or ``step(loss, batch_size=...)``
say it directly.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Mapping
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from rlhpo.control.actions import ActionConfig
from rlhpo.errors import ControllerError, is_int
from rlhpo.tasks.base import Hyperparams
from rlhpo.training.snapshot import map_nested


def batch_len(batch: Any) -> Optional[int]:
    """The number of examples in ``batch``: the first dimension of its first tensor (a tensor, a
    tuple or list of them, a dict of them, nested); None when it has none."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else None
    if isinstance(batch, np.ndarray):
        return int(batch.shape[0]) if batch.ndim > 0 else None
    if isinstance(batch, Mapping):
        items: Any = batch.values()
    elif isinstance(batch, (list, tuple)):
        items = batch
    else:
        return None
    for item in items:
        n = batch_len(item)
        if n is not None:
            return n
    return None


class CountingLoader(DataLoader):
    """A ``DataLoader`` over a :class:`~rlhpo.training.sampler.MutableBatchSampler` that tells
    ``count(n)`` the size of each batch as it hands it out (made by ``Controller.make_loader``)."""

    def __init__(self, *args: Any, count: Callable[[int], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._count = count

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        sampler = self.batch_sampler
        sizes: deque = deque()
        sampler.yielded = sizes  # type: ignore[union-attr]  # filled while workers prefetch
        for batch in super().__iter__():
            n = sizes.popleft() if sizes else batch_len(batch)
            if n is not None:
                self._count(n)
            yield batch


def check_dataset(dataset: Any) -> None:
    """``make_loader`` takes a map-style dataset (what ``DataLoader`` takes), not a loader."""
    if isinstance(dataset, DataLoader):
        raise ControllerError(
            "make_loader(dataset): got a DataLoader; pass its dataset, make_loader(loader.dataset) "
            "(the controller makes the loader so that it can set the batch size), or keep your loader as it is"
        )
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise ControllerError(
            f"make_loader(dataset): a {type(dataset).__name__} has no len() and indexing; it takes a map-style "
            "Dataset (e.g. TensorDataset); keep an iterable loader as it is and step(loss) after each optimizer step"
        )


def _plain(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj))
    return obj.item() if isinstance(obj, np.generic) else obj


def to_plain(obj: Any) -> Any:
    """``obj`` with numpy arrays as tensors and numpy scalars as Python numbers, so that
    ``torch.load(weights_only=True)`` reads it back."""
    return map_nested(obj, _plain)


def to_numpy(obj: Any) -> Any:
    """The inverse of :func:`to_plain` for state that held numpy arrays (the policy's LSTM state)."""
    return map_nested(obj, lambda v: v.numpy() if isinstance(v, torch.Tensor) else v)


def clipping_message(asked: Hyperparams, start: Hyperparams, config: ActionConfig, controls: tuple[str, ...]) -> Optional[str]:
    """One sentence per starting value the policy's bounds changed (None: none did)."""
    parts = []
    for name in controls:
        a, s = float(getattr(asked, name)), float(getattr(start, name))
        bound = getattr(config, name)
        if a < bound.min and s != a:
            parts.append(f"{name} {a:g} is below the policy's bound {name} >= {bound.min:g}: starting at {s:g}")
        elif a > bound.max and s != a:
            parts.append(f"{name} {a:g} is above the policy's bound {name} <= {bound.max:g}: starting at {s:g}")
    if not parts:
        return None
    return (
        "rlhpo Controller: the starting values are outside what the policy was trained on ("
        + "; ".join(parts)
        + "). See the model card of the policy for its bounds."
    )


def weight_decay_control(optimizer: torch.optim.Optimizer, wanted: bool) -> bool:
    """Whether the controller sets weight decay in ``optimizer``; says once why not when the
    optimizer rules it out (it has none, or every group starts at 0: never switched on)."""
    groups, name = optimizer.param_groups, type(optimizer).__name__
    if not wanted:
        return False
    if "weight_decay" not in groups[0]:
        warnings.warn(f"{name} has no weight_decay: weight-decay control is off for this run", stacklevel=3)
        return False
    if all(not g.get("weight_decay") for g in groups):
        warnings.warn(
            f"every param group of {name} starts with weight_decay=0: weight-decay control is off for this run "
            "(the controller does not switch weight decay on; start it above 0 to let the policy set it)",
            stacklevel=3,
        )
        return False
    return True


def examples_of(batch_size: Optional[int], batch: Any, delivered: int, sampler: Any, declared: Optional[int]) -> int:
    """The examples one step trained: ``batch_size``, else the size of ``batch``, else the batches
    handed out since the last step, else the sampler's last batch, else the declared batch size."""
    if batch_size is not None:
        if not (is_int(batch_size) and batch_size >= 1):
            raise ControllerError(f"step(loss, batch_size): batch_size must be an integer >= 1, got {batch_size!r}")
        return int(batch_size)
    if batch is not None:
        n = batch_len(batch)
        if not n:
            raise ControllerError(
                f"step(loss, batch): cannot tell how many examples a {type(batch).__name__} holds "
                "(no tensor with a first dimension in it); pass step(loss, batch_size=...)"
            )
        return n
    if delivered:
        return delivered
    if sampler is not None:
        return sampler.last_batch_size or sampler.batch_size
    if declared is not None:
        return declared
    raise ControllerError(
        "step(loss): the controller cannot tell how many examples this step trained; give the budget in "
        "optimizer steps (Controller(optimizer, total_steps=...)), or pass model= (its inputs are counted), "
        "step(loss, batch=batch), or Controller(batch_size=...) for a loader of fixed batch size"
    )


def loss_value(value: Any, where: str) -> float:
    """A loss given as a number or a scalar tensor, as a float; a clear error for anything else."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        what = f"Tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
        raise ControllerError(f"{where} must be a number or a scalar tensor, got {what}")
    return float(value)
