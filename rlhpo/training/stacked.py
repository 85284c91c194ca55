"""Many copies of one task's network trained as one batched computation.

:class:`StackedTrainer` holds the parameters of up to ``capacity`` networks of the same task as
stacked tensors (a leading row dimension) and trains them together with ``torch.func``
(``functional_call`` under ``vmap``, ``grad_and_value``): one forward and backward pass and
one optimizer update per step for all rows, each row with its own learning rate, batch size,
weight decay, initialisation and batch order.

Each row reproduces :class:`~rlhpo.training.session.TrainingSession` on the same task and seed: the
same initial weights, the same batches (its own :class:`~rlhpo.training.sampler.MutableBatchSampler`),
the same example budget arithmetic, the same probe statistics (summarised by
:func:`rlhpo.training.monitor.summarize_interval`) and the same optimizer. The optimizer update is
written out here because ``torch.optim`` takes one scalar learning rate per parameter group and
cannot give each slice of a stacked tensor its own; the rules are those of ``torch.optim.SGD``
(momentum 0.9), ``Adam`` and ``AdamW`` with default betas and eps, and a test checks the rows
against ``TrainingSession`` step for step.

Rows that differ in batch size take different numbers of steps per interval: a row whose
interval is done is masked out of the update (its weights and optimizer state do not change)
until the slowest row finishes. Batches of different sizes are padded to the largest and the
padding is weighted zero, so a row's loss is exactly its own minibatch mean.

A task is stackable when its model has no train-mode-dependent layers (dropout, batch norm),
runs under ``vmap`` and its loss is a mean over examples (:func:`rlhpo.training.rows.stack_check`);
:class:`rlhpo.training.rows.LoopTrainer` is the fallback for other tasks.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Callable, Optional

import torch
from torch.func import functional_call, vmap
from torch.nn.utils.rnn import pad_sequence

from rlhpo.tasks.base import Hyperparams, Split, Task
from rlhpo.training.monitor import IntervalStats, TrainingMonitor, summarize_interval
from rlhpo.training.sampler import MutableBatchSampler

log = logging.getLogger(__name__)

_MOMENTUM = 0.9  # rlhpo.training.session.make_optimizer's SGD momentum
_BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8  # torch.optim.Adam/AdamW defaults
_LOOP_ROWS = 2  # steps with at most this many rows skip vmap (cheaper for one or two networks)


@functools.lru_cache(maxsize=4096)
def _chunk_width(sizes: tuple[int, ...]) -> int:
    """The chunk width that minimises padded examples plus about two examples' worth of work
    per chunk (gathering its row's parameters), for minibatches of the given sizes."""

    def cost(w: int) -> int:
        return sum(-(-n // w) * (w + 2) for n in sizes)

    candidates = set(sizes) | {2**e for e in range(max(sizes).bit_length() + 1)}
    return min(sorted(candidates), key=cost)


class _Row:
    """Python-side state of one row: its sampler and example counters."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.sampler = MutableBatchSampler(n, batch_size, generator=torch.Generator().manual_seed(seed))
        self.examples_seen = 0
        self.target = 0
        self.steps = 0
        self.lr_schedule: Optional[Callable[[int, int], float]] = None  # as TrainingSession.lr_schedule


class StackedTrainer:
    """Up to ``capacity`` networks of one task, trained as one ``vmap``-ed computation (grows on
    demand). See the module docstring.

    Each row's parameters are one row of a flat ``(capacity, n_params)`` tensor (``functional_call``
    sees reshaped views of it), so the optimizer update, the masking and the probe statistics
    are a few whole-tensor operations whatever the number of layers.
    """

    def __init__(self, task: Task, capacity: int = 8, device: str = "cpu") -> None:
        self.task = task.validate()
        self.device = torch.device(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.model = task.model_fn().to(self.device)
        named = dict(self.model.named_parameters())
        self.layout = [(k, p.shape, p.numel()) for k, p in named.items()]
        n_params = sum(n for _, _, n in self.layout)
        self.x, self.y = task.train.x.to(self.device), task.train.y.to(self.device)
        self.splits = {"train": Split(self.x, self.y), "val": task.val.to(self.device), "test": task.test.to(self.device)}
        self.kind = task.optimizer
        slots = ("buf",) if self.kind == "sgd" else ("exp_avg", "exp_avg_sq")
        dtype = next(iter(named.values())).dtype
        # stacked state, one row per network
        self.flat = torch.zeros((0, n_params), dtype=dtype, device=self.device)  # the parameters
        self.state = {s: self.flat.clone() for s in slots}  # the optimizer state
        self.prev_update = self.flat.clone()  # the last probe step's update
        self.buffers = {k: b.new_zeros((0, *b.shape)) for k, b in self.model.named_buffers()}
        # per-row scalars, and the value a new row starts with
        self._scalars = {
            "lr": 0.0, "wd": 0.0, "t": 0.0, "cosine": 0.0, "grad_norm": math.nan, "update_ratio": math.nan,
            "prev_probe": -2.0, "params_finite": True, "mstep": 0.0,
        }  # fmt: skip
        for name, fill in self._scalars.items():
            setattr(self, name, torch.zeros(0, dtype=torch.bool if fill is True else dtype, device=self.device))
        self.capacity = 0
        self.rows: list[Optional[_Row]] = []
        self._free: list[int] = []
        self._grow(max(1, capacity))
        loss_fn, model = task.loss_fn, self.model
        self._forward = vmap(lambda p, b, x: functional_call(model, (p, b), (x,)), in_dims=(0, 0, None))
        self._forward_rows = vmap(lambda p, b, x: functional_call(model, (p, b), (x,)))
        self._per_example = vmap(lambda o, t: loss_fn(o.unsqueeze(0), t.unsqueeze(0)))
        self._loss = vmap(loss_fn, in_dims=(0, None))

    def _views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        views, offset = {}, 0
        for k, shape, n in self.layout:
            views[k] = flat[:, offset : offset + n].view(flat.shape[0], *shape)
            offset += n
        return views

    # -- rows ------------------------------------------------------------------------------
    def _grow(self, new_capacity: int) -> None:
        extra = new_capacity - self.capacity

        def extend(t: torch.Tensor, fill: float | bool = 0.0) -> torch.Tensor:
            return torch.cat([t, torch.full((extra, *t.shape[1:]), fill, dtype=t.dtype, device=t.device)])

        self.flat, self.prev_update = extend(self.flat), extend(self.prev_update)
        for stacks in (self.state, self.buffers):
            for k in stacks:
                stacks[k] = extend(stacks[k])
        for name, fill in self._scalars.items():
            setattr(self, name, extend(getattr(self, name), fill))
        self._free.extend(range(self.capacity, new_capacity))
        self.rows.extend([None] * extra)
        self.capacity = new_capacity

    def add_row(self, seed: int) -> int:
        """A new network, initialised as ``TrainingSession(task, seed=seed)`` would."""
        if not self._free:
            self._grow(2 * self.capacity)
        self._free.sort()
        row = self._free.pop(0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = self.task.model_fn().to(self.device)
        with torch.no_grad():
            self.flat[row] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
            for s in self.state.values():
                s[row] = 0
            self.prev_update[row] = 0
            for k, b in model.named_buffers():
                self.buffers[k][row] = b
        for name, fill in self._scalars.items():
            getattr(self, name)[row] = fill
        hp = self.task.default_hparams
        self.lr[row], self.wd[row] = hp.lr, hp.weight_decay
        self.rows[row] = _Row(len(self.x), hp.batch_size, int(seed))
        return row

    def remove_row(self, row: int) -> None:
        if self.rows[row] is not None:
            self.rows[row] = None
            self._free.append(row)

    def live_rows(self) -> int:
        return sum(r is not None for r in self.rows)

    def _row(self, row: int) -> _Row:
        r = self.rows[row]
        if r is None:
            raise KeyError(f"row {row} of the trainer for task {self.task.name!r} is not in use")
        return r

    def hparams(self, row: int) -> Hyperparams:
        return Hyperparams(lr=float(self.lr[row]), batch_size=self._row(row).sampler.batch_size, weight_decay=float(self.wd[row]))

    def set_hparams(self, row: int, hp: Hyperparams) -> None:
        self._row(row).sampler.batch_size = hp.batch_size
        self.lr[row], self.wd[row] = float(hp.lr), float(hp.weight_decay)

    def set_lr_schedule(self, row: int, fn: Optional[Callable[[int, int], float]]) -> None:
        """Row ``row``'s per-step lr (as :attr:`TrainingSession.lr_schedule`); None: its lr holds."""
        self._row(row).lr_schedule = fn

    def examples_seen(self, row: int) -> int:
        return self._row(row).examples_seen

    def capture_row(self, row: int) -> dict:
        """A row's training state (weights, buffers, optimizer state, batch order), as
        :meth:`TrainingSession.capture` holds a session's; never its example clock."""
        with torch.no_grad():
            return {
                "flat": self.flat[row].clone(),
                "state": {k: v[row].clone() for k, v in self.state.items()},
                "buffers": {k: v[row].clone() for k, v in self.buffers.items()},
                "t": self.t[row].clone(),
                "sampler": self._row(row).sampler.state_dict(),
            }

    def restore_row(self, row: int, state: dict) -> None:
        """Put back a row's training state; its hyperparameters and example clock stay."""
        with torch.no_grad():
            self.flat[row] = state["flat"]
            for k, v in state["state"].items():
                self.state[k][row] = v
            for k, v in state["buffers"].items():
                self.buffers[k][row] = v
            self.t[row] = state["t"]
        sampler = self._row(row).sampler
        batch_size = sampler.batch_size
        sampler.load_state_dict(state["sampler"])
        sampler.batch_size = batch_size

    # -- training --------------------------------------------------------------------------
    def train_until(self, targets: dict[int, int]) -> dict[int, IntervalStats]:
        """Train each given row until it has seen its target number of examples (as
        :meth:`TrainingSession.train_until`); one interval's statistics per row."""
        budget = self.task.budget_examples
        rows = {i: self._row(i) for i in targets}
        for i, r in rows.items():
            r.target = max(r.target, min(int(targets[i]), budget))
        n_steps = dict.fromkeys(rows, 0)
        losses: list[torch.Tensor] = []
        while True:
            batch: dict[int, torch.Tensor] = {}
            probe: list[int] = []
            scheduled: list[int] = []
            lrs: list[float] = []
            for i, r in rows.items():
                if r.examples_seen < r.target:
                    idx = r.sampler.next_batch()
                    if r.examples_seen + idx.shape[0] > budget:  # the run's last batch: never past the budget
                        idx = idx[: budget - r.examples_seen]
                    batch[i] = idx
                    if r.lr_schedule is not None:  # the per-step schedule, as TrainingSession applies it
                        scheduled.append(i)
                        lrs.append(r.lr_schedule(r.examples_seen, int(idx.shape[0])))
                    if TrainingMonitor.should_probe(r.target - r.examples_seen, r.sampler.batch_size):
                        probe.append(i)
            if not batch:
                break
            if scheduled:
                self.lr[torch.tensor(scheduled, device=self.device)] = torch.tensor(lrs, dtype=self.lr.dtype, device=self.device)
            losses.append(self._step(batch, probe))
            for i, idx in batch.items():
                r = rows[i]
                r.examples_seen += int(idx.shape[0])
                r.steps += 1
                n_steps[i] += 1
        table = torch.stack(losses).T.tolist() if losses else [[] for _ in range(self.capacity)]  # one sync
        grad_norm, ratio, cosine, finite = (t.tolist() for t in (self.grad_norm, self.update_ratio, self.cosine, self.params_finite))
        stats = {i: summarize_interval(table[i][: n_steps[i]], grad_norm[i], ratio[i], cosine[i], finite[i]) for i in rows}
        self.grad_norm.fill_(math.nan)
        self.update_ratio.fill_(math.nan)
        self.cosine.fill_(0.0)
        self.params_finite.fill_(True)
        return stats

    def _step(self, batch: dict[int, torch.Tensor], probe_rows: list[int]) -> torch.Tensor:
        """One optimizer step for the rows in ``batch``; every row's minibatch loss (0 elsewhere).

        Only the rows in ``batch`` are gathered, trained and written back, so rows that finished
        their interval (larger batches take fewer steps) cost nothing. Minibatches are cut into
        chunks of one width (see :func:`_chunk_width`) and ``vmap`` runs over chunks, each with
        its row's parameters: rows of very different batch sizes pad at most one chunk each.
        """
        rows = sorted(batch)
        if len(rows) <= _LOOP_ROWS:
            return self._step_rows(rows, batch, probe_rows)
        width = _chunk_width(tuple(int(batch[i].shape[0]) for i in rows))
        pieces, owner, counts, scale = [], [], [], []
        for j, i in enumerate(rows):
            idx = batch[i]
            n = int(idx.shape[0])
            for start in range(0, n, width):
                pieces.append(idx[start : start + width])
                owner.append(j)
                counts.append(min(width, n - start))
                scale.append(1.0 / n)
        index = pad_sequence(pieces, batch_first=True, padding_value=0)
        if index.shape[1] < width:
            index = torch.nn.functional.pad(index, (0, width - index.shape[1]))
        weight = (torch.arange(width).unsqueeze(0) < torch.tensor(counts).unsqueeze(1)) * torch.tensor(scale).unsqueeze(1)
        act, owner_t, probe = torch.tensor(rows), torch.tensor(owner), torch.tensor([i in probe_rows for i in rows])
        if self.device.type != "cpu":
            index, weight, act, owner_t, probe = (t.to(self.device) for t in (index, weight, act, owner_t, probe))
        leaf = self.flat[act].requires_grad_()  # a copy: the active rows' parameters
        buffers = {name: b[act[owner_t]] for name, b in self.buffers.items()}
        out = self._forward_rows(self._views(leaf[owner_t]), buffers, self.x[index])
        per_example = self._per_example(out.flatten(0, 1), self.y[index].flatten(0, 1)).view(len(owner), width)
        chunk_loss = torch.where(weight > 0, per_example, 0.0).mul(weight).sum(1)
        loss = torch.zeros(len(rows), dtype=chunk_loss.dtype, device=self.device).index_add(0, owner_t, chunk_loss)
        loss.sum().backward()
        return self._apply(rows, act, leaf, loss, probe, bool(probe_rows))

    def _step_rows(self, rows: list[int], batch: dict[int, torch.Tensor], probe_rows: list[int]) -> torch.Tensor:
        """:meth:`_step` for a few rows (the tail of an interval, where the rows with the smallest
        batches are left): a plain forward per row, without ``vmap``'s fixed cost."""
        act = torch.tensor(rows, device=self.device)
        probe = torch.tensor([i in probe_rows for i in rows], device=self.device)
        leaf = self.flat[act].requires_grad_()
        views = self._views(leaf)
        losses = []
        for j, i in enumerate(rows):
            idx = batch[i].to(self.device)
            params = {k: v[j] for k, v in views.items()}
            buffers = {k: b[i] for k, b in self.buffers.items()}
            losses.append(self.task.loss_fn(functional_call(self.model, (params, buffers), (self.x[idx],)), self.y[idx]))
        loss = torch.stack(losses)
        loss.sum().backward()
        return self._apply(rows, act, leaf, loss, probe, bool(probe_rows))

    def _apply(
        self, rows: list[int], act: torch.Tensor, leaf: torch.Tensor, loss: torch.Tensor, probe: torch.Tensor, any_probe: bool
    ) -> torch.Tensor:
        """The optimizer step and probes of rows ``act`` from their gradients in ``leaf.grad``."""
        grad = leaf.grad
        assert grad is not None
        with torch.no_grad():
            p = leaf.detach()
            t = self.t[act]
            if any_probe:
                self.grad_norm[act] = torch.where(probe, torch.linalg.vector_norm(grad, dim=1), self.grad_norm[act])
            new = self._update(act, p, grad, t)
            # the monitor's step counter (TrainingMonitor._step): unlike the optimizer's t, a
            # rollback does not turn it back, so "successive probe steps" mean what they mean
            # for a single session
            mstep = self.mstep[act]
            if any_probe:
                self._probe(act, p, new, probe, mstep)
            self.flat[act] = new
            self.t[act], self.mstep[act] = t + 1, mstep + 1
            full = torch.zeros(self.capacity, dtype=loss.dtype, device=self.device)
            full[act] = loss.detach()
        return full

    def _update(self, act: torch.Tensor, p: torch.Tensor, g: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The optimizer step of rows ``act`` (parameters ``p``, gradients ``g``, steps taken
        ``t``): torch.optim's SGD(momentum=0.9) / Adam / AdamW rules, per-row lr and wd."""
        st = self.state
        lr, wd = self.lr[act].unsqueeze(1), self.wd[act].unsqueeze(1)
        if self.kind == "sgd":
            d = g + wd * p
            buf = torch.where((t == 0).unsqueeze(1), d, _MOMENTUM * st["buf"][act] + d)
            st["buf"][act] = buf
            return p - lr * buf
        if self.kind == "adamw":
            base, d = p * (1 - lr * wd), g
        else:
            base, d = p, g + wd * p
        t1 = (t + 1).unsqueeze(1)
        m = st["exp_avg"][act].lerp_(d, 1 - _BETA1)
        v = st["exp_avg_sq"][act].mul_(_BETA2).addcmul_(d, d, value=1 - _BETA2)
        st["exp_avg"][act], st["exp_avg_sq"][act] = m, v
        return base - (lr / (1 - _BETA1**t1)) * m / (v.sqrt() / (1 - _BETA2**t1).sqrt() + _EPS)

    def _probe(self, act: torch.Tensor, old: torch.Tensor, new: torch.Tensor, probe: torch.Tensor, step: torch.Tensor) -> None:
        """Update-to-parameter ratio and cosine of successive updates, as TrainingMonitor;
        ``step`` is the rows' optimizer steps before this one (the monitor's step counter)."""
        update = new - old
        unorm, pnorm = torch.linalg.vector_norm(update, dim=1), torch.linalg.vector_norm(new, dim=1)
        self.params_finite[act] = torch.where(probe, self.params_finite[act] & torch.isfinite(pnorm), self.params_finite[act])
        self.update_ratio[act] = torch.where(probe, unorm / pnorm.clamp_min(1e-12), self.update_ratio[act])
        prev = self.prev_update[act]
        consecutive = probe & (self.prev_probe[act] == step - 1)
        denom = unorm * torch.linalg.vector_norm(prev, dim=1)
        cos = torch.where(denom > 0, (update * prev).sum(1) / denom, torch.zeros_like(denom))
        self.cosine[act] = torch.where(consecutive, cos, self.cosine[act])
        self.prev_update[act] = torch.where(probe.unsqueeze(1), update, prev)
        self.prev_probe[act] = torch.where(probe, step, self.prev_probe[act])

    @torch.no_grad()
    def evaluate(self, rows: list[int], split: str = "val") -> dict[int, tuple[float, float]]:
        """Loss and metric of each row on a split, as :meth:`TrainingSession.evaluate`."""
        data = self.splits.get(split)
        if data is None:
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        m = self.task.eval_max_examples
        x, y = data.x[:m], data.y[:m]
        out = self._forward(self._views(self.flat), self.buffers, x)
        losses = self._loss(out, y).tolist()
        result = {}
        for i in rows:
            loss = losses[i]
            metric = float(self.task.metric_fn(out[i], y)) if math.isfinite(loss) else float("nan")
            result[i] = (loss, metric)
        return result
