"""The meta-training run: a vector of environments, PPO, callbacks, checkpoints, the artifact.

:func:`run` is the library entry (plain dataclasses in, the policy artifact's path out);
``python -m rlhpo.train`` (:mod:`rlhpo.train`) wraps it with Hydra.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import OmegaConf

from rlhpo.envs import EnvConfig, make_env
from rlhpo.envs.config import REFERENCE_REWARDS
from rlhpo.metatrain.callbacks import (
    CheckpointCallback,
    HeldOutEvalCallback,
    ThroughputCallback,
    policy_spec,
)
from rlhpo.metatrain.checkpoints import list_checkpoints, load_latest, write_error
from rlhpo.metatrain.config import TrainConfig
from rlhpo.output import WRITE_ERRNOS, check_writable
from rlhpo.policy.algorithms import algorithm
from rlhpo.policy.artifact import save_artifact

log = logging.getLogger(__name__)


#: oneDNN (PyTorch's CPU kernels) keeps a compiled primitive per tensor shape, 1024 by default.
#: Meta-training meets thousands of shapes (architectures x batch sizes), so every process grew
#: by ~100 MiB an hour while that cache filled (docs/results/soak_before_fix.log). 64 still holds
#: the running task's shapes: no measurable slowdown on the MLP families, ~4% on conv/GRU ones.
#: Set ONEDNN_PRIMITIVE_CACHE_CAPACITY yourself to override.
ONEDNN_CACHE_CAPACITY = "64"


def limit_onednn_cache() -> None:
    """Cap oneDNN's primitive cache in this process (effective before its first CPU kernel)."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", ONEDNN_CACHE_CAPACITY)


def _env_factory(env_config: EnvConfig, torch_threads: int):
    def make():  # runs inside the worker process for SubprocVecEnv
        limit_onednn_cache()
        torch.set_num_threads(torch_threads)
        return make_env(EnvConfig(**vars(env_config)))

    return make


def build_vec_env(config: TrainConfig):
    """The vectorised, normalised meta-training environment."""
    from stable_baselines3.common.vec_env import VecNormalize

    return VecNormalize(
        make_vec(config),
        norm_obs=config.ppo.normalize_obs,
        norm_reward=config.ppo.normalize_reward,
        clip_obs=10.0,
        gamma=config.ppo.gamma,
    )


