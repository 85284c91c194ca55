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
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parents[1])])},
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


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [e.step for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_every_method_logs_under_the_same_tags_one_value_per_step(tmp_path):
    """Issue 14.6: the methods overlay in TensorBoard (same tags, one run directory each) and
    no tag holds two values at one step (the zig-zag of the lr used and the lr decided)."""
    task = make_tiny_task(budget=200, batch_size=16)  # 10 examples per interval: some train none
    results = apply(task, POLICY, compare=True, tb_dir=tmp_path / "tb")
    runs = {m: _events(tmp_path / "tb" / m) for m in ("controller", "constant", "cosine")}
    tags = {m: set(ev) for m, ev in runs.items()}
    assert tags["controller"] == tags["constant"] == tags["cosine"]
    assert {"hparams/lr", "hparams/batch_size", "hparams/weight_decay", "loss/train", "loss/val", "loss/test"} <= tags["controller"]
    for m, ev in runs.items():
        for tag, steps in ev.items():
            assert len(steps) == len(set(steps)), (m, tag, steps)
    examples = [h["examples"] for h in results["controller"].history]
    assert len(set(examples)) < len(examples)  # the case is exercised: an interval that trained nothing


def test_decisions_json_is_strict_and_the_table_explains_val_and_test(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "rlhpo.apply", "task={_target_: test_apply.make_tiny, budget: 200}", "compare=true",
         f"policy={POLICY}", f"hydra.run.dir={tmp_path}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), str(Path(__file__).parents[1])])},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    def no_constants(name):
        raise ValueError(f"not strict JSON: {name}")

    for name in ("decisions.json", "results.json"):
        json.loads((tmp_path / name).read_text(), parse_constant=no_constants)
    decisions = json.loads((tmp_path / "decisions.json").read_text())
    assert any(d["train_loss"] is None for d in decisions)  # was NaN
    assert "trained no example" in proc.stdout and " nan" not in proc.stdout.split("controller decisions")[1].split("method")[0]
    assert "compare methods on test" in proc.stdout


def test_cuda_without_a_gpu_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = subprocess.run(
        [sys.executable, "-m", "rlhpo.apply", "device=cuda", f"hydra.run.dir={tmp_path}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["[rlhpo] error: device='cuda' but torch sees no CUDA device; use device=cpu"]


def test_the_demo_runs_a_final_held_out_task_and_says_so():
    """`make demo` runs a task of a `final` family (none of meta-training's data or architectures),
    and the run's summary names the split of any task's family."""
    import re

    from rlhpo.apply import family_split
    from rlhpo.tasks import FINAL_FAMILIES, META_TRAIN_FAMILIES, NEAR_FAMILIES

    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    demo_task = re.search(r"^DEMO_TASK \?= (\w+)$", makefile, flags=re.M).group(1)
    assert demo_task in FINAL_FAMILIES
    assert "task=$(DEMO_TASK)" in makefile
    assert family_split(demo_task).startswith("a `final` held-out family")
    assert family_split(NEAR_FAMILIES[0]).startswith("a `near` held-out family")
    assert family_split(META_TRAIN_FAMILIES[0]).startswith("a meta-training family")
    assert family_split("custom") == "not one of rlhpo's families"


def test_compare_says_who_won_or_that_they_tied():
    from rlhpo.apply import verdict_lines
    from rlhpo.evaluation.runner import RunResult

    def run(loss, diverged=False):
        return RunResult("t", "f", "m", 0, test_loss=loss, diverged=diverged)

    lines = verdict_lines({"constant": run(1.2), "controller": run(0.6), "cosine": run(0.9, diverged=True)})
    assert lines[0] == "won on the test split: controller"
    assert "constant: test loss 1.2000  (2.000x the best)" in lines[2] and lines[-1] == "  cosine: diverged"
    tied = verdict_lines({"controller": run(0.5), "calibrated": run(0.5)})
    assert tied[0].startswith("tied on the test split: controller, calibrated")
