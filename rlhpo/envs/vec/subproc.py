"""A ``SubprocVecEnv`` that restarts a worker process that dies.

stable-baselines3's :class:`~stable_baselines3.common.vec_env.SubprocVecEnv` talks to one
process per environment over a pipe; when such a process dies (killed by the out-of-memory
killer, a segfault in a native library, a stray ``kill``), the next ``recv`` raises ``EOFError``
and meta-training ends. :class:`RestartingSubprocVecEnv` instead starts a new process with the
same environment factory, discards the episode that was running there, and goes on:

* the step returns, for that environment, the new process's first observation with
  ``done=True``, reward 0 and ``info = {"worker_restarted": True, "TimeLimit.truncated": True,
  "terminal_observation": <the last observation it sent>}`` (so PPO bootstraps the cut
  episode like a time limit, and VecNormalize resets its return);
* a warning is logged, naming the worker, its pid and how it ended;
* after ``max_restarts`` restarts in total it raises :class:`WorkerCrashError` instead: a
  process that keeps dying is a bug to look at, not to paper over.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
from collections.abc import Callable, Sequence
from typing import Any, Optional

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import SubprocVecEnv
from stable_baselines3.common.vec_env.base_vec_env import (
    CloudpickleWrapper,
    VecEnvObs,
    VecEnvStepReturn,
)
from stable_baselines3.common.vec_env.subproc_vec_env import _stack_obs, _worker

from rlhpo.errors import WorkerCrashError

log = logging.getLogger(__name__)

#: what a pipe to a dead process raises
PIPE_ERRORS: tuple[type[BaseException], ...] = (EOFError, BrokenPipeError, ConnectionResetError)
#: a restarted worker's reset seed: its first seed plus this times the restart number
RESTART_SEED_STRIDE = 1_000_003


def _how_it_ended(process: Any) -> str:
    code = process.exitcode
    if code is None:
        return "still running but its pipe is broken"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class RestartingSubprocVecEnv(SubprocVecEnv):
    """:class:`SubprocVecEnv` whose dead workers are restarted (see the module docstring).

    :param env_fns: environment factories, one per worker (called inside the worker)
    :param start_method: multiprocessing start method (default: forkserver where available)
    :param max_restarts: restarts allowed over the vector env's lifetime; one more is an error
    """

    def __init__(
        self, env_fns: list[Callable[[], gym.Env]], start_method: Optional[str] = None, max_restarts: int = 10
    ) -> None:
        if start_method is None:
            start_method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
        self._ctx = mp.get_context(start_method)
        self._env_fns = list(env_fns)
        self.max_restarts = int(max_restarts)
        self.restarts = 0
        self.restarts_per_worker = [0] * len(env_fns)
        self._base_seeds: list[Optional[int]] = [None] * len(env_fns)
        self._last_obs: list[Any] = [None] * len(env_fns)
        self._dead: set[int] = set()  # workers whose pipe failed on send, awaiting a restart
        super().__init__(env_fns, start_method)
        self.remotes, self.processes = list(self.remotes), list(self.processes)

    # -- restarting ------------------------------------------------------------------------
    def _restart(self, i: int, error: BaseException) -> tuple[Any, dict]:
        """Replace worker ``i`` by a new process and reset its environment; returns (obs, reset info)."""
        while True:
            old = self.processes[i]
            old.join(timeout=1.0)
            if old.is_alive():  # a broken pipe but a live process: do not leave it behind
                old.kill()
                old.join(timeout=5.0)
            how = _how_it_ended(old)
            self.restarts += 1
            self.restarts_per_worker[i] += 1
            if self.restarts > self.max_restarts:
                raise WorkerCrashError(
                    f"vec env worker {i} (pid {old.pid}) {how} ({type(error).__name__} on its pipe); "
                    f"workers have died {self.restarts} times, more than vec_env.max_restarts={self.max_restarts}. "
                    "Look for the cause (out of memory? a crash in native code? see the kernel log: dmesg) "
                    "or raise vec_env.max_restarts."
                ) from None
            log.warning(
                "vec env worker %d (pid %s) %s (%s on its pipe); restarting it (restart %d of at most %d); "
                "its running episode is discarded",
                i, old.pid, how, type(error).__name__, self.restarts, self.max_restarts,
            )
            try:
                self.remotes[i].close()
            except OSError:
                pass
            remote, work_remote = self._ctx.Pipe()
            process = self._ctx.Process(
                target=_worker, args=(work_remote, remote, CloudpickleWrapper(self._env_fns[i])), daemon=True
            )
            process.start()
            work_remote.close()
            self.remotes[i], self.processes[i] = remote, process
            base = self._base_seeds[i]
            seed = None if base is None else base + RESTART_SEED_STRIDE * self.restarts_per_worker[i]
            try:
                remote.send(("reset", (seed, None)))
                obs, reset_info = remote.recv()
            except PIPE_ERRORS as e:  # the new worker died too (its factory fails?): count it, try again
                error = e
                continue
            self._dead.discard(i)
            return obs, reset_info

    def seed(self, seed: Optional[int] = None) -> Sequence[Optional[int]]:
        seeds = super().seed(seed)
        self._base_seeds = list(seeds)
        return seeds

    # -- the VecEnv API --------------------------------------------------------------------
    def step_async(self, actions: np.ndarray) -> None:
        for i, (remote, action) in enumerate(zip(self.remotes, actions, strict=True)):
            try:
                remote.send(("step", action))
            except PIPE_ERRORS:
                self._dead.add(i)
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        results = []
        for i, remote in enumerate(self.remotes):
            try:
                if i in self._dead:
                    raise BrokenPipeError("the step could not be sent")
                obs, reward, done, info, reset_info = remote.recv()
            except PIPE_ERRORS as e:
                terminal = self._last_obs[i]
                obs, reset_info = self._restart(i, e)
                if terminal is None:
                    terminal = obs
                reward, done = 0.0, True
                info = {"worker_restarted": True, "TimeLimit.truncated": True, "terminal_observation": terminal}
            self._last_obs[i] = obs
            results.append((obs, reward, done, info, reset_info))
        self.waiting = False
        obs, rews, dones, infos, self.reset_infos = zip(*results, strict=True)  # type: ignore[assignment]
        return _stack_obs(obs, self.observation_space), np.stack(rews), np.stack(dones), infos  # type: ignore[return-value]

    def reset(self) -> VecEnvObs:
        for i, remote in enumerate(self.remotes):
            try:
                remote.send(("reset", (self._seeds[i], self._options[i])))
            except PIPE_ERRORS:
                self._dead.add(i)
        results = []
        for i, remote in enumerate(self.remotes):
            try:
                if i in self._dead:
                    raise BrokenPipeError("the reset could not be sent")
                result = remote.recv()
            except PIPE_ERRORS as e:
                result = self._restart(i, e)
            self._last_obs[i] = result[0]
            results.append(result)
        obs, self.reset_infos = zip(*results, strict=True)  # type: ignore[assignment]
        self._reset_seeds()
        self._reset_options()
        return _stack_obs(obs, self.observation_space)

    def close(self) -> None:
        """Close every worker; a dead one is only reaped (SB3's close would fail on its pipe)."""
        if self.closed:
            return
        for i, remote in enumerate(self.remotes):
            try:
                if self.waiting and i not in self._dead:
                    remote.recv()
                remote.send(("close", None))
            except PIPE_ERRORS:
                pass
        for process in self.processes:
            process.join(timeout=10.0)
            if process.is_alive():
                process.kill()
                process.join()
        for remote in self.remotes:
            remote.close()
        self.waiting = False
        self.closed = True
