"""The batch sampler whose batch size a controller may change while a loader iterates it."""

from __future__ import annotations

import math
from collections import deque
from typing import Iterator, Optional

import torch
from torch.utils.data import Sampler


class MutableBatchSampler(Sampler[torch.Tensor]):
    """A batch sampler whose ``batch_size`` may change between batches.

    ``DataLoader.batch_size`` cannot change after construction; pass this as
    ``DataLoader(dataset, batch_sampler=sampler)`` and set ``sampler.batch_size`` instead.
    Each iteration is one epoch over a fresh permutation; batches are int64 index tensors. An
    epoch left unfinished is resumed by the next ``iter()`` (and survives ``state_dict()``).

    :param n: dataset size
    :param batch_size: initial batch size (clamped to ``n``)
    :param generator: torch generator for the permutations (a seed fixes the order)
    :param drop_last: drop the last, smaller batch of each epoch
    :param num_replicas: shard each epoch over this many ranks, as ``DistributedSampler`` does
        (every rank draws the same permutation, so give every rank the same seed, and keeps
        every ``num_replicas``-th index from its ``rank``; the tail that does not divide evenly
        is left out, so every rank has as many batches)
    :param rank: this rank's shard
    """

    def __init__(
        self, n: int, batch_size: int, generator: Optional[torch.Generator] = None, drop_last: bool = False,
        num_replicas: int = 1, rank: int = 0,
    ):
        if not (num_replicas >= 1 and 0 <= rank < num_replicas):
            raise ValueError(f"MutableBatchSampler: rank must be in [0, num_replicas), got rank={rank}, num_replicas={num_replicas}")
        if n < num_replicas:
            raise ValueError(f"MutableBatchSampler needs at least one example per rank, got n={n} for {num_replicas} ranks")
        self.total, self.num_replicas, self.rank = int(n), int(num_replicas), int(rank)
        self.n = self.total // self.num_replicas  # this rank's examples per epoch
        self.generator = generator
        self.drop_last = drop_last
        self.batch_size = batch_size
        self._perm: Optional[torch.Tensor] = None
        self._pos = 0
        self._stream: Optional[Iterator[torch.Tensor]] = None
        #: the size of the batch yielded last (None: none yet); a loader with workers prefetches,
        #: so it can be ahead of the batch being trained
        self.last_batch_size: Optional[int] = None
        #: when a loader sets it to a deque, the size of every batch yielded is appended, in order
        #: (a loader that hands batches out in order pops one per batch: exact with workers too)
        self.yielded: Optional[deque] = None

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        value = int(value)
        if value < 1:
            raise ValueError(f"batch_size must be >= 1, got {value}")
        self._batch_size = min(value, self.n)

    def __iter__(self) -> Iterator[torch.Tensor]:
        # The epoch's permutation and position live on the sampler, not in the generator frame,
        # so a checkpoint taken mid-epoch resumes at the same batch.
        if self._perm is None or self._pos >= self.n:
            self._perm = torch.randperm(self.total, generator=self.generator)[self.rank :: self.num_replicas][: self.n]
            self._pos = 0
        while self._pos < self.n:
            bs = self._batch_size  # read per batch: a change takes effect at the next batch
            if self.drop_last and self._pos + bs > self.n:
                break
            batch = self._perm[self._pos : self._pos + bs]
            self._pos += bs
            self.last_batch_size = n = len(batch)  # an epoch's last batch may be smaller
            if self.yielded is not None:
                self.yielded.append(n)
            yield batch
        self._perm = None

    def next_batch(self) -> torch.Tensor:
        """The next batch, starting a new epoch when one ends: for loops that count examples,
        not epochs (the training session, the batched env's rows)."""
        if self._stream is None:
            self._stream = iter(self)
        try:
            return next(self._stream)
        except StopIteration:
            self._stream = iter(self)
            return next(self._stream)

    def __len__(self) -> int:
        return self.n // self._batch_size if self.drop_last else math.ceil(self.n / self._batch_size)

    def state_dict(self) -> dict:
        return {
            "batch_size": self._batch_size,
            "generator": None if self.generator is None else self.generator.get_state(),
            "perm": self._perm,
            "pos": self._pos,
        }

    def load_state_dict(self, state: dict) -> None:
        self.batch_size = state["batch_size"]
        if self.generator is not None and state.get("generator") is not None:
            self.generator.set_state(state["generator"])
        self._perm, self._pos = state.get("perm"), state.get("pos", 0)
        self._stream = None  # resume at the restored position
