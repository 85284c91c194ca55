"""The training-control environment: one episode trains one task, one step is one control interval."""

from __future__ import annotations

import math
import zlib
from dataclasses import replace
from typing import Any, Optional

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from rlhpo.control.decision import DecisionPath
from rlhpo.control.features import CLIP
from rlhpo.envs.config import REFERENCE_REWARDS, EnvConfig
from rlhpo.envs.reference import ReferenceCurves, lead
from rlhpo.tasks import FAMILIES, Task, TaskFamily
from rlhpo.training.monitor import IntervalStats
from rlhpo.training.session import TrainingSession, remember_valid


class HyperparamControlEnv(gym.Env):
    """Gymnasium environment whose actions adjust lr, batch size and weight decay while a target
    network trains.

    * ``reset`` samples a family and a task (from the configured families), builds a
      :class:`~rlhpo.training.session.TrainingSession` and trains the first interval at the task's starting
      hyperparameters, so the first observation already carries training statistics.
    * ``step`` applies the action (see :mod:`rlhpo.control.actions`), trains one interval and returns the
      features of :mod:`rlhpo.control.features`.
    * Reward: the decrease of the log validation loss over the interval, so the return is
      ``log(val loss after interval 1 / final val loss)``: scale-free, comparable across families.
      The test split is never used. A step that diverges gets ``-divergence_penalty``.
    * Divergence is the guard's rule (:mod:`rlhpo.control.guard`, the Controller's too): the
      guard restores the last good state, the lr is cut and the episode goes on, the examples
      spent since the snapshot are not refunded (``info["rolled_back"]``); ``info["val_loss"]`` is
      the validation loss in effect after the verdict. With ``guard.enabled`` false a diverged
      episode is terminated instead. The episode is truncated when the example budget is spent.
      No exception escapes from a diverging run.

    ``reset(options={"task": task})`` runs a given :class:`~rlhpo.tasks.Task`;
    ``options={"family": name, "task_seed": s}`` picks a specific sampled task;
    ``options={"session_seed": s}`` fixes the target network's initialisation and batch order;
    ``options={"snapshot": f}`` starts part-way through the long run (``env.snapshot_fraction``):
    from the reference run's state at the fraction ``f`` of ``snapshot_budget_scale`` x the budget.

    .. warning:: SB3's ``check_env`` steps the env about a dozen times: give it a tiny budget.
    """

    metadata = {"render_modes": []}

    def __init__(self, config: Optional[EnvConfig] = None, **overrides: Any) -> None:
        super().__init__()
        config = config or EnvConfig()
        for key, value in overrides.items():
            if not hasattr(config, key):
                raise TypeError(f"unknown EnvConfig field {key!r}; allowed: {sorted(vars(config))}")
            setattr(config, key, value)
        self.config = config.validate()
        self._families = {name: FAMILIES[name](budget_scale=config.budget_scale) for name in config.families}
        self._family_names = list(self._families)
        n_actions = len(config.actions.enabled)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(n_actions,), dtype=np.float32)
        n_features = len(config.feature_names)
        self.observation_space = spaces.Box(-CLIP, CLIP, shape=(n_features,), dtype=np.float32)
        self.references: Optional[ReferenceCurves] = None
        if config.reward in REFERENCE_REWARDS:
            self.references = ReferenceCurves(config, HyperparamControlEnv, config.reference_cache)
        self.decision: Optional[DecisionPath] = None
        self.session: Optional[TrainingSession] = None
        self.task: Optional[Task] = None

    # -- episode ---------------------------------------------------------------------------
    def _sample_task(self, options: dict, rng: Optional[np.random.Generator] = None) -> Task:
        """The episode's task: given in ``options``, else sampled with ``rng`` (default: the env's)."""
        rng = self.np_random if rng is None else rng
        if "task" in options:
            task = options["task"]
            if not isinstance(task, Task):
                raise TypeError(f"options['task'] must be an rlhpo.tasks.Task, got {type(task).__name__}")
            return task
        family = options.get("family")
        if family is None:
            family = self._family_names[int(rng.integers(len(self._family_names)))]
        elif family not in FAMILIES:
            raise ValueError(f"options['family']: unknown family {family!r}; allowed: {sorted(FAMILIES)}")
        if family not in self._families:
            self._families[family] = FAMILIES[family](budget_scale=self.config.budget_scale)
        if "task_seed" in options:
            seed = int(options["task_seed"])
        elif self.config.task_seeds:
            seed = int(self.config.task_seeds[int(rng.integers(len(self.config.task_seeds)))])
        else:
            seed = int(rng.integers(2**31 - 1))
        task = self._families[family].sample(seed)
        if type(self._families[family]).sample is TaskFamily.sample:
            remember_valid(task)  # TaskFamily.sample has just validated it: the session need not again
        return self._sample_start(task, rng)

    def _sample_start(self, task: Task, rng: np.random.Generator) -> Task:
        """The start mixture: with probability ``sensible_fraction`` the task's sensible defaults
        with the lr times one of ``sensible_lr_jitter``, else the family's random start."""
        c = self.config
        if c.sensible_fraction <= 0 or rng.random() >= c.sensible_fraction:
            return task
        task = task.with_start("sensible")
        factor = float(c.sensible_lr_jitter[int(rng.integers(len(c.sensible_lr_jitter)))])
        return replace(task, default_hparams=replace(task.default_hparams, lr=task.default_hparams.lr * factor))

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.begin_episode(options or {})
        return self.end_reset(*self.train_interval())

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        finished = self.begin_step(action)
        if finished is not None:
            return finished
        return self.end_step(*self.train_interval())

    # -- the phases of reset() and step() ---------------------------------------------------
    # reset() = begin_episode, train_interval, end_reset; step() = begin_step, train_interval,
    # end_step. rlhpo.envs.vec.batched.BatchedVecEnv runs the same phases for many environments and
    # trains all their intervals as one batched computation in between.
    def begin_episode(self, options: dict) -> None:
        """Pick the task, build the session and set the starting hyperparameters."""
        task = self._sample_task(options)
        if self.config.budget_examples is not None and task.budget_examples != self.config.budget_examples:
            task = task.with_budget(self.config.budget_examples)
        self.task = task
        if self.references is not None:
            # the reference run and the episode share the network's initialisation and batch order
            session_seed = zlib.crc32(task.name.encode()) % (2**31 - 1)
        else:
            session_seed = int(self.np_random.integers(2**31 - 1))
        session_seed = int(options.get("session_seed", session_seed))
        c = self.config
        snapshot, self.snapshot_interval = None, 0
        interval = self._snapshot_interval(options)
        if interval and self.references is not None:
            long = task.with_budget(max(1, int(round(task.budget_examples * c.snapshot_budget_scale))))
            every = tuple(self._interval_of(a) for a in c.snapshot_at)  # one long run keeps them all
            snapshot = self.references.snapshot(long, session_seed, interval, every)
            if snapshot is not None:  # else the long reference run was lost before it: an episode from the start
                task, self.task, self.snapshot_interval = long, long, interval
        self._reference = self.references.curve(task, session_seed) if self.references is not None else None
        self._steps = 0  # optimizer steps so far (rolled-back ones too: they took the time)
        self._reached: Optional[int] = None  # steps when the reference's final validation loss was first reached
        self.session = self._new_session(task, session_seed)
        self.decision = DecisionPath(c, task.budget_examples)
        target = self.session if c.guard.enabled else None
        self.decision.start(task.default_hparams, task.optimizer != "sgd", self.session.set_hparams, target, kind=task.optimizer)
        if snapshot is not None:  # the reference run's state at the start of that interval, its values set
            self.session.load_state_dict(snapshot["session"])
            self.decision.load_state_dict(snapshot["decision"])
            self._steps = int(snapshot["steps"])
        # the base schedule sets the lr before every optimizer step, from the decision path's level
        self.session.lr_schedule = self.decision.lr_at if self.decision.scheduled else None

    def _snapshot_interval(self, options: dict) -> int:
        """The interval a snapshot episode starts at (0: from the start): ``options["snapshot"]``
        (a fraction of the long run), else one of ``snapshot_at`` with probability ``snapshot_fraction``."""
        c = self.config
        if "snapshot" in options:
            at = float(options["snapshot"])
            if not 0 <= at < 1 or (at > 0 and self.references is None):
                raise ValueError(f"options['snapshot'] must be a fraction in [0, 1) of the long run, with a reference reward; got {at!r}")
        elif c.snapshot_fraction > 0 and self.np_random.random() < c.snapshot_fraction:
            at = float(c.snapshot_at[int(self.np_random.integers(len(c.snapshot_at)))])
        else:
            return 0
        return self._interval_of(at)

    def _interval_of(self, at: float) -> int:
        """The decision interval a fraction ``at`` of the run rounds to (above 0: never the start)."""
        n = self.config.n_intervals
        return 0 if at == 0 else min(max(int(round(at * n)), 1), n - 1)

    def end_reset(self, stats: IntervalStats, val_loss: float, val_metric: float) -> tuple[np.ndarray, dict]:
        obs, info, lost = self._observe(stats, val_loss, val_metric)
        self._prev_val = info["val_loss"] if math.isfinite(info["val_loss"]) else 1.0
        self._prev_lead = self._lead(info["val_loss"])
        self._note_result(info)
        self._diverged_at_reset = lost
        return obs, info

    def begin_step(self, action: np.ndarray) -> Optional[tuple[np.ndarray, float, bool, bool, dict]]:
        """Apply the action; returns the step's result at once when there is nothing to train."""
        if self.session is None:
            raise RuntimeError("call reset() before step()")
        if self._diverged_at_reset or self.session.done:
            # nothing left to train: an episode whose first interval already diverged ends here
            return self._last_obs, 0.0, self._diverged_at_reset, not self._diverged_at_reset, dict(self._last_info)
        assert self.decision is not None
        self.session.set_hparams(self.decision.act(action, self.session.hparams))
        return None

    def end_step(
        self, stats: IntervalStats, val_loss: float, val_metric: float
    ) -> tuple[np.ndarray, float, bool, bool, dict]:
        assert self.session is not None
        obs, info, lost = self._observe(stats, val_loss, val_metric)
        val = info["val_loss"]
        if info["diverged"]:
            # a rollback: the state (and its validation loss) of the snapshot are back, the
            # examples since it are spent; the penalty is the step's reward
            reward = -self.config.divergence_penalty
            if math.isfinite(val):
                self._prev_val, self._prev_lead = val, self._lead(val)
        elif self._reference is not None:
            c = float(self.config.reward_clip)
            now = self._lead(val)
            reward = min(max(now - self._prev_lead, -c), c)
            self._prev_lead, self._prev_val = now, val
        else:
            c = float(self.config.reward_clip)
            # both losses are finite here (else the step diverged): min/max clip as np.clip does, without numpy's cost
            reward = min(max(math.log(max(self._prev_val, 1e-12)) - math.log(max(val, 1e-12)), -c), c)
            self._prev_val = val
        self._note_result(info)
        truncated = self.session.done and not lost
        if truncated and self.config.reward == "time_to_result":
            reward += self._time_to_result()
        return obs, reward, lost, truncated, info

    def _note_result(self, info: dict) -> None:
        """Remember the steps at which the episode first reached the reference's final validation loss."""
        ref = self._reference
        if self._reached is None and ref is not None and not info["diverged"] and math.isfinite(info["val_loss"]):
            if info["val_loss"] <= ref.curve[-1]:
                self._reached = self._steps

    def _time_to_result(self) -> float:
        """The end-of-episode term of the ``time_to_result`` reward: ``ttr_weight`` x log(the
        reference's steps to its final validation loss / the episode's), clipped; 0 if never reached."""
        ref_steps = self._reference.steps_to_result() if self._reference is not None else None
        if self._reached is None or not ref_steps:
            return 0.0
        c = float(self.config.reward_clip)
        return self.config.ttr_weight * min(max(math.log(ref_steps / max(self._reached, 1)), -c), c)

    def train_interval(self) -> tuple[IntervalStats, float, float]:
        """Train the next interval; the interval's statistics, validation loss and metric."""
        assert self.session is not None
        stats = self.session.train_until(self.interval_end())
        return (stats, *self.session.evaluate("val"))

    def interval_end(self) -> int:
        """Examples seen at the end of the next interval (the decision path's clock)."""
        assert self.decision is not None
        return self.decision.boundary

    # -- internals -------------------------------------------------------------------------

    def _lead(self, val: float) -> float:
        """The episode's lead over the reference run at the examples seen (0 without one)."""
        if self._reference is None or self.session is None:
            return 0.0
        return lead(self._reference, self.session.examples_seen, val)

    def _new_session(self, task: Task, seed: int) -> TrainingSession:
        return TrainingSession(task, device=self.config.device, seed=seed)

    def _observe(self, stats: IntervalStats, val_loss: float, val_metric: float) -> tuple[np.ndarray, dict, bool]:
        assert self.session is not None and self.task is not None and self.decision is not None
        hp = self.session.hparams
        observation = self.decision.observe(stats, val_loss, hp, self.session.examples_seen)
        obs, verdict = observation.obs, observation.verdict
        self._steps += int(stats.steps)
        info = {
            "task": self.task.name,
            "family": self.task.family,
            "lr": hp.lr,  # the lr of the interval's last step (the base schedule sets it every step)
            "level": self.decision.level,  # the lr level the interval trained at (before this decision)
            "batch_size": hp.batch_size,
            "weight_decay": hp.weight_decay,
            "train_loss": stats.loss_mean,
            "val_loss": verdict.val_loss,  # in effect: after a rollback, the snapshot's
            "measured_val_loss": val_loss,
            "val_metric": val_metric,
            "metric_name": self.task.metric_name,
            "examples": self.session.examples_seen,
            "steps": self._steps,  # optimizer steps so far in the episode
            "budget": self.task.budget_examples,
            "diverged": bool(verdict.diverged),
            "rolled_back": bool(verdict.rolled_back),
            "action": self.decision.last_action.tolist(),
        }
        self._last_obs, self._last_info = obs, info
        return obs, info, verdict.diverged and not verdict.rolled_back  # lost: nothing to go back to
