"""stable-baselines3 callbacks for meta-training: held-out evaluation with the best policy kept,
hyperparameter trajectories, per-family results, throughput and checkpoints."""

from __future__ import annotations

import math
import time
from copy import deepcopy
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from torch.utils.tensorboard import SummaryWriter

from rlhpo.envs.config import EnvConfig
from rlhpo.evaluation.baselines import Constant
from rlhpo.evaluation.runner import (
    ControllerSchedule,
    RunResult,
    Schedule,
    log_history,
    run_task,
)
from rlhpo.metatrain.checkpoints import save_checkpoint
from rlhpo.policy.artifact import ObsNormalization, PolicyArtifact, PolicySpec
from rlhpo.tasks import Task, make_family

#: the values of each held-out run written to ``eval_trajectories/`` (per task, at examples seen)
TRAJECTORY_KEYS: tuple[str, ...] = ("lr", "batch_size", "weight_decay", "val_loss")


def policy_spec(env_config: EnvConfig, model: Any, trained_on: Sequence[str] = ()) -> PolicySpec:
    """What a policy meta-trained in environments of ``env_config`` observes and controls, and
    the guard it was trained under: the spec of its artifact (saved, or held in memory)."""
    return PolicySpec(
        **vars(deepcopy(env_config.decision_spec())),
        algorithm=type(model).__name__, trained_on=list(trained_on), timesteps=int(model.num_timesteps),
    )


class ThroughputCallback(BaseCallback):
    """Logs ``throughput/env_steps_per_s`` and ``throughput/examples_per_s``, and the final
    validation loss of each finished meta-training episode per family."""

    def __init__(self) -> None:
        super().__init__()
        self._t0 = time.perf_counter()
        self._steps0 = 0
        self._examples = 0
        self._last_examples: dict[int, int] = {}

    def _on_training_start(self) -> None:
        self._t0, self._steps0 = time.perf_counter(), self.num_timesteps

    def _on_step(self) -> bool:
        for i, info in enumerate(self.locals.get("infos", [])):
            ex = int(info.get("examples", 0))
            prev = self._last_examples.get(i, 0)
            self._examples += ex - prev if ex >= prev else ex
            self._last_examples[i] = ex
            if "episode" in info and "family" in info:  # SB3's Monitor marks an episode end
                fam = info["family"]
                if math.isfinite(info["val_loss"]) and not info["diverged"]:
                    self.logger.record_mean(f"meta_train/final_val_loss/{fam}", info["val_loss"])
                self.logger.record_mean(f"meta_train/diverged/{fam}", float(info["diverged"]))
        return True

    def _on_rollout_end(self) -> None:
        dt = max(time.perf_counter() - self._t0, 1e-9)
        self.logger.record("throughput/env_steps_per_s", (self.num_timesteps - self._steps0) / dt)
        self.logger.record("throughput/examples_per_s", self._examples / dt)
        self._t0, self._steps0, self._examples = time.perf_counter(), self.num_timesteps, 0


class CheckpointCallback(BaseCallback):
    """Saves an atomic checkpoint every ``every`` environment steps (see :mod:`rlhpo.metatrain.checkpoints`)."""

    def __init__(self, directory: Path, every: int, keep: int) -> None:
        super().__init__()
        self.directory, self.every, self.keep = directory, every, keep
        self._next = every

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.every
            save_checkpoint(self.directory, self.model, self.model.get_vec_normalize_env(), self.keep)
        return True