def make_vec(config: TrainConfig):
    """The meta-training environments as ``config.vec_env`` runs them, seeded with ``config.seed``
    (environment ``i`` gets ``seed + i`` at its first reset, whatever the kind), monitored, not
    normalised."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    if config.vec_env.kind == "batched":
        from stable_baselines3.common.vec_env import VecMonitor

        from rlhpo.envs.vec.batched import BatchedVecEnv

        venv = VecMonitor(BatchedVecEnv(config.env, config.vec_env.n_envs, config.vec_env.group_size))
        venv.seed(config.seed)
    else:
        from rlhpo.envs.vec.subproc import (
            RestartingSubprocVecEnv,  # restarts a worker process that dies
        )

        vec_cls: Any = RestartingSubprocVecEnv if config.vec_env.kind == "subproc" else DummyVecEnv
        kwargs: Optional[dict] = (
            {"start_method": config.vec_env.start_method, "max_restarts": config.vec_env.max_restarts}
            if vec_cls is RestartingSubprocVecEnv
            else None
        )
        if config.vec_env.kind == "ray":  # one Ray actor per environment, built inside the actor
            from rlhpo.envs.vec.ray import RayVecEnv

            vec_cls, kwargs = RayVecEnv, config.vec_env.ray_options()
            if config.env.device.startswith("cuda") and config.vec_env.num_gpus_per_env == 0:
                log.warning("env.device=%s but vec_env.num_gpus_per_env=0: Ray reserves no GPU for the env actors", config.env.device)
        venv = make_vec_env(
            _env_factory(config.env, config.torch_threads),
            n_envs=config.vec_env.n_envs,
            seed=config.seed,
            vec_env_cls=vec_cls,
            vec_env_kwargs=kwargs,
        )
    return venv


def build_model(config: TrainConfig, venv: Any, tb_dir: Path) -> Any:
    p = config.ppo
    common = dict(
        learning_rate=p.learning_rate,
        n_steps=p.n_steps,
        batch_size=p.batch_size,
        n_epochs=p.n_epochs,
        gamma=p.gamma,
        gae_lambda=p.gae_lambda,
        clip_range=p.clip_range,
        ent_coef=p.ent_coef,
        vf_coef=p.vf_coef,
        max_grad_norm=p.max_grad_norm,
        target_kl=p.target_kl,
        tensorboard_log=str(tb_dir),
        seed=config.seed,
        device="cpu",  # an MLP policy this small runs fastest on the CPU
        verbose=0,
    )
    policy_kwargs: dict[str, Any] = dict(net_arch=list(config.policy.net_arch))
    if config.policy.name == "recurrent":
        policy_kwargs["lstm_hidden_size"] = config.policy.lstm_hidden_size
    algo, alias = algorithm(config.policy.name)
    return algo(alias, venv, policy_kwargs=policy_kwargs, **common)


def _algo(config: TrainConfig):
    return algorithm(config.policy.name)[0]


def _check_writable(run_dir: Path) -> None:
    """Fail before any work when an output directory (the run's, tb/, checkpoints/) cannot be written."""
    check_writable(run_dir)
    for sub in ("tb", "checkpoints"):  # SB3 opens the TensorBoard writer only inside learn()
        check_writable(run_dir / sub, f"{sub}/ of the output directory")


def save_policy(path: Path, model: Any, config: TrainConfig) -> Path:
    venv = model.get_vec_normalize_env()
    return save_artifact(
        path,
        model,
        policy_spec(config.env, model, config.tasks.train_families),
        obs_rms=venv.obs_rms if venv is not None and venv.norm_obs else None,
        clip_obs=venv.clip_obs if venv is not None else 10.0,
        epsilon=venv.epsilon if venv is not None else 1e-8,
        config_yaml=OmegaConf.to_yaml(OmegaConf.structured(config)),
    )


def _resume_or_build(config: TrainConfig, venv: Any, tb_dir: Path, ckpt_dir: Path) -> tuple[Any, bool]:
    """The model from the newest checkpoint that loads (and True), else a new one (and False)."""
    if list_checkpoints(ckpt_dir):
        loaded = load_latest(ckpt_dir, lambda p, env: _algo(config).load(p, env=env, device="cpu"), venv, venv)
        if loaded is not None:
            loaded.model.tensorboard_log = str(tb_dir)
            print(f"[rlhpo] resuming from {loaded.path} at step {loaded.num_timesteps}")
            return loaded.model, True
    return build_model(config, venv, tb_dir), False


def run(config: TrainConfig, run_dir: str | os.PathLike) -> Path:
    """Meta-train (or resume) into ``run_dir``; returns the final artifact's path.

    The library entry point: takes a plain :class:`~rlhpo.metatrain.config.TrainConfig`, no Hydra.
    """
    limit_onednn_cache()
    config.validate()
    run_dir = Path(run_dir)
    _check_writable(run_dir)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    tb_dir, ckpt_dir = run_dir / "tb", run_dir / "checkpoints"
    torch.set_num_threads(config.torch_threads)
    if config.env.reward in REFERENCE_REWARDS and config.env.reference_cache is None:
        # shared by the worker processes, kept for a resumed run: each reference is trained once
        config.env.reference_cache = str(run_dir / "references")

    venv = build_vec_env(config)
    try:
        model, resumed = _resume_or_build(config, venv, tb_dir, ckpt_dir)

        def on_best(score: float) -> None:
            save_policy(run_dir / "best", model, config)

        callbacks = [ThroughputCallback(), CheckpointCallback(ckpt_dir, config.checkpoint_every, config.keep_checkpoints)]
        if config.eval_every > 0:
            callbacks.append(
                HeldOutEvalCallback(
                    config.env,
                    config.tasks.eval_families,
                    config.tasks.eval_task_seeds,
                    config.eval_every,
                    tb_dir,
                    on_best,
                )
            )
        remaining = config.total_timesteps - model.num_timesteps
        try:
            if remaining > 0:
                model.learn(
                    total_timesteps=remaining,
                    callback=callbacks,
                    reset_num_timesteps=not resumed,  # resumed: same TensorBoard run, curves continue
                    tb_log_name="ppo",
                    progress_bar=config.progress_bar,
                )
            path = save_policy(run_dir / "policy", model, config)
        except OSError as e:  # TensorBoard's writer, the best/ or policy/ artifact: full disk, permissions
            if e.errno not in WRITE_ERRNOS:
                raise
            raise write_error("meta-training output", run_dir, e, ckpt_dir) from e
        print(f"[rlhpo] policy artifact: {path}")
        return path
    finally:
        venv.close()
