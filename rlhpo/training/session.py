"""The one training loop: train a task for N examples with given hyperparameters.

It knows nothing of reinforcement learning. The environment, the baselines, the evaluation
harness and ``rlhpo.apply`` all train through :class:`TrainingSession`; a user's own loop
under :class:`rlhpo.Controller` reports to the same :class:`~rlhpo.training.monitor.TrainingMonitor`.
"""

from __future__ import annotations

import math
import time
import weakref
from typing import Callable, Optional

import torch

from rlhpo.errors import TaskError
from rlhpo.tasks.base import Hyperparams, Task
from rlhpo.training.hparams import write_hparams, write_lr
from rlhpo.training.monitor import IntervalStats, TrainingMonitor
from rlhpo.training.sampler import MutableBatchSampler
from rlhpo.training.snapshot import LoopState

# -- validating a task once -------------------------------------------------------------------
# Task.validate() scans every split for NaN and inf: milliseconds on the larger data sets, a few
# per cent of a tiny task's whole episode, and the environment, the baselines and the benchmarks
# train one task object again and again. So a task that passed is remembered together with what
# validate() reads: the identity of every field it checks, and the version counter, storage and
# shape of every data tensor (an in-place write bumps the version, a new tensor or split changes
# an identity). Writes that bypass torch (through a numpy array sharing a tensor's memory) are not
# seen; the first-batch loss check still names a task whose data turned non-finite that way.
_VALID_TASKS: dict[int, tuple[weakref.ref, tuple, tuple]] = {}


def _task_state(task: Task) -> tuple[tuple, tuple]:
    """What :meth:`Task.validate` depends on: objects (compared by identity) and tensor metadata."""
    objects: list = [task.model_fn, task.loss_fn, task.metric_fn, task.default_hparams]
    objects += [task.budget_examples, task.eval_max_examples, task.optimizer]
    meta: list = []
    for split in (task.train, task.val, task.test):
        for t in (split, getattr(split, "x", None), getattr(split, "y", None)):
            objects.append(t)
            if isinstance(t, torch.Tensor):
                meta.append((t._version, t.data_ptr(), t.shape, t.stride(), t.dtype, t.device))
    return tuple(objects), tuple(meta)


def validate_task(task: Task) -> Task:
    """``task.validate()``, skipped when this task object passed before and nothing it checks
    changed since (a subclass that overrides ``validate`` is always checked)."""
    if type(task).validate is not Task.validate:
        return task.validate()
    objects, meta = _task_state(task)
    known = _VALID_TASKS.get(id(task))
    if known is not None and known[0]() is task and known[2] == meta and all(a is b for a, b in zip(known[1], objects)):
        return task
    task.validate()
    remember_valid(task, (objects, meta))
    return task


def remember_valid(task: Task, state: Optional[tuple[tuple, tuple]] = None) -> None:
    """Record that ``task`` was just validated (as :meth:`TaskFamily.sample` does for its tasks)."""
    key = id(task)
    objects, meta = _task_state(task) if state is None else state
    # the entry holds the checked objects, so their identities cannot be reused while it lives;
    # it goes when the task does
    _VALID_TASKS[key] = (weakref.ref(task, lambda _, key=key: _VALID_TASKS.pop(key, None)), objects, meta)


def make_optimizer(kind: str, params, hparams: Hyperparams) -> torch.optim.Optimizer:
    if kind == "sgd":
        return torch.optim.SGD(params, lr=hparams.lr, momentum=0.9, weight_decay=hparams.weight_decay)
    if kind == "adam":
        return torch.optim.Adam(params, lr=hparams.lr, weight_decay=hparams.weight_decay)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=hparams.lr, weight_decay=hparams.weight_decay)
    raise TaskError(f"optimizer must be one of ('sgd', 'adam', 'adamw'), got {kind!r}")


StepHook = Callable[["TrainingSession"], None]
#: ``lr_schedule(seen, n)``: the lr of the optimizer step that trains examples ``[seen, seen + n)``
LrSchedule = Callable[[int, int], float]


class BudgetClock:
    """The example budget of a run over ``self.task``, and whether ``self.examples_seen`` spent it."""

    task: Task
    examples_seen: int

    @property
    def budget(self) -> int:
        return self.task.budget_examples

    @property
    def done(self) -> bool:
        return self.examples_seen >= self.task.budget_examples


