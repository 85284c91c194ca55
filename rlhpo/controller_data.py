"""The data side of :class:`rlhpo.Controller`: the loader whose batch size it sets, counting the
examples each step trained, when batch-size control applies (opt-in: a loader from
:meth:`ControllerData.make_loader` or a :class:`~rlhpo.training.sampler.MutableBatchSampler`),
and the controller's state for checkpoints."""

from __future__ import annotations

import time
import warnings
from typing import Any, Iterable, Iterator, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from rlhpo.controller_loops import CountingLoader, batch_len, check_dataset, to_numpy, to_plain
from rlhpo.errors import ControllerError
from rlhpo.training.hparams import GroupRatios
from rlhpo.training.sampler import MutableBatchSampler
from rlhpo.training.snapshot import LoopState


class ControllerData:
    """Mixed into :class:`rlhpo.Controller` (its attributes are the controller's)."""

    def make_loader(self, dataset: Dataset, batch_size: Optional[int] = None, seed: int = 0, **loader_kwargs: Any) -> DataLoader:
        """A ``DataLoader`` over ``dataset`` whose batch size this controller sets; it counts the
        examples of each batch as it hands it out (exact with ``num_workers`` too). The starting
        batch size: the warm start's, else ``batch_size``, else the constructor's, else 32."""
        check_dataset(dataset)
        bs = self._recommended_bs or batch_size or self._declared_bs or 32
        for bad in ("batch_size", "shuffle", "sampler", "batch_sampler", "drop_last"):
            if bad in loader_kwargs:
                raise ControllerError(f"make_loader: {bad!r} is set by the controller; remove it")
        self.sampler = MutableBatchSampler(len(dataset), bs, generator=torch.Generator().manual_seed(seed), **self.sync.shard())  # type: ignore[arg-type]
        if self._declined:  # begun before the loader existed: it can be controlled now
            self.control_batch_size, self._declined = True, False
        return CountingLoader(dataset, batch_sampler=self.sampler, count=self._count, **loader_kwargs)

    def _count(self, n: int) -> None:
        self._delivered += n
        self.budget.check_drawn(self._delivered)

    def _count_inputs(self, module: Any, args: Any) -> None:
        if module.training and torch.is_grad_enabled():
            self._forwarded += batch_len(args) or 0

    def batches(self, loader: Iterable) -> Iterator[Any]:
        """Iterate ``loader`` over epochs until the example budget is spent, counting the
        examples of each batch as it is handed out (so :meth:`step` needs no batch size)."""
        if isinstance(loader, Dataset) and not isinstance(loader, Iterable):
            raise ControllerError("batches(loader): got a Dataset; pass a DataLoader, or controller.make_loader(dataset)")
        counting = isinstance(loader, CountingLoader)
        own = getattr(loader, "batch_sampler", None)
        if self.sampler is None and not self._started and isinstance(own, MutableBatchSampler):
            self.sampler = own  # the user's loader over a mutable sampler: its batch size is ours to set
        while not self.done:
            empty = True
            for batch in loader:
                empty = False
                if not counting:
                    self._count(batch_len(batch) or 0)
                yield batch
                if self.done:
                    self.finish()  # the guard's last word: a run never ends diverged
                    return
            if empty:
                raise ControllerError("batches(loader): the loader yielded no batch")

    def _check_loader(self) -> None:
        """At the first step: whose batch size this loop trains with (a loader made after
        :meth:`begin` still counts)."""
        self._loader_checked = True
        if self.sampler is not None:
            self.budget.in_examples(self.sampler.batch_size)
            if self.budget.unit == "examples" and self.decision.total_examples != self.budget.total:
                self._new_decision_path()
                self._started = False  # start again on the clock in examples
        elif self.control_batch_size and not self._declined:
            if self._batch_control_asked:
                self.decline_batch_size(
                    "this loop's batches do not come from controller.make_loader() or a MutableBatchSampler",
                    "Use controller.make_loader(dataset) to let it set the batch size, or pass control_batch_size=False.",
                )
            else:  # the common case, a loop with its own DataLoader: batch-size control is opt-in
                self.control_batch_size, self._started = False, False

    def decline_batch_size(self, reason: str, remedy: str = "") -> None:
        """Turn batch-size control off, saying once why (the decided batch sizes cannot be applied)."""
        self.control_batch_size, self._declined = False, True
        warnings.warn(
            f"rlhpo Controller: the policy sets the batch size, but {reason}: its batch-size decisions are not "
            "applied; the batch size stays the one your loop trains with, and history records that." + (remedy and f" {remedy}"),
            stacklevel=4,
        )

    # -- checkpointing ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The controller's state: tensors and plain Python types only, so a checkpoint holding it
        loads with ``torch.load(path, weights_only=True)``."""
        return {
            "examples_seen": int(self.examples_seen),
            "started": self._started,
            "last_val": self._last_val,
            "decision": to_plain(self.decision.state_dict()),
            "monitor": self.monitor.state_dict(),
            "driver": to_plain(self.driver.state_dict()),
            "sampler": None if self.sampler is None else self.sampler.state_dict(),
            "batch_size": self._used_bs,
            "control_batch_size": self.control_batch_size,
            "ratios": self._ratios.state_dict(),
            "history": to_plain(list(self.history)),
            "budget": self.budget.state_dict(),
            "counts": [self._opt_steps, self._steps_called, self._behind, self._steps_total],
            "asked": None if self._asked is None else vars(self._asked).copy(),
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("budget") is not None:
            self.budget.load_state_dict(state["budget"])
            if self.decision.total_examples != self.budget.total:
                self._new_decision_path()
        self.examples_seen = int(state["examples_seen"])
        decision = state["decision"]  # the guard's snapshots are torch state dicts: they stay tensors
        self.decision.load_state_dict({**to_numpy(decision), "guard": decision["guard"]})
        self.monitor.load_state_dict(state["monitor"])
        self._boundary = self.decision.boundary
        self._started = bool(state["started"])
        if self._started:  # a resumed run's guard snapshots and restores this loop's state again
            self.decision.guard.target = LoopState(self.optimizer, self.model, self.sampler, self.scaler)
        self._last_val = state["last_val"]
        self.driver.load_state_dict(to_numpy(state["driver"]))
        if self.sampler is not None and state.get("sampler") is not None:
            self.sampler.load_state_dict(state["sampler"])
        self._used_bs = state["batch_size"]
        self.control_batch_size = bool(state.get("control_batch_size", self.control_batch_size))
        if state.get("ratios") is not None:
            self._ratios = GroupRatios(**state["ratios"])
        self._delivered = 0
        self.history = list(state["history"])
        self._loader_checked = self._started
        if state.get("counts") is not None:
            self._opt_steps, self._steps_called, self._behind, self._steps_total = (int(v) for v in state["counts"])
        if state.get("asked") is not None:
            self._asked = type(self.hparams)(**state["asked"])
        groups = self.optimizer.param_groups
        self._written_lr = groups[min(self._ratios.lr_ref, len(groups) - 1)]["lr"]  # the checkpoint's, not a foreign write
        self._scheduled = self._started and self._hook is not None and self.decision.scheduled
        self._clock = [time.perf_counter(), 0.0]
