"""``python -m rlhpo.recommend task=<family>:<seed>``: print the warm start's recommendation for
a task (a family name and task seed, a factory's dotted path, or ``{_target_: ...}``, as
``python -m rlhpo.apply`` takes), its nearest meta-training tasks and the confidence.

    python -m rlhpo.recommend task=friedman_resmlp:3
    python -m rlhpo.recommend task=char_lm:0 meta_model=knn probe=true
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Optional

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from rlhpo.cli import cli_errors, to_dataclass
from rlhpo.errors import ConfigError, is_number
from rlhpo.recommend.models import MODEL_KINDS


@dataclass
class RecommendConfig:
    """:param task: ``<family>:<task seed>`` (or a family: seed 0), a factory's dotted path, or a
        node with ``_target_``
    :param budget_scale: multiplies the task's example budget (the budget-in-epochs feature)
    :param probe: use probe features (null: as the chosen meta-model does)
    :param meta_model: knn, gp, gbr or prior (null: the chosen one)"""

    task: Any = "friedman_resmlp:0"
    budget_scale: float = 1.0
    probe: Optional[bool] = None
    meta_model: Optional[str] = None

    def validate(self) -> "RecommendConfig":
        if not (is_number(self.budget_scale) and self.budget_scale > 0):
            raise ConfigError(f"budget_scale must be a finite number > 0, got {self.budget_scale!r}")
        if self.meta_model is not None and self.meta_model not in MODEL_KINDS:
            raise ConfigError(f"meta_model must be null or one of {list(MODEL_KINDS)}, got {self.meta_model!r}")
        if self.probe is not None and not isinstance(self.probe, bool):
            raise ConfigError(f"probe must be null, true or false, got {self.probe!r}")
        return self


def parse_task(spec: Any) -> tuple[Any, int]:
    """``"family:seed"`` -> (family, seed); anything else -> (spec, 0)."""
    if isinstance(spec, str) and ":" in spec:
        family, _, seed = spec.rpartition(":")
        if not seed.isdigit():
            raise ConfigError(f"task={spec!r}: the part after ':' must be a task seed (an integer >= 0)")
        return family, int(seed)
    return spec, 0


ConfigStore.instance().store(name="recommend_schema", node=RecommendConfig)


@hydra.main(version_base="1.3", config_path="pkg://rlhpo.conf.recommend", config_name="recommend")
def main(cfg: DictConfig) -> None:
    with cli_errors():
        _main(cfg)


def _main(cfg: Any) -> None:
    from rlhpo.cli import build_task
    from rlhpo.recommend.api import recommend_task

    cfg = to_dataclass(cfg, RecommendConfig).validate()
    spec, seed = parse_task(cfg.task)
    task = build_task(spec, seed, cfg.budget_scale)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = recommend_task(task, probe=cfg.probe, meta_model=cfg.meta_model)
    hp = task.default_hparams
    print(f"task {task.name} ({task.family}, {task.optimizer}, budget {task.budget_examples} examples, "
          f"{len(task.train)} training examples)")
    print(f"its start: lr {hp.lr:.3g}, batch size {hp.batch_size}, weight decay {hp.weight_decay:.3g}")
    print(rec)
    for w in caught:
        print(f"note: {w.message}")


if __name__ == "__main__":
    main()
