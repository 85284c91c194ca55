"""A vector environment that trains its target networks as batched computations.

:class:`BatchedVecEnv` is a stable-baselines3 ``VecEnv`` of ``n_envs``
:class:`~rlhpo.envs.HyperparamControlEnv` episodes whose target networks are trained by
:class:`~rlhpo.training.stacked.StackedTrainer`: all the networks of one task form one ``vmap``-ed
computation, so a step of 32 environments costs a handful of batched kernels instead of 32
Python training loops. The episode logic (task sampling, actions, features, reward,
divergence) is the single environment's own: each slot *is* a ``HyperparamControlEnv``, and
the vector env only runs its ``begin_*``/``end_*`` phases around one batched training pass.

Networks can only be stacked when they share an architecture and data, so the environments
come in groups of ``group_size`` that train the *same task* on every episode, each with its own
actions (the policy's samples differ, so the trajectories do); under the ``delta`` reward each
also has its own initialisation and batch order, under the ``reference`` reward they share the
task's (the reference run's), and the group shares one set of reference curves.
Each group draws a new task per episode from the configured families, so over a run the task
distribution is the single environment's; within a rollout, tasks are repeated ``group_size``
times. A slot whose episode ends early (divergence) starts its next episode on the group's
next task and is joined by the others as they finish.

Tasks that cannot be stacked (e.g. a GRU, which ``vmap`` does not support) are trained one
network at a time behind the same interface (:class:`~rlhpo.training.stacked.LoopTrainer`), with a
warning naming the family; everything else behaves the same.

For the same task, seeds and actions, the batched and the single environment give the same
observations and rewards up to float rounding (tests/integration/test_batched.py); with
``group_size=1`` every slot samples its tasks as a single environment with the same seed does,
so the batched env's rollouts are those of the other vector envs (tests/integration/test_vec_parity.py).
"""

from __future__ import annotations

import logging
from copy import deepcopy
from typing import Any, Optional, Sequence

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvStepReturn,
)

from rlhpo.envs.config import EnvConfig
from rlhpo.envs.hyperparam_env import HyperparamControlEnv
from rlhpo.tasks import FAMILIES, Task
from rlhpo.training.rows import LoopTrainer, RowSession, Trainer, stack_check
from rlhpo.training.session import TrainingSession
from rlhpo.training.stacked import StackedTrainer

log = logging.getLogger(__name__)


class _Slot(HyperparamControlEnv):
    """One environment of a :class:`BatchedVecEnv`: the episode logic, with its target network
    kept as a row of a shared trainer."""

    def __init__(self, config: EnvConfig, owner: "BatchedVecEnv", group: int) -> None:
        super().__init__(config)
        self._owner, self._group = owner, group

    def _sample_task(self, options: dict, rng: Optional[np.random.Generator] = None) -> Task:
        if rng is not None or "task" in options:
            return super()._sample_task(options, rng)
        return self._owner._group_task(self, options)

    def _new_session(self, task: Task, seed: int) -> TrainingSession:
        if isinstance(self.session, RowSession):
            self.session.release()
        return self._owner._join(task, seed)  # type: ignore[return-value]

    def close(self) -> None:
        if isinstance(self.session, RowSession):
            self.session.release()
        self.session = None


