"""Reference runs for the ``reference`` reward: what the policy's null action does on the same task.

A reference run trains the episode's task from the episode's start with the same network
initialisation and batch order, through the same environment code with every action zero: under
the ``cosine`` base schedule that is warm-up + cosine from the user's start, the strongest cheap
baseline (LHOPT measures its reward against an Adam baseline the same way). The reward of a step
is the change of the episode's *lead* over the reference at the same examples seen, so an
episode's return is its final lead: a bad start no longer leaves free reward to collect, and a
policy earns only what it adds to the schedule it would otherwise run.

A reference curve depends on the task, the start, the seed and the environment's rules; it is
computed once and kept in memory, and in ``reference_cache`` (one small JSON file per curve,
written atomically) when several processes share the work.

A reference run can also keep its *snapshots*: the whole state (weights, optimizer, batch order,
decision path, guard, optimizer steps) at the start of chosen intervals, after the decision
that sets the interval's values. A snapshot episode (``env.snapshot_fraction``) starts from one
and is scored against the reference's continuation from the same state (kept in memory, and
as ``<key>.snap<k>.pt`` beside the curve in ``reference_cache``).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from rlhpo.control.features import loss_gap
from rlhpo.tasks import Task


@dataclass
class Reference:
    """A reference run's validation loss after each interval, and how to compare with it.

    :param curve: the validation loss in effect after each interval (the guard's verdict)
    :param examples: the examples seen at each point of ``curve``
    :param positive: every loss of the curve is positive: leads are log ratios
    :param scale: the curve's range (first - lowest): leads are differences over it otherwise
    :param steps: the optimizer steps taken at each point of ``curve`` (the time-to-result reward)
    """

    curve: list[float]
    examples: list[int]
    positive: bool
    scale: float
    steps: Optional[list[int]] = None

    def steps_to_result(self) -> Optional[int]:
        """The optimizer steps the reference took to first reach its own final validation loss
        (None: no steps recorded, or no finite final loss)."""
        if self.steps is None or not self.curve or not math.isfinite(self.curve[-1]):
            return None
        final = self.curve[-1]
        return next(s for v, s in zip(self.curve, self.steps) if v <= final)

    def at(self, examples: int) -> float:
        """The reference's validation loss at ``examples`` seen: its last point at or before them
        (a run whose batch overshoots an interval's end is compared at matched progress)."""
        k = 0
        while k + 1 < len(self.examples) and self.examples[k + 1] <= examples:
            k += 1
        return self.curve[k]

    @classmethod
    def of(cls, values: list[float], examples: Optional[list[int]] = None, steps: Optional[list[int]] = None) -> "Reference":
        curve: list[float] = []
        for v in values:  # a lost reference run keeps its last finite loss
            curve.append(v if math.isfinite(v) else (curve[-1] if curve else math.inf))
        finite = [v for v in curve if math.isfinite(v)]
        positive = bool(finite) and min(finite) > 0
        scale = max(finite[0] - min(finite), 1e-6 * (1.0 + abs(finite[0]))) if finite else 1.0
        return cls(curve, list(examples) if examples is not None else list(range(len(curve))), positive, scale,
                   list(steps) if steps is not None else None)


def lead(reference: Reference, examples: int, val: float) -> float:
    """How far a run whose validation loss at ``examples`` seen is ``val`` is ahead of the
    reference there: ``log(reference / val)`` for positive losses, else ``(reference - val) / scale``."""
    r = reference.at(examples)
    if not (math.isfinite(r) and math.isfinite(val)):
        return 0.0
    return loss_gap(r, val, reference.positive, reference.scale)  # the features' comparison of two losses


class ReferenceCurves:
    """Computes and caches reference curves for the episodes of one environment.

    :param config: the environment configuration whose rules the reference follows
    :param env_type: the environment class reference runs train in, one network at a time
        (:class:`~rlhpo.envs.HyperparamControlEnv`, also for the batched env's slots: every
        vector env computes the same reference curves)
    :param cache_dir: a directory shared between processes, or None (memory only)
    """

    def __init__(self, config: Any, env_type: Callable[[Any], Any], cache_dir: Optional[str] = None) -> None:
        self._env_type = env_type
        self._config = replace(config, reward="delta", reference_cache=None, sensible_fraction=0.0, snapshot_fraction=0.0)
        self._memory: dict[str, Reference] = {}
        self._snapshots: dict[tuple[str, int], bytes] = {}  # (key, interval) -> the state, serialised (no cache dir)
        self._env: Any = None  # the environment reference runs train in, built at the first one
        self._dir = Path(cache_dir) if cache_dir else None
        self.computed = 0  # reference runs this object trained (not read from a cache)

    def key(self, task: Task, seed: int) -> str:
        c = self._config
        what = {
            "task": task.name,
            "optimizer": task.optimizer,
            "start": asdict(task.default_hparams),
            "budget": task.budget_examples,
            "seed": int(seed),
            **asdict(c.decision_spec()),  # the rules the reference run follows
        }
        return hashlib.sha1(json.dumps(what, sort_keys=True).encode()).hexdigest()[:20]

    def curve(self, task: Task, seed: int, snapshots: tuple[int, ...] = ()) -> Reference:
        """The reference curve of ``task`` from ``seed``; with ``snapshots`` (interval indices),
        the run also keeps its state at the start of each (read with :meth:`snapshot`)."""
        key = self.key(task, seed)
        missing = tuple(k for k in snapshots if not self._has_snapshot(key, k))
        if key in self._memory and not missing:
            return self._memory[key]
        path = self._dir / f"{key}.json" if self._dir is not None else None
        run: Optional[dict] = None
        if path is not None and path.exists() and not missing:
            try:
                run = json.loads(path.read_text())
                run = {"curve": [float(v) for v in run["curve"]], "examples": [int(e) for e in run["examples"]],
                       "steps": [int(s) for s in run["steps"]]}
            except (OSError, ValueError, KeyError, TypeError):
                run = None  # a damaged file, or one written before steps were kept: compute again
        if run is None:
            run, states = self._run(task, seed, snapshots)
            self.computed += 1
            for k in snapshots:  # before the curve: a curve on disk promises its snapshots
                self._put_snapshot(key, k, states.get(k, b""))  # empty: the run ended before k (kept as such: no rerun)
            if path is not None:
                _write_json(path, {"task": task.name, "seed": int(seed), **run})
        ref = self._memory[key] = Reference.of(run["curve"], run["examples"], run["steps"])
        return ref

    def snapshot(self, task: Task, seed: int, interval: int, capture: tuple[int, ...] = ()) -> Optional[dict]:
        """The reference run's state at the start of ``interval``: ``session`` and ``decision`` (their
        ``state_dict``) and ``steps`` (optimizer steps so far), on the environment's device; None if
        the reference run ended before that interval (it diverged with nothing to restore). A run
        computed for it keeps the snapshots of ``capture`` too (the other intervals episodes start at)."""
        key = self.key(task, seed)
        if not self._has_snapshot(key, interval):
            self.curve(task, seed, tuple(sorted({interval, *capture})))
        path = self._snapshot_path(key, interval)
        blob = path.read_bytes() if path is not None else self._snapshots[(key, interval)]
        if not blob:
            return None
        return torch.load(io.BytesIO(blob), map_location=self._config.device, weights_only=False)

    def _snapshot_path(self, key: str, interval: int) -> Optional[Path]:
        return self._dir / f"{key}.snap{int(interval)}.pt" if self._dir is not None else None

    def _has_snapshot(self, key: str, interval: int) -> bool:
        path = self._snapshot_path(key, interval)
        return path.exists() if path is not None else (key, interval) in self._snapshots

    def _put_snapshot(self, key: str, interval: int, blob: bytes) -> None:
        """Keep a serialised snapshot (empty: the run never reached the interval)."""
        path = self._snapshot_path(key, interval)
        if path is None:
            self._snapshots[(key, interval)] = blob
        else:
            _write_atomic(path, blob)

    def _run(self, task: Task, seed: int, snapshots: tuple[int, ...] = ()) -> tuple[dict, dict[int, bytes]]:
        """Train the reference run through the environment's own phases, every action zero; keep
        the state at the start of each interval of ``snapshots``, serialised when it is taken."""
        if self._env is None:
            self._env = self._env_type(replace(self._config))
        env = self._env
        _, info = env.reset(seed=int(seed), options={"task": task, "session_seed": int(seed)})
        infos, states = [info], {}
        zero = np.zeros(env.action_space.shape, dtype=np.float32)
        done = False
        while not done:
            result = env.begin_step(zero)
            if result is None:
                if env.decision.interval in snapshots:  # the interval's values are set, it is not trained yet
                    buf = io.BytesIO()
                    torch.save({"session": env.session.state_dict(), "decision": env.decision.state_dict(), "steps": env._steps}, buf)
                    states[env.decision.interval] = buf.getvalue()
                result = env.end_step(*env.train_interval())
            _, _, terminated, truncated, info = result
            done = terminated or truncated
            if info["examples"] > infos[-1]["examples"]:
                infos.append(info)
        run = {"curve": [float(i["val_loss"]) for i in infos], "examples": [int(i["examples"]) for i in infos],
               "steps": [int(i["steps"]) for i in infos]}
        return run, states


def _write_json(path: Path, obj: dict) -> None:
    _write_atomic(path, json.dumps(obj).encode())


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that another process reads the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
