"""The calibrated defaults: chosen on meta-training families only, written as the config the
evaluation reads, and the committed file is complete."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from rlhpo.evaluation import calibrate
from rlhpo.evaluation.config import EvaluateConfig, calibrated_defaults
from rlhpo.tasks import FAMILY_GROUPS, META_TRAIN_FAMILIES
from rlhpo.tasks.base import OPTIMIZERS


def test_calibration_runs_on_meta_training_families_only() -> None:
    default = inspect.signature(calibrate.calibrate).parameters["families"].default
    assert tuple(default) == META_TRAIN_FAMILIES
    held_out = set(FAMILY_GROUPS["dev"]) | set(FAMILY_GROUPS["final"])
    assert not held_out & set(default)


def test_calibrate_writes_a_config_the_evaluation_accepts(tmp_path: Path) -> None:
    result = calibrate.calibrate(families=["noisy_quadratic"], n_tasks=1, budget_scale=0.02, n_jobs=1, n_intervals=2)
    assert set(result["calibrated"]) == set(OPTIMIZERS)
    for kind, d in result["calibrated"].items():
        assert d["lr"] in calibrate.LR_GRID[kind] and d["weight_decay"] in calibrate.WD_GRID[kind]
    assert result["hypergradient_beta"] in calibrate.BETA_GRID
    out = tmp_path / "calibrated.yaml"
    calibrate.write_yaml(result, out, "test")
    loaded = OmegaConf.to_container(OmegaConf.load(out))
    cfg = EvaluateConfig(calibrated=loaded["calibrated"], hypergradient_beta=loaded["hypergradient_beta"], families=["tabular"])
    cfg.validate()


def test_the_committed_defaults_cover_every_optimizer() -> None:
    d = calibrated_defaults()
    assert set(d["calibrated"]) == set(OPTIMIZERS) and 0 < d["hypergradient_beta"] < 1
    cfg = EvaluateConfig()
    assert cfg.calibrated == d["calibrated"] and cfg.hypergradient_beta == pytest.approx(d["hypergradient_beta"])
