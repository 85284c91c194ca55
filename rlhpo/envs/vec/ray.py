"""A stable-baselines3 ``VecEnv`` whose environments each live in a Ray actor.

``RayVecEnv(env_fns, ...)`` takes the same list of environment factories as SB3's
``DummyVecEnv`` / ``SubprocVecEnv`` (so ``make_vec_env(..., vec_env_cls=RayVecEnv)`` works). Each
factory is sent to its actor, which calls it there: the environment is built inside the actor,
never pickled from the driver. Give factories that close over small, picklable things (for rlhpo:
an :class:`~rlhpo.envs.EnvConfig`); the rank and seed come from ``make_vec_env``.

* Resources: every actor reserves ``num_cpus`` and ``num_gpus`` (fractions allowed) from Ray.
* Ray: joins a running Ray (``ray.init`` already called in this process, or ``address`` =
  ``"auto"`` / ``"host:port"`` / ``"ray://host:port"``), otherwise starts a local instance with
  enough logical CPUs for the actors; ``close()`` shuts Ray down only if this object started it.
* Stepping: ``step_async`` sends one ``.remote`` call per actor and returns at once,
  ``step_wait`` collects them; finished episodes are reset in the actor, with
  ``info["terminal_observation"]`` and ``info["TimeLimit.truncated"]`` as in ``DummyVecEnv``.
* Fault tolerance: an actor that dies (``ray.exceptions.RayActorError``: the process was killed,
  its node died or became unreachable) is replaced by a new actor built from the same factory.
  Its episode is lost: that environment's slot reports ``done=True`` with
  ``info = {"actor_restarted": True, "TimeLimit.truncated": True, "terminal_observation": <the last
  observation seen>}`` and a fresh reset observation, so PPO bootstraps from the last value and
  training goes on. A warning is logged. After ``max_restarts`` replacements in total the next
  death raises :class:`ActorRestartLimitError`. An environment that fails while being *built*
  (an error in its factory) is not restarted: the error is raised at once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, Optional

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env.base_vec_env import (
    VecEnv,
    VecEnvIndices,
    VecEnvObs,
    VecEnvStepReturn,
)

try:
    import ray
except ImportError as e:  # Ray is the optional extra "ray"
    raise ImportError(f"vec_env=ray needs Ray ({e}); pip install 'rlhpo[ray]'") from e

from rlhpo.distributed import start_ray  # noqa: E402
from rlhpo.errors import ActorRestartLimitError  # noqa: E402  (after the optional-import guard)

log = logging.getLogger(__name__)


class _EnvWorker:
    """The body of one Ray actor: builds its environment from the factory and steps it."""

    def __init__(self, env_fn: Callable[[], gym.Env]) -> None:
        from stable_baselines3.common.vec_env.patch_gym import _patch_env

        self.env = _patch_env(env_fn())

    def spaces(self) -> tuple[spaces.Space, spaces.Space]:
        return self.env.observation_space, self.env.action_space

    def pid(self) -> int:
        return os.getpid()

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, dict, dict]:
        # the same conversion to SB3's VecEnv API as DummyVecEnv and SubprocVecEnv
        obs, reward, terminated, truncated, info = self.env.step(action)
        done = terminated or truncated
        info["TimeLimit.truncated"] = truncated and not terminated
        reset_info: dict = {}
        if done:
            info["terminal_observation"] = obs
            obs, reset_info = self.env.reset()
        return obs, float(reward), bool(done), info, reset_info

    def reset(self, seed: Optional[int], options: Optional[dict]) -> tuple[Any, dict]:
        return self.env.reset(seed=seed, **({"options": options} if options else {}))

    def get_attr(self, name: str) -> Any:
        return self.env.get_wrapper_attr(name)

    def has_attr(self, name: str) -> bool:
        try:
            self.env.get_wrapper_attr(name)
            return True
        except AttributeError:
            return False

    def set_attr(self, name: str, value: Any) -> None:
        setattr(self.env, name, value)

    def env_method(self, name: str, args: tuple, kwargs: dict) -> Any:
        return self.env.get_wrapper_attr(name)(*args, **kwargs)

    def is_wrapped(self, wrapper_class: type) -> bool:
        from stable_baselines3.common.env_util import is_wrapped

        return is_wrapped(self.env, wrapper_class)

    def render(self) -> Any:
        return self.env.render()

    def close(self) -> None:
        self.env.close()


def _stack(obs: Sequence[Any], space: spaces.Space) -> VecEnvObs:
    if isinstance(space, spaces.Dict):
        return {k: np.stack([o[k] for o in obs]) for k in space.spaces}
    if isinstance(space, spaces.Tuple):
        return tuple(np.stack([o[i] for o in obs]) for i in range(len(space.spaces)))
    return np.stack(obs)


class RayVecEnv(VecEnv):
    """SB3 vector environment with one Ray actor per environment (see the module docstring).

    :param env_fns: one factory per environment, called inside its actor (and again in a
        replacement actor after a crash)
    :param num_cpus: logical CPUs each actor reserves (fractions allowed)
    :param num_gpus: GPUs each actor reserves (fractions below 1 share a GPU)
    :param address: Ray cluster to join (``None``: this process's Ray, ``RAY_ADDRESS``, or a new
        local instance with max(CPU count, ``num_cpus * len(env_fns)``) logical CPUs)
    :param max_restarts: how many dead actors may be replaced in total before the next death
        raises :class:`ActorRestartLimitError`
    :param start_timeout_s: how long to wait for the actors to be placed and build their
        environments before giving up with an error naming the resources asked for
    """

    def __init__(
        self,
        env_fns: list[Callable[[], gym.Env]],
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        address: Optional[str] = None,
        max_restarts: int = 20,
        start_timeout_s: float = 300.0,
    ) -> None:
        self._env_fns = list(env_fns)
        n = len(self._env_fns)
        if n < 1:
            raise ValueError("RayVecEnv needs at least one environment factory")
        self.num_cpus, self.num_gpus = float(num_cpus), float(num_gpus)
        self.max_restarts = int(max_restarts)
        self.restarts = 0  #: dead actors replaced so far
        self.restarts_per_env = [0] * n
        self.closed = False
        self.waiting = False
        self._base_seed: Optional[int] = None
        self._pending: list[Any] = []
        self._last_obs: list[Any] = [None] * n
        # fresh reset observations of replaced actors, reported as done at the next step_wait
        self._restarted: dict[int, tuple[Any, dict, Any]] = {}
        self._address = address or os.environ.get("RAY_ADDRESS")
        self._started_ray = start_ray(address, num_cpus=max(os.cpu_count() or 1, self.num_cpus * n))
        self.actors: list[Any] = []
        try:
            self._check_resources(n)
            self.actors = [self._spawn(i) for i in range(n)]
            obs_space, act_space = self._wait_started(start_timeout_s)
            super().__init__(n, obs_space, act_space)
        except BaseException:
            self._shutdown()
            raise

    # -- actors -------------------------------------------------------------------------------
    def _spawn(self, idx: int) -> Any:
        # Ray restarts nothing itself (max_restarts=0): a restarted actor would have lost its
        # environment's state anyway, so a new actor built from the factory takes its place.
        return (
            ray.remote(_EnvWorker)
            .options(num_cpus=self.num_cpus, num_gpus=self.num_gpus, max_restarts=0, max_task_retries=0)
            .remote(self._env_fns[idx])
        )

    def _resources(self) -> str:
        return f"num_cpus={self.num_cpus:g}, num_gpus={self.num_gpus:g} each"

    def _check_resources(self, n: int) -> None:
        """On a local Ray that cannot hold the actors, fail now instead of waiting forever; on a
        cluster (which may autoscale) warn, and let ``start_timeout_s`` decide."""
        total = ray.cluster_resources()
        for name, per_env in (("CPU", self.num_cpus), ("GPU", self.num_gpus)):
            need, have = per_env * n, float(total.get(name, 0.0))
            if need > have + 1e-9:
                msg = (
                    f"vec_env=ray: {n} environment actors need {need:g} {name}s in total ({self._resources()}), "
                    f"but the Ray cluster has {have:g}"
                )
                if self._address in (None, "local"):
                    raise RuntimeError(msg + "; lower vec_env.num_cpus_per_env, vec_env.num_gpus_per_env or vec_env.n_envs")
                log.warning("%s; waiting up to start_timeout_s for the cluster to grow", msg)

    def _wait_started(self, timeout: float) -> tuple[spaces.Space, spaces.Space]:
        refs = [a.spaces.remote() for a in self.actors]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout)
        if len(ready) < len(refs):
            raise RuntimeError(
                f"vec_env=ray: only {len(ready)} of {len(refs)} environment actors started within "
                f"vec_env.start_timeout_s={timeout:g} s ({self._resources()}; the cluster has "
                f"{ray.cluster_resources()}, available {ray.available_resources()})"
            )
        out = None
        for i, ref in enumerate(refs):
            try:
                got = ray.get(ref)
            except ray.exceptions.RayActorError as e:
                raise RuntimeError(f"vec_env=ray: environment {i} could not be built in its actor: {e}") from e
            out = out or got
        assert out is not None
        return out

    def _get(self, idx: int, ref: Any) -> Any:
        """``ray.get`` one call; an actor that failed while building its environment is an error."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayActorError as e:
            if e.actor_init_failed:
                raise RuntimeError(f"vec_env=ray: environment {idx} could not be built in its actor: {e}") from e
            raise

    def _replace(self, idx: int, cause: BaseException) -> tuple[Any, dict]:
        """Replace the dead actor ``idx`` by a new one and reset it; returns (obs, reset info)."""
        while True:
            if self.restarts >= self.max_restarts:
                raise ActorRestartLimitError(
                    f"vec_env=ray: environment actor {idx} died and {self.restarts} actors were already "
                    f"replaced (limit vec_env.max_restarts={self.max_restarts}); giving up. Last error: "
                    f"{type(cause).__name__}: {cause}"
                ) from cause
            self.restarts += 1
            self.restarts_per_env[idx] += 1
            log.warning(
                "vec_env=ray: environment actor %d died (%s: %s); its episode is discarded and a new actor "
                "takes its place (restart %d of at most %d)",
                idx, type(cause).__name__, str(cause).splitlines()[0] if str(cause) else "", self.restarts,
                self.max_restarts,
            )
            try:
                ray.kill(self.actors[idx], no_restart=True)
            except Exception:  # already gone
                pass
            self.actors[idx] = self._spawn(idx)
            # a seed of its own, distinct from every env's first seed, so runs stay reproducible
            seed = None if self._base_seed is None else self._base_seed + idx + self.num_envs * self.restarts_per_env[idx]
            try:
                return self._get(idx, self.actors[idx].reset.remote(seed, None))
            except ray.exceptions.RayActorError as e:
                cause = e

    def _call(self, idx: int, method: str, *args: Any) -> Any:
        """Call ``method`` on actor ``idx``; a dead actor is replaced (its next step reports the
        lost episode) and the call is made again on the new one."""
        try:
            return self._get(idx, getattr(self.actors[idx], method).remote(*args))
        except ray.exceptions.RayActorError as e:
            obs, reset_info = self._replace(idx, e)
            self._restarted[idx] = (obs, reset_info, self._last_obs[idx])
            return self._get(idx, getattr(self.actors[idx], method).remote(*args))

    # -- VecEnv API ----------------------------------------------------------------------------
    def seed(self, seed: Optional[int] = None) -> Sequence[Optional[int]]:
        seeds = super().seed(seed)
        self._base_seed = seeds[0]
        return seeds

    def reset(self) -> VecEnvObs:
        if self.waiting:  # a reset cancels a pending step (its results are dropped)
            self._pending, self.waiting = [], False
        refs = [a.reset.remote(self._seeds[i], self._options[i] or None) for i, a in enumerate(self.actors)]
        obs = []
        for i, ref in enumerate(refs):
            try:
                o, self.reset_infos[i] = self._get(i, ref)
            except ray.exceptions.RayActorError as e:
                o, self.reset_infos[i] = self._replace(i, e)
            obs.append(o)
        self._restarted.clear()  # a reset starts every episode anew
        self._last_obs = obs
        self._reset_seeds()
        self._reset_options()
        return _stack(obs, self.observation_space)

    def step_async(self, actions: np.ndarray) -> None:
        if self.waiting:
            raise RuntimeError("RayVecEnv.step_async called twice without step_wait")
        # environments whose actor was replaced outside a step report that at this step: no call
        self._pending = [
            None if i in self._restarted else actor.step.remote(actions[i]) for i, actor in enumerate(self.actors)
        ]
        self.waiting = True

    def step_wait(self) -> VecEnvStepReturn:
        if not self.waiting:
            raise RuntimeError("RayVecEnv.step_wait called without step_async")
        obs, rews, dones, infos = [], np.zeros(self.num_envs, np.float32), np.zeros(self.num_envs, bool), []
        for i, ref in enumerate(self._pending):
            restarted = self._restarted.pop(i, None)
            if restarted is None:
                try:
                    o, rews[i], dones[i], info, reset_info = self._get(i, ref)
                except ray.exceptions.RayActorError as e:
                    restarted = (*self._replace(i, e), self._last_obs[i])
            if restarted is not None:
                o, reset_info, last = restarted
                dones[i] = True
                info = {"actor_restarted": True, "TimeLimit.truncated": True, "terminal_observation": last}
            obs.append(o)
            infos.append(info)
            self.reset_infos[i] = reset_info
        self._pending, self.waiting = [], False
        self._last_obs = obs
        return _stack(obs, self.observation_space), rews, dones, infos

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._shutdown()

    def _shutdown(self) -> None:
        if ray.is_initialized() and self.actors:
            refs = [a.close.remote() for a in self.actors]
            ray.wait(refs, num_returns=len(refs), timeout=10.0)
            for a in self.actors:
                try:
                    ray.kill(a, no_restart=True)
                except Exception:
                    pass
        self.actors = []
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False

    def get_images(self) -> Sequence[Optional[np.ndarray]]:
        if self.render_mode != "rgb_array":
            log.warning("The render mode is %s, but get_images needs 'rgb_array'", self.render_mode)
            return [None] * self.num_envs
        return [self._call(i, "render") for i in range(self.num_envs)]

    def has_attr(self, attr_name: str) -> bool:
        return all(self._call(i, "has_attr", attr_name) for i in range(self.num_envs))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        return [self._call(i, "get_attr", attr_name) for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        for i in self._get_indices(indices):
            self._call(i, "set_attr", attr_name, value)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **method_kwargs: Any) -> list[Any]:
        return [self._call(i, "env_method", method_name, method_args, method_kwargs) for i in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        return [self._call(i, "is_wrapped", wrapper_class) for i in self._get_indices(indices)]

    def actor_pids(self) -> list[int]:
        """The process id of every environment actor (for monitoring and tests)."""
        return [self._call(i, "pid") for i in range(self.num_envs)]
