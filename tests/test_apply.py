"""python -m rlhpo.apply and rlhpo.apply.apply: the shipped policy on a held-out family."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_tiny_task

from rlhpo.apply import apply, build_task
from rlhpo.errors import ArtifactError, ConfigError
from rlhpo.policy.artifact import load_artifact
from rlhpo.tasks import TaskError

POLICY = "default"  # the shipped policy: rlhpo/pretrained/default


def make_tiny(**kwargs):
    """A task factory as a user would write one (used through _target_)."""
    return make_tiny_task(**kwargs)


def not_a_task():
    return {"model": "nope"}


def test_shipped_policy_loads_and_is_small():
    art = load_artifact(POLICY)
    assert art.spec.trained_on and set(art.spec.trained_on).isdisjoint({"digits_cnn", "tabular", "char_lm"})
    size = sum(f.stat().st_size for f in art.path.iterdir())
    assert size < 5 * 2**20


@pytest.mark.slow
def test_cli_and_python_api_make_the_same_decisions(tmp_path):
    args = ["task=tabular", "task_seed=7", "seed=3", "budget_scale=0.2", f"policy={POLICY}", "compare=true"]
    proc = subprocess.run(
        [sys.executable, "-m", "rlhpo.apply", *args, f"hydra.run.dir={tmp_path}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for method in ("controller", "constant", "cosine"):
        assert method in proc.stdout
    cli = json.loads((tmp_path / "decisions.json").read_text())
    api = apply(build_task("tabular", 7, 0.2), POLICY, seed=3)["controller"].history
    assert [h["lr"] for h in cli] == pytest.approx([h["lr"] for h in api], rel=1e-9)
    assert [h["batch_size"] for h in cli] == [h["batch_size"] for h in api]
    assert [h["weight_decay"] for h in cli] == pytest.approx([h["weight_decay"] for h in api], rel=1e-9)
    assert list((tmp_path / "tb").glob("controller/events.out.tfevents.*"))


@pytest.mark.slow
@pytest.mark.parametrize("override", ["task={_target_: test_apply.make_tiny}", "task=test_apply.make_tiny"])
def test_user_task_factory_from_the_command_line(override, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rlhpo.apply", override, f"policy={POLICY}", f"hydra.run.dir={tmp_path}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "task tiny-0" in proc.stdout


def test_factory_returning_the_wrong_type_is_named():
    with pytest.raises(TaskError, match=r"task factory 'test_apply.not_a_task' returned dict; it must return an rlhpo.tasks.Task"):
        build_task({"_target_": "test_apply.not_a_task"})


def test_unknown_family_and_missing_policy_are_named(tmp_path):
    with pytest.raises(ConfigError, match="task='mnist' is not a task family; allowed"):
        build_task("mnist")
    with pytest.raises(ArtifactError, match="neither an artifact folder nor a pretrained name"):
        apply(make_tiny_task(), policy=str(tmp_path / "missing"))