class BatchedVecEnv(VecEnv):
    """``n_envs`` environments whose target networks train as batched computations.

    :param config: the environment configuration (as for the single environment)
    :param n_envs: number of environments
    :param group_size: environments that share a task per episode (default: all of them);
        must divide ``n_envs``
    """

    def __init__(self, config: Optional[EnvConfig] = None, n_envs: int = 8, group_size: Optional[int] = None) -> None:
        config = deepcopy(config) if config is not None else EnvConfig()
        config.validate()
        group_size = n_envs if group_size is None else int(group_size)
        if not (isinstance(n_envs, int) and n_envs >= 1):
            raise ValueError(f"n_envs must be an integer >= 1, got {n_envs!r}")
        if not (1 <= group_size <= n_envs and n_envs % group_size == 0):
            raise ValueError(f"group_size must divide n_envs={n_envs}, got {group_size!r}")
        if config.snapshot_fraction > 0:
            raise ValueError(
                f"env.snapshot_fraction={config.snapshot_fraction}: snapshot episodes restore one network's state, "
                "which the batched env's stacked networks cannot; use vec_env.kind dummy, subproc or ray"
            )
        self.config, self.group_size = config, group_size
        self.envs = [_Slot(config, self, i // group_size) for i in range(n_envs)]
        env = self.envs[0]
        for slot in self.envs[1:]:  # one set of reference curves: a group's slots share its task
            slot.references = env.references
        super().__init__(n_envs, env.observation_space, env.action_space)
        self._trainers: dict[int, tuple[Task, Trainer]] = {}  # id(task) -> its trainer
        self._unstackable: dict[str, str] = {}  # family -> why its tasks are trained one by one
        self._stackable: set[str] = set()
        n_groups = n_envs // group_size
        self._group_task_of: list[Optional[Task]] = [None] * n_groups
        self._group_resets = [0] * n_groups
        self._explicit: dict[tuple, Task] = {}
        self._actions: Optional[np.ndarray] = None
        self.buf_obs = np.zeros((n_envs, *env.observation_space.shape), dtype=np.float32)

    # -- tasks and trainers ----------------------------------------------------------------
    def _group_task(self, slot: _Slot, options: dict) -> Task:
        """The task of ``slot``'s next episode, shared by its group.

        A group keeps its task for ``group_size`` episodes in all, then draws the next one: a
        slot whose episode ended early (divergence) restarts on the same task, so the group's
        networks stay in one stacked computation. The draw uses the random generator of the
        group's first slot, exactly as a single environment draws its task: with
        ``group_size=1`` every slot samples the tasks (and starts) a single environment with
        the same seed samples.
        """
        g = slot._group
        if options.get("family") is not None or "task_seed" in options:  # every slot asking shares one task
            key = (options.get("family"), options.get("task_seed"))
            if key not in self._explicit:
                self._explicit[key] = self._finish_task(slot._sample_task(options, np.random.default_rng(0)))
            return self._explicit[key]
        if self._group_task_of[g] is None or self._group_resets[g] >= self.group_size:
            first = self.envs[g * self.group_size]
            self._group_task_of[g] = self._finish_task(first._sample_task({}, first.np_random))
            self._group_resets[g] = 0
        self._group_resets[g] += 1
        return self._group_task_of[g]  # type: ignore[return-value]

    def _finish_task(self, task: Task) -> Task:
        if self.config.budget_examples is not None:
            task = task.with_budget(self.config.budget_examples)
        return task

    def _join(self, task: Task, seed: int) -> RowSession:
        entry = self._trainers.get(id(task))
        if entry is None:
            if task.family in self._unstackable:
                why: Optional[str] = self._unstackable[task.family]
            elif task.family in self._stackable:  # a registered family's tasks are all alike
                why = None
            else:
                why = stack_check(task, self.config.device)
                if why is None and task.family in FAMILIES:
                    self._stackable.add(task.family)
            if why is None:
                trainer: Trainer = StackedTrainer(task, capacity=self.group_size, device=self.config.device)
            else:
                if task.family not in self._unstackable:
                    log.warning("batched env: %s tasks train one network at a time: %s", task.family, why)
                    self._unstackable[task.family] = why
                trainer = LoopTrainer(task, device=self.config.device)
            entry = self._trainers[id(task)] = (task, trainer)
        trainer = entry[1]
        return RowSession(trainer, trainer.add_row(seed))

    def _collect(self) -> None:
        for key in [k for k, (_, trainer) in self._trainers.items() if trainer.live_rows() == 0]:
            del self._trainers[key]

    def _train(self, indices: Sequence[int]) -> dict[int, tuple]:
        """Train the next interval of the given slots, one batched pass per trainer."""
        by_trainer: dict[int, list[int]] = {}
        for i in indices:
            session = self.envs[i].session
            assert isinstance(session, RowSession)
            by_trainer.setdefault(id(session.trainer), []).append(i)
        out = {}
        for slots in by_trainer.values():
            sessions = [self.envs[i].session for i in slots]
            trainer = sessions[0].trainer  # type: ignore[union-attr]
            stats = trainer.train_until({s.row: self.envs[i].interval_end() for i, s in zip(slots, sessions)})  # type: ignore[union-attr]
            evals = trainer.evaluate([s.row for s in sessions])  # type: ignore[union-attr]
            for i, s in zip(slots, sessions):
                out[i] = (stats[s.row], *evals[s.row])  # type: ignore[union-attr]
        return out

    def _reset_slots(self, indices: Sequence[int], seeds: Sequence[Optional[int]], options: Sequence[dict]) -> list:
        for i, seed, opts in zip(indices, seeds, options):
            slot = self.envs[i]
            if seed is not None:
                gym.Env.reset(slot, seed=seed)  # seeds the slot's np_random, as HyperparamControlEnv.reset
                if i % self.group_size == 0:  # the group's first slot seeds the group's tasks
                    self._group_task_of[slot._group], self._group_resets[slot._group] = None, 0
            slot.begin_episode(opts or {})
        self._collect()
        trained = self._train(indices)
        return [self.envs[i].end_reset(*trained[i]) for i in indices]

    # -- VecEnv ----------------------------------------------------------------------------
    def reset(self) -> np.ndarray:
        indices = list(range(self.num_envs))
        results = self._reset_slots(indices, self._seeds, self._options)
        for i, (obs, info) in enumerate(results):
            self.buf_obs[i], self.reset_infos[i] = obs, info
        self._reset_seeds()
        self._reset_options()
        return self.buf_obs.copy()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self) -> VecEnvStepReturn:
        if self._actions is None:
            raise RuntimeError("step_async() must be called before step_wait()")
        results: list[Any] = [None] * self.num_envs
        to_train = []
        for i, slot in enumerate(self.envs):
            results[i] = slot.begin_step(self._actions[i])
            if results[i] is None:
                to_train.append(i)
        trained = self._train(to_train)
        for i in to_train:
            results[i] = self.envs[i].end_step(*trained[i])
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        dones = np.zeros(self.num_envs, dtype=bool)
        infos: list[dict] = []
        finished = []
        for i, (obs, reward, terminated, truncated, info) in enumerate(results):
            info = dict(info)
            rewards[i], dones[i] = reward, terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            if dones[i]:
                info["terminal_observation"] = obs
                finished.append(i)
            self.buf_obs[i] = obs
            infos.append(info)
        if finished:
            reset = self._reset_slots(finished, [None] * len(finished), [{}] * len(finished))
            for i, (obs, info) in zip(finished, reset):
                self.buf_obs[i], self.reset_infos[i] = obs, info
        self._actions = None
        return self.buf_obs.copy(), rewards, dones, infos

    def close(self) -> None:
        for slot in self.envs:
            slot.close()
        self._trainers.clear()

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [getattr(self.envs[i], attr_name) for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        for i in self._get_indices(indices):
            setattr(self.envs[i], attr_name, value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        return [getattr(self.envs[i], method_name)(*method_args, **method_kwargs) for i in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]
