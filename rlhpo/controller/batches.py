"""The batches' side of :class:`rlhpo.Controller`: counting the examples each step really
trained, the loader that counts them as the user gets them, and whose batch size the controller
sets (opt-in: a loader from ``Controller.make_loader`` or a
:class:`~rlhpo.training.sampler.MutableBatchSampler`).

Counting is exact when the controller sees the batches themselves: the loader of
``make_loader`` pops the size of each batch its sampler yielded, in order, as it hands the batch
out (worker processes prefetch ahead of training, so "the batch the sampler yielded last" would
be ahead); ``Controller.batches`` reads the size of each batch of any other loader;
``step(loss, batch=...)`` or ``step(loss, batch_size=...)`` say it directly.
"""

from __future__ import annotations

import warnings
from collections import deque
from collections.abc import Mapping
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from rlhpo.controller.budget import Budget
from rlhpo.errors import ControllerError, is_int
from rlhpo.training.sampler import MutableBatchSampler


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


class Batches:
    """Where each step's examples come from, and whose batch size the controller sets.

    :param budget: the run's budget (a batch-size sampler turns a budget of steps into one of
        examples; batches drawn far past it are refused)
    :param batch_size: the batch size of the user's own loader (None: not declared)
    :param sampler: a :class:`~rlhpo.training.sampler.MutableBatchSampler` to control
    :param control: ``control_batch_size`` as the user gave it (None: when the batches come
        from ``make_loader`` or a sampler)
    :param enabled: whether the policy sets the batch size at all
    """

    def __init__(self, budget: Budget, batch_size: Optional[int], sampler: Optional[MutableBatchSampler],
                 control: Optional[bool], enabled: bool) -> None:
        if batch_size is not None and not (is_int(batch_size) and batch_size >= 1):
            raise ControllerError(f"batch_size must be None or an integer >= 1, got {batch_size!r}")
        self.budget, self.sampler = budget, sampler
        self.declared = int(batch_size) if batch_size else None  # the user's own loader's
        self.used: Optional[int] = self.declared  # the batch size in use, without a sampler
        self.interval_max = 0  # the largest batch of the interval (without a sampler: the one in use)
        self.asked = control
        self.control = control is not False and enabled
        self.declined = self.checked = False
        self.delivered = 0  # examples of the batches handed out since the last step
        self.forwarded = 0  # examples of the model's training inputs since the last step
        self.recommended: Optional[int] = None  # the warm start's batch size, for make_loader

    @property
    def current(self) -> int:
        """The batch size in effect (1 when nothing told it)."""
        return self.sampler.batch_size if self.sampler is not None else self.used or 1

    @property
    def known(self) -> bool:
        """Whether the batch size in use was ever seen (history records None otherwise)."""
        return bool(self.used or self.sampler)

    def make_loader(self, dataset: Dataset, batch_size: Optional[int], seed: int, shard: dict, **loader_kwargs: Any) -> DataLoader:
        """See ``Controller.make_loader``; ``shard``: this rank's share (``RankSync.shard``)."""
        check_dataset(dataset)
        bs = self.recommended or batch_size or self.declared or 32
        for bad in ("batch_size", "shuffle", "sampler", "batch_sampler", "drop_last"):
            if bad in loader_kwargs:
                raise ControllerError(f"make_loader: {bad!r} is set by the controller; remove it")
        self.sampler = MutableBatchSampler(len(dataset), bs, generator=torch.Generator().manual_seed(seed), **shard)  # type: ignore[arg-type]
        if self.declined:  # begun before the loader existed: it can be controlled now
            self.control, self.declined = True, False
        return CountingLoader(dataset, batch_sampler=self.sampler, count=self.count, **loader_kwargs)

    def count(self, n: int) -> None:
        """``n`` examples handed out to the loop."""
        self.delivered += n
        self.budget.check_drawn(self.delivered)

    def count_inputs(self, module: Any, args: Any) -> None:
        """The model's forward pre-hook: its training inputs are examples too."""
        if module.training and torch.is_grad_enabled():
            self.forwarded += batch_len(args) or 0

    def take(self, batch_size: Optional[int], batch: Any) -> int:
        """The examples one step trained (see ``Controller.step``); a budget in steps needs no count."""
        delivered, self.delivered = self.delivered, 0
        forwarded, self.forwarded = self.forwarded, 0
        if self.budget.unit == "steps" and batch_size is None and batch is None:
            n = delivered or forwarded  # for the record only: 0 when nothing tells
        else:
            n = examples_of(batch_size, batch, delivered or forwarded, self.sampler, self.declared)
        if self.used is None and n:
            self.used = n
        self.interval_max = max(self.interval_max, n)
        return n

    def end_interval(self) -> None:
        """At a decision: without a sampler, the batch size in use is the largest the interval trained."""
        if self.sampler is None and self.interval_max:
            self.used, self.interval_max = self.interval_max, 0

    def check(self) -> bool:
        """At the first step: whose batch size this loop trains with (a loader made after the start
        still counts); True when batch-size control just fell away without a word (the common
        case, a loop with its own DataLoader: the run starts again without it)."""
        self.checked = True
        if self.sampler is not None:
            self.budget.in_examples(self.sampler.batch_size)
        elif self.control and not self.declined:
            if self.asked:
                self.decline(
                    "this loop's batches do not come from controller.make_loader() or a MutableBatchSampler",
                    "Use controller.make_loader(dataset) to let it set the batch size, or pass control_batch_size=False.",
                    stacklevel=5,
                )
            else:
                self.control = False
                return True
        return False

    def decline(self, reason: str, remedy: str = "", stacklevel: int = 4) -> None:
        """Turn batch-size control off, saying once why (the decided batch sizes cannot be applied)."""
        self.control, self.declined = False, True
        warnings.warn(
            f"rlhpo Controller: the policy sets the batch size, but {reason}: its batch-size decisions are not "
            "applied; the batch size stays the one your loop trains with, and history records that." + (remedy and f" {remedy}"),
            stacklevel=stacklevel,
        )

    def state_dict(self) -> dict:
        return {"sampler": None if self.sampler is None else self.sampler.state_dict(), "batch_size": self.used,
                "control_batch_size": self.control}

    def load_state_dict(self, state: dict, started: bool) -> None:
        if self.sampler is not None and state.get("sampler") is not None:
            self.sampler.load_state_dict(state["sampler"])
        self.used = state["batch_size"]
        self.control = bool(state.get("control_batch_size", self.control))
        self.delivered = 0
        self.checked = started