class HeldOutEvalCallback(BaseCallback):
    """Every ``every`` steps, runs the current policy (deterministic) on a fixed set of held-out
    tasks and compares it with the task's default constant hyperparameters.

    It runs what ``python -m rlhpo.evaluate`` runs: :func:`rlhpo.evaluation.runner.run_task` with
    :class:`~rlhpo.evaluation.baselines.Constant` (the default, run once) and with
    :class:`~rlhpo.evaluation.runner.ControllerSchedule` over the policy being trained, held as
    an in-memory :class:`~rlhpo.policy.artifact.PolicyArtifact` (what ``best/`` will hold), at
    run seed 0, under the environment's control intervals, budget and divergence rule. The test
    split is never read.

    Logs ``eval/log_improvement_vs_default`` (mean over tasks of log(default final val loss /
    policy final val loss), capped; > 0 means the policy is better), per family
    ``eval/final_val_loss/*`` and ``eval/log_improvement_vs_default/*``,
    ``eval/win_rate_vs_default``, and the hyperparameter trajectories of each round to
    ``<tb>/eval_trajectories/round_<k>_step_<n>``. Calls ``on_best(score)`` when the score
    improves on the best so far. The policy's algorithm class decides whether it keeps LSTM state.
    """

    def __init__(
        self,
        env_config: EnvConfig,
        families: list[str],
        task_seeds: list[int],
        every: int,
        tb_dir: Path,
        on_best: Callable[[float], None],
    ) -> None:
        super().__init__()
        self.env_config = env_config
        self.tasks = [make_family(f, env_config.budget_scale).sample(s) for f in families for s in task_seeds]
        if env_config.budget_examples is not None:  # as the environment does
            self.tasks = [t.with_budget(env_config.budget_examples) for t in self.tasks]
        self.every, self.tb_dir, self.on_best = every, tb_dir, on_best
        self._next = every
        self.best = -math.inf
        self._default: Optional[list[float]] = None
        self.round = 0

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every + 1) * self.every

    def _on_step(self) -> bool:
        if self.num_timesteps >= self._next:
            self._next += self.every
            self.evaluate()
        return True

    def _artifact(self) -> PolicyArtifact:
        """The policy being trained, with its observation normalisation and a spec of the
        environment it trains in: the artifact ``best/`` would hold, without the round trip."""
        venv = self.model.get_vec_normalize_env()
        norm = (
            ObsNormalization(venv.obs_rms.mean.copy(), venv.obs_rms.var.copy(), venv.clip_obs, venv.epsilon)
            if venv is not None and venv.norm_obs
            else ObsNormalization.identity(len(self.env_config.feature_names))
        )
        spec = policy_spec(self.env_config, self.model)
        return PolicyArtifact(self.model, norm, spec, path=Path("<in memory>"))

    def _run(self, task: Task, schedule: Schedule) -> RunResult:
        c = self.env_config
        return run_task(
            task, schedule, seed=0, n_intervals=c.n_intervals, device=c.device, test_split=False
        )

    def evaluate(self) -> float:
        """One evaluation round; returns its score (``eval/log_improvement_vs_default``)."""
        if self._default is None:
            self._default = [self._run(t, Constant()).final_val_loss for t in self.tasks]
        artifact = self._artifact()
        writer = SummaryWriter(str(self.tb_dir / "eval_trajectories" / f"round_{self.round:03d}_step_{self.num_timesteps}"))
        per_family: dict[str, list[float]] = {}
        finals: dict[str, list[float]] = {}
        improvements = []
        try:
            for task, default in zip(self.tasks, self._default):
                result = self._run(task, ControllerSchedule(artifact, deterministic=True))
                final = result.final_val_loss  # inf for a diverged run
                imp = _log_improvement(default, final)
                improvements.append(imp)
                per_family.setdefault(task.family, []).append(imp)
                if math.isfinite(final):
                    finals.setdefault(task.family, []).append(final)
                log_history(writer, task.name, result.history, TRAJECTORY_KEYS)
        finally:
            writer.close()
        score = float(np.mean(improvements))
        self._record(score, improvements, per_family, finals)
        self.round += 1
        release_freed_memory()
        if score > self.best:
            self.best = score
            self.on_best(score)
        return score

    def _record(
        self, score: float, improvements: list[float], per_family: dict[str, list[float]], finals: dict[str, list[float]]
    ) -> None:
        """Log one round's scores through SB3's logger (TensorBoard), at the current step."""
        self.logger.record("eval/log_improvement_vs_default", score)
        self.logger.record("eval/win_rate_vs_default", float(np.mean([i > 0 for i in improvements])))
        for fam, vals in per_family.items():
            self.logger.record(f"eval/log_improvement_vs_default/{fam}", float(np.mean(vals)))
        for fam, vals in finals.items():
            self.logger.record(f"eval/final_val_loss/{fam}", float(np.mean(vals)))
        self.logger.dump(self.num_timesteps)


def release_freed_memory() -> None:
    """Give the heap pages freed since the last call back to the OS.

    The held-out evaluation trains a dozen target networks inside the trainer; glibc keeps the
    memory they free, so the trainer's RSS stepped up by 30-50 MiB at each evaluation round in the
    soak test (bench.soak), though nothing was live. ``malloc_trim`` returns it (a few ms).
    A no-op where the C library is not glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _log_improvement(default: float, final: float, cap: float = 5.0) -> float:
    """log(default / final), capped; a diverged side counts as the cap against it."""
    if not math.isfinite(final):
        return -cap if math.isfinite(default) else 0.0
    if not math.isfinite(default):
        return cap
    return float(np.clip(math.log(max(default, 1e-12) / max(final, 1e-12)), -cap, cap))