class TrainingSession(BudgetClock):
    """Trains one task, an interval at a time, with hyperparameters that may change between steps.

    :param task: the task to train
    :param hparams: starting hyperparameters (the task's defaults if omitted)
    :param device: ``"cpu"`` or ``"cuda"``/``"cuda:N"``
    :param seed: fixes the model initialisation and the batch order
    """

    def __init__(self, task: Task, hparams: Optional[Hyperparams] = None, device: str = "cpu", seed: int = 0) -> None:
        validate_task(task)
        self.task = task
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device='cuda' was asked for but torch sees no CUDA device; use device='cpu'")
        self.seed = int(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = task.model_fn()
        if not isinstance(model, torch.nn.Module):
            raise TaskError(f"task {task.name!r}: model_fn must return a torch.nn.Module, got {type(model).__name__}")
        self.model = model.to(self.device)
        self.train_split = task.train.to(self.device)
        self.val_split = task.val.to(self.device)
        self.test_split = task.test.to(self.device)
        hp = (hparams or task.default_hparams).validate()
        self.optimizer = make_optimizer(task.optimizer, self.model.parameters(), hp)
        self.sampler = MutableBatchSampler(
            len(self.train_split), hp.batch_size, generator=torch.Generator().manual_seed(self.seed)
        )
        self.monitor = TrainingMonitor(list(self.model.parameters()))
        self.examples_seen = 0
        self.steps = 0
        self.last_loss: Optional[torch.Tensor] = None
        #: wall-clock seconds spent in :meth:`train_until` so far (the training loop with its step
        #: hooks; not evaluation, nor anything between intervals): a run's time to a result
        self.train_seconds = 0.0
        self._target = 0
        self._checked_loss = False
        #: set by a per-step schedule (the decision path's base schedule, the calibrated baseline):
        #: the loop writes ``lr_schedule(seen, n)`` into every param group before each optimizer step
        self.lr_schedule: Optional[LrSchedule] = None

    # -- hyperparameters -------------------------------------------------------------------
    @property
    def hparams(self) -> Hyperparams:
        g = self.optimizer.param_groups[0]
        return Hyperparams(lr=float(g["lr"]), batch_size=self.sampler.batch_size, weight_decay=float(g["weight_decay"]))

    def set_hparams(self, hparams: Hyperparams) -> Hyperparams:
        """Apply ``hparams`` from the next step on; returns the values in effect (the batch size
        is clamped to the training set)."""
        write_hparams(self.optimizer, hparams.validate(), self.sampler)
        return self.hparams


    # -- training --------------------------------------------------------------------------
    def train(
        self,
        n_examples: int,
        before_step: Optional[StepHook] = None,
        after_step: Optional[StepHook] = None,
    ) -> IntervalStats:
        """Train on ``n_examples`` more examples; see :meth:`train_until`."""
        if n_examples < 0:
            raise ValueError(f"n_examples must be >= 0, got {n_examples}")
        return self.train_until(self._target + int(n_examples), before_step, after_step)

    def train_until(
        self,
        target_examples: int,
        before_step: Optional[StepHook] = None,
        after_step: Optional[StepHook] = None,
    ) -> IntervalStats:
        """Train until ``target_examples`` examples in all were seen (never past the budget) and
        summarise the interval.

        Steps run while the examples seen are below the running target, so an overshoot of at
        most one batch in one interval is paid back in the next one; the run's last batch is
        cut short so the total is exactly the budget, whatever the batch sizes were.

        :param before_step: called after ``backward()`` and before ``optimizer.step()``
            (hypergradient descent reads gradients here)
        :param after_step: called after ``optimizer.step()`` (per-step lr schedules go here)
        """
        budget = self.task.budget_examples
        target = self._target = max(self._target, min(int(target_examples), budget))
        # the loop runs once per optimizer step: what it calls is looked up once, here
        model, loss_fn, monitor, sampler = self.model, self.task.loss_fn, self.monitor, self.sampler
        x_all, y_all = self.train_split.x, self.train_split.y
        next_batch, zero_grad, opt_step = sampler.next_batch, self.optimizer.zero_grad, self.optimizer.step
        should_probe, monitor_before, monitor_after = monitor.should_probe, monitor.before_step, monitor.after_step
        should_measure = monitor.should_measure
        device = None if self.device.type == "cpu" else self.device
        hooked = before_step is not None or after_step is not None
        lr_at, optimizer = self.lr_schedule, self.optimizer
        started = time.perf_counter()
        model.train()
        while self.examples_seen < target:
            seen = self.examples_seen
            idx = next_batch()
            n = len(idx)
            if seen + n > budget:  # the last batch of the run: never past the budget
                n = budget - seen
                idx = idx[:n]
            if device is not None:
                idx = idx.to(device, non_blocking=True)
            if self._checked_loss:
                loss = loss_fn(model(x_all[idx]), y_all[idx])
            else:  # the first step: a malformed task fails here, with its name
                loss = self._first_loss(x_all[idx], y_all[idx])
            zero_grad(set_to_none=True)
            loss.backward()
            remaining = target - seen
            probe = False
            if should_measure(remaining, sampler.batch_size):  # the interval's last steps: measured
                probe = should_probe(remaining, sampler.batch_size)
                # a probe step that does not end the interval is followed by another (fewer examples
                # remain, the batch size is the same); only hooks could change the parameters between
                monitor_before(probe, followed=probe and n < remaining and not hooked, batch_size=n)
            if before_step is not None:
                before_step(self)
            if lr_at is not None:
                write_lr(optimizer, lr_at(seen, n))
            opt_step()
            monitor_after(loss, probe)
            self.last_loss = loss  # the step's training loss (a tensor; read by after_step hooks)
            self.examples_seen = seen + n
            self.steps += 1
            if after_step is not None:
                after_step(self)
        self.train_seconds += time.perf_counter() - started
        return monitor.summary()

    def _first_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        try:
            loss = self.task.loss_fn(self.model(x), y)
        except (RuntimeError, ValueError, IndexError, TypeError) as e:
            raise TaskError(
                f"task {self.task.name!r}: the model and loss cannot run on a training batch of inputs "
                f"{tuple(x.shape)} and targets {tuple(y.shape)}: {type(e).__name__}: {e}"
            ) from e
        self._check_loss(loss)
        if self.examples_seen == 0 and not bool(torch.isfinite(loss.detach())):
            # before any update the hyperparameters cannot be the cause: the model, data or loss is
            raise TaskError(
                f"task {self.task.name!r}: the loss is {float(loss.detach())} on the first training batch, before any "
                "update; the model's initial outputs or loss_fn produce it (check the model and loss_fn)"
            )
        return loss

    def _check_loss(self, loss: object) -> None:
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0 or not loss.is_floating_point():
            shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise TaskError(f"task {self.task.name!r}: loss_fn must return a scalar float tensor, got {shape}")
        if not loss.requires_grad:
            raise TaskError(f"task {self.task.name!r}: loss_fn output does not depend on the model parameters")
        self._checked_loss = True

    @torch.no_grad()
    def evaluate(self, split: str = "val") -> tuple[float, float]:
        """Loss and metric on (at most ``task.eval_max_examples`` of) a split: "train", "val" or "test"."""
        data = {"train": self.train_split, "val": self.val_split, "test": self.test_split}.get(split)
        if data is None:
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        m = self.task.eval_max_examples
        x, y = data.x[:m], data.y[:m]
        self.model.eval()
        try:
            out = self.model(x)
            loss_t = self.task.loss_fn(out, y)
        except (RuntimeError, ValueError, IndexError, TypeError) as e:
            raise TaskError(
                f"task {self.task.name!r}: the model and loss cannot run on the {split} split "
                f"(inputs {tuple(x.shape)}, targets {tuple(y.shape)}): {type(e).__name__}: {e}"
            ) from e
        finally:
            self.model.train()
        if not isinstance(loss_t, torch.Tensor) or loss_t.numel() != 1:
            shape = tuple(loss_t.shape) if isinstance(loss_t, torch.Tensor) else type(loss_t).__name__
            raise TaskError(f"task {self.task.name!r}: loss_fn must return a scalar on the {split} split, got {shape}")
        loss = float(loss_t)
        metric = float("nan")
        if math.isfinite(loss):
            try:
                metric = float(self.task.metric_fn(out, y))
            except (RuntimeError, ValueError, IndexError, TypeError) as e:
                raise TaskError(
                    f"task {self.task.name!r}: metric_fn must return a number for the {split} split: {type(e).__name__}: {e}"
                ) from e
        return loss, metric

    # -- snapshots (the guard) and checkpoints ---------------------------------------------
    def capture(self) -> dict:
        """The training state (weights and buffers, optimizer state, batch order) in host memory,
        for :class:`rlhpo.control.guard.Guard`; not the example clock, which a rollback never refunds."""
        return LoopState(self.optimizer, self.model, self.sampler).capture()

    def restore(self, state: dict) -> None:
        """Put back a :meth:`capture`; the hyperparameters in effect and the clock stay."""
        LoopState(self.optimizer, self.model, self.sampler).restore(state)

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "examples_seen": self.examples_seen,
            "steps": self.steps,
            "train_seconds": self.train_seconds,
            "target": self._target,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.examples_seen = state["examples_seen"]
        self.steps = state["steps"]
        self.train_seconds = float(state.get("train_seconds", 0.0))  # absent in checkpoints before it existed
        self._target = state["target"]
