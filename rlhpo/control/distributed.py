"""One decision for every rank of a ``torch.distributed`` job.

Under DDP (a plain loop, Lightning's ``ddp`` strategies, the Hugging Face ``Trainer`` under
``torchrun`` or ``accelerate``) every rank runs its own :class:`rlhpo.Controller`. Left alone,
each would decide from its own shard's losses and could pick another learning rate, batch size
or rollback than its peers, and the replicas would drift apart. :class:`RankSync` keeps them one:

* at the start, every rank waits (through the process group's store, up to
  :data:`START_TIMEOUT` seconds) for every other rank's controller: a controller created on
  some ranks only is a :class:`~rlhpo.errors.ControllerError` on those ranks, not a hang in a
  collective the others never join; then the budget and the starting hyperparameters are
  gathered from every rank, and a mismatch is one error on every rank (they all see the table);
* at each decision, the interval's statistics and the validation loss are averaged over the
  ranks (a non-finite value on any rank is a non-finite interval everywhere), so the guard's
  verdict, and a rollback, are the same on every rank;
* the policy's action is rank 0's, broadcast (a sampled action too); with identical inputs the
  decision path then writes identical hyperparameters everywhere;
* examples are counted globally: a step trains ``world_size`` x the rank's batch (the batch
  size the controller sets is the per-rank one, applied to a sampler sharded like
  ``DistributedSampler``).

In a single process (no process group, or a world of one) every method is a no-op.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import fields, replace
from typing import Any

import numpy as np
import torch

from rlhpo.errors import ControllerError
from rlhpo.training.monitor import IntervalStats

#: seconds a rank waits at the start for the controllers of the other ranks
START_TIMEOUT = 300.0
_STARTS = itertools.count(1)  # controllers started in this process: the same sequence on every rank


class RankSync:
    """The controller's collectives; see the module's docstring.

    :param group: the process group (None: the default group, when one is initialised)
    """

    def __init__(self, group: Any = None) -> None:
        import torch.distributed as dist

        self._dist = dist
        self.group = group
        on = dist.is_available() and dist.is_initialized()
        self.world = dist.get_world_size(group) if on else 1
        self.rank = dist.get_rank(group) if on else 0
        self.active = self.world > 1
        self._checked = False

    @property
    def is_main(self) -> bool:
        """Whether this process speaks for the run (rank 0, or no process group)."""
        return self.rank == 0

    def _device(self) -> torch.device:
        backend = self._dist.get_backend(self.group)
        return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")

    def shard(self) -> dict:
        """Keyword arguments for :class:`~rlhpo.training.sampler.MutableBatchSampler`: this rank's shard."""
        return {"num_replicas": self.world, "rank": self.rank} if self.active else {}

    def check_start(self, **values: float) -> None:
        """Gather ``values`` (the budget, the starting hyperparameters) from every rank; raise the
        same error on every rank when they differ. Once per controller."""
        if not self.active or self._checked:
            return
        self._checked = True
        self._arrive()
        mine = torch.tensor([float(v) for v in values.values()], dtype=torch.float64, device=self._device())
        every = [torch.empty_like(mine) for _ in range(self.world)]
        self._dist.all_gather(every, mine, group=self.group)
        table = torch.stack(every).cpu().numpy()
        bad = [name for i, name in enumerate(values) if not np.all(table[:, i] == table[0, i])]
        if bad:
            names = list(values)
            per_rank = "; ".join(
                f"{name}: " + ", ".join(f"rank {r} {table[r, names.index(name)]:g}" for r in range(self.world)) for name in bad
            )
            raise ControllerError(
                f"rlhpo Controller under torch.distributed: the ranks disagree on {', '.join(bad)} ({per_rank}); "
                "every rank must create its Controller with the same total_examples and start from the same "
                "hyperparameters (total_examples counts the examples of all ranks)"
            )

    def _arrive(self) -> None:
        """Wait until every rank's controller has started (the default group's store; skipped
        for another group or a store this torch does not expose)."""
        try:
            store = self._dist.distributed_c10d._get_default_store() if self.group is None else None
        except (AttributeError, RuntimeError):
            store = None
        if store is None:
            return
        key, deadline = f"rlhpo/controller_start/{next(_STARTS)}", time.monotonic() + START_TIMEOUT
        arrived = store.add(key, 1)
        while arrived < self.world:
            if time.monotonic() > deadline:
                raise ControllerError(
                    f"rlhpo Controller under torch.distributed: only {arrived} of {self.world} ranks started a "
                    f"Controller within {START_TIMEOUT:g} s; create it on every rank (the ranks decide together)"
                )
            time.sleep(0.02)
            arrived = store.add(key, 0)

    def reduce(self, stats: IntervalStats, val_loss: float) -> tuple[IntervalStats, float]:
        """The interval's statistics and validation loss over all ranks: means (a NaN or inf on one
        rank stays in the mean); the interval is non-finite everywhere when it is on any rank."""
        if not self.active:
            return stats, val_loss
        names = [f.name for f in fields(IntervalStats)]
        values = [float(getattr(stats, n)) for n in names] + [float(val_loss)]
        t = torch.tensor(values, dtype=torch.float64, device=self._device())
        self._dist.all_reduce(t, group=self.group)  # one sum for everything
        mean = (t / self.world).tolist()
        out = dict(zip(names, mean))
        out["steps"], out["nonfinite"] = int(round(out["steps"])), out["nonfinite"] > 0
        return replace(stats, **out), mean[-1]

    def agree(self, action: np.ndarray) -> np.ndarray:
        """Rank 0's action on every rank."""
        if not self.active:
            return action
        t = torch.as_tensor(np.asarray(action, dtype=np.float64), device=self._device()).clone()
        self._dist.broadcast(t, src=self._dist.get_global_rank(self.group, 0) if self.group is not None else 0, group=self.group)
        return t.cpu().numpy().astype(np.asarray(action).dtype)

