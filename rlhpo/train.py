"""Meta-train a controller: ``python -m rlhpo.train [overrides]``.

PPO (stable-baselines3) over a vector of :class:`~rlhpo.envs.HyperparamControlEnv`, each
sampling tasks from the meta-training families. The Hydra run directory receives:

    policy/          the final policy artifact (see rlhpo.policy.artifact)
    best/            the artifact that scored best on the held-out evaluation
    checkpoints/     atomic checkpoints, for ``resume=<run dir>``
    tb/              TensorBoard logs (``tensorboard --logdir outputs``)
    config.yaml      the resolved configuration

Examples::

    python -m rlhpo.train +experiment=smoke
    python -m rlhpo.train -m seed=0,1,2
    python -m rlhpo.train resume=outputs/2026-11-23/15-00-00
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import hydra
from omegaconf import DictConfig, OmegaConf

from rlhpo.cli import check_keys, cli_errors, to_dataclass
from rlhpo.errors import ConfigError
from rlhpo.metatrain.config import TrainConfig, override_error, register_configs
from rlhpo.metatrain.trainer import build_model, build_vec_env, run, save_policy  # noqa: F401  (the library API)
from rlhpo.policy.legacy import convert_config

register_configs()


def _resume_config(cfg: DictConfig) -> tuple[TrainConfig, Path]:
    run_dir = Path(cfg.resume).expanduser()
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"resume={str(run_dir)!r}: no config.yaml there; give the run directory of a meta-training run")
    base = OmegaConf.structured(TrainConfig)
    old = convert_config(OmegaConf.to_container(OmegaConf.load(saved)))  # type: ignore[arg-type]
    config = to_dataclass(OmegaConf.merge(base, old), TrainConfig)
    config.resume = str(run_dir)
    return config, run_dir


@hydra.main(version_base="1.3", config_path="pkg://rlhpo.conf", config_name="train")
def main(cfg: DictConfig) -> Optional[float]:
    from hydra.core.hydra_config import HydraConfig

    with cli_errors():  # rlhpo's own errors: the message, exit code 1, no library traceback
        if cfg.resume:
            check_keys(cfg)  # a +key= typo beside resume= is refused too
            config, run_dir = _resume_config(cfg)
        else:
            config = to_dataclass(cfg, TrainConfig)
            run_dir = Path(HydraConfig.get().runtime.output_dir)
        run(config, run_dir)
    return None


if __name__ == "__main__":
    import sys

    error = override_error(sys.argv[1:])  # before Hydra, whose own errors name no replacement
    if error:
        sys.exit(f"[rlhpo] error: {error}")
    main()
