"""Meta-training as a user runs it: the CLI, TensorBoard tags, checkpoints, resume, configs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_train_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlhpo.errors import ConfigError
from rlhpo.metatrain.checkpoints import list_checkpoints
from rlhpo.policy.artifact import load_artifact
from rlhpo.train import run

ROOT = Path(__file__).resolve().parents[2]


def _train_cli(*args: str, cwd: Path, timeout: float = 170, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rlhpo.train", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _scalars(run_dir: Path) -> dict[str, list]:
    out: dict[str, list] = {}
    for events in sorted(run_dir.glob("**/events.out.tfevents.*")):
        ea = EventAccumulator(str(events.parent))
        ea.Reload()
        for tag in ea.Tags()["scalars"]:
            out.setdefault(tag, []).extend(ea.Scalars(tag))
    return out


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    t0 = time.perf_counter()
    proc = _train_cli("+experiment=smoke", f"hydra.run.dir={run_dir}", cwd=run_dir.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert time.perf_counter() - t0 < 120  # the smoke experiment's promise
    return run_dir


def test_smoke_experiment_leaves_an_artifact_checkpoints_and_logs(smoke_run):
    art = load_artifact(smoke_run / "policy")
    assert art.spec.timesteps >= 256
    assert (smoke_run / "best" / "model.zip").exists()
    assert list_checkpoints(smoke_run / "checkpoints")
    assert (smoke_run / "config.yaml").exists()


def test_tensorboard_tags(smoke_run):
    scalars = _scalars(smoke_run / "tb")
    expected = [
        "rollout/ep_rew_mean",
        "rollout/ep_len_mean",
        "train/policy_gradient_loss",
        "train/value_loss",
        "train/entropy_loss",
        "throughput/env_steps_per_s",
        "throughput/examples_per_s",
        "eval/log_improvement_vs_default",
        "eval/win_rate_vs_default",
    ]
    for tag in expected:
        assert tag in scalars and scalars[tag], tag
    assert any(t.startswith("eval/final_val_loss/") for t in scalars)
    assert any(t.startswith("meta_train/final_val_loss/") for t in scalars)
    for control in ("lr", "batch_size", "weight_decay"):  # trajectories chosen in evaluation
        assert any(t.endswith(f"/{control}") for t in scalars), control
    assert all(ev.value > 0 for ev in scalars["throughput/examples_per_s"])


def test_held_out_evaluation_is_the_evaluation_runner(tmp_path, monkeypatch):
    """The callback that keeps best/ scores the policy as ``python -m rlhpo.evaluate`` does:
    run_task under Constant and under ControllerSchedule. Re-scoring the saved best/ artifact
    from disk with that runner gives the callback's best score."""
    from rlhpo.evaluation.baselines import Constant
    from rlhpo.evaluation.runner import ControllerSchedule, run_task
    from rlhpo.metatrain.callbacks import HeldOutEvalCallback, _log_improvement

    callbacks, original = [], HeldOutEvalCallback.evaluate

    def spy(self):
        callbacks.append(self)
        return original(self)

    monkeypatch.setattr(HeldOutEvalCallback, "evaluate", spy)
    cfg = tiny_train_config(total_timesteps=128, eval_every=64)
    cfg.tasks.eval_families = ["tabular"]
    run(cfg, tmp_path)
    assert len(callbacks) == 2 and callbacks[0] is callbacks[1]
    cb = callbacks[0]
    art = load_artifact(tmp_path / "best")
    n = cb.env_config.n_intervals
    assert art.spec.n_intervals == n
    scores = []
    for task in cb.tasks:
        default = run_task(task, Constant(), seed=0, n_intervals=n)
        ctrl = run_task(task, ControllerSchedule(art, deterministic=True), seed=0, n_intervals=n)
        scores.append(_log_improvement(default.final_val_loss, ctrl.final_val_loss))
    assert sum(scores) / len(scores) == pytest.approx(cb.best, abs=1e-9)
    trajectories = _scalars(tmp_path / "tb" / "eval_trajectories")
    for task in cb.tasks:
        for key in ("lr", "batch_size", "weight_decay", "val_loss"):
            assert 2 <= len(trajectories[f"{task.name}/{key}"]) <= 2 * n  # two rounds, a point per interval


def test_sigkill_then_resume_continues_from_the_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    args = [
        "+experiment=smoke",
        "total_timesteps=100000",
        "checkpoint_every=128",
        "eval_every=0",
        f"hydra.run.dir={run_dir}",
    ]
    proc = subprocess.Popen([sys.executable, "-m", "rlhpo.train", *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list_checkpoints(run_dir / "checkpoints")) < 2:
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    ckpts = list_checkpoints(run_dir / "checkpoints")
    assert ckpts, "no checkpoint was written before the kill"
    last_step = int(ckpts[-1].name.split("_")[1])
    # resume with a smaller total so it ends soon: continue to last_step + 128
    cfg_text = (run_dir / "config.yaml").read_text().replace("total_timesteps: 100000", f"total_timesteps: {last_step + 128}")
    (run_dir / "config.yaml").write_text(cfg_text)
    done = _train_cli(f"resume={run_dir}", f"hydra.run.dir={tmp_path / 'resume_hydra'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming from {ckpts[-1]}" in done.stdout
    art = load_artifact(run_dir / "policy")
    assert art.spec.timesteps == last_step + 128
    # the TensorBoard run continues (same folder, steps past the checkpoint), no reset
    runs = sorted((run_dir / "tb").glob("ppo_*"))
    assert [r.name for r in runs] == ["ppo_1"]
    steps = sorted(ev.step for ev in _scalars(run_dir / "tb")["time/fps"])
    assert steps[-1] >= last_step + 64 and steps[0] < last_step


def test_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys):
    cfg = tiny_train_config(total_timesteps=192, checkpoint_every=64)
    run(cfg, tmp_path)
    ckpts = list_checkpoints(tmp_path / "checkpoints")
    assert len(ckpts) == 3
    data = (ckpts[-1] / "model.zip").read_bytes()
    (ckpts[-1] / "model.zip").write_bytes(data[:100])
    cfg2 = tiny_train_config(total_timesteps=256, checkpoint_every=64)
    run(cfg2, tmp_path)
    out = capsys.readouterr().out
    assert f"checkpoint {ckpts[-1]} is unusable" in out
    assert f"resuming from {ckpts[-2]}" in out


def test_same_seed_same_meta_training(tmp_path):
    def params(d):
        art = load_artifact(run(tiny_train_config(seed=5), d))
        return [p.detach().clone() for p in art.model.parameters()]  # the policy as its plain torch module

    a, b = params(tmp_path / "a"), params(tmp_path / "b")
    assert a and len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_recurrent_policy(tmp_path):
    cfg = tiny_train_config()
    cfg.policy.name, cfg.policy.net_arch = "recurrent", [16]
    art = load_artifact(run(cfg, tmp_path))
    assert art.spec.algorithm == "RecurrentPPO" and art.recurrent


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda c: setattr(c.ppo, "batch_size", 7), r"ppo.n_steps \* vec_env.n_envs .* divisible by ppo.batch_size"),
        (lambda c: setattr(c.ppo, "gamma", 1.5), r"ppo.gamma must be a number in \(0, 1\]"),
        (lambda c: setattr(c.vec_env, "kind", "gpu"), r"vec_env.kind must be one of \['dummy', 'subproc', 'batched', 'ray'\]"),
        (lambda c: setattr(c.policy, "name", "transformer"), "policy.name must be 'mlp' or 'recurrent'"),
        (lambda c: setattr(c.tasks, "train_families", ["mnist"]), "tasks.train_families: unknown task family 'mnist'"),
        (lambda c: setattr(c, "total_timesteps", -1), "total_timesteps must be an integer >= 1"),
        (lambda c: setattr(c.env, "n_intervals", 0), "env.n_intervals must be an integer >= 1"),
    ],
)
def test_bad_config_is_rejected_before_training(mutate, pattern, tmp_path):
    cfg = tiny_train_config()
    mutate(cfg)
    with pytest.raises(ConfigError, match=pattern):
        run(cfg, tmp_path)
    assert not (tmp_path / "tb").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        ("ppo.n_steps=abc", "Value 'abc' of type 'str' could not be converted to Integer"),
        ("ppo.learning_rat=0.1", "Key 'learning_rat' not in 'PPOConfig'"),
        ("vec_env=gpu", "[rlhpo] error: vec_env=gpu: unknown vector env; allowed: dummy, subproc, batched, ray"),
    ],
)
def test_bad_cli_override_is_a_clear_error(override, message, tmp_path):
    proc = _train_cli("+experiment=smoke", override, f"hydra.run.dir={tmp_path}", cwd=tmp_path, timeout=180)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_unwritable_output_dir_fails_before_work(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user that can write anywhere (root)")
        with pytest.raises(ConfigError, match="cannot be used: it is not writable"):
            run(tiny_train_config(), ro / "run")
    finally:
        ro.chmod(0o700)


def test_output_path_that_is_a_file_fails_clearly(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match="output directory .* cannot be used"):
        run(tiny_train_config(), f / "run")


def test_multirun_sweep(tmp_path):
    proc = _train_cli(
        "-m", "+experiment=smoke", "seed=0,1", "total_timesteps=128", "eval_every=0", f"hydra.sweep.dir={tmp_path}", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "0" / "policy" / "model.zip").exists() and (tmp_path / "1" / "policy" / "model.zip").exists()


def test_non_editable_install_finds_its_configs(tmp_path):
    target = tmp_path / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    assert (target / "rlhpo" / "conf" / "train.yaml").exists()
    assert (target / "rlhpo" / "conf" / "experiment" / "smoke.yaml").exists()
    assert (target / "rlhpo" / "conf" / "vec_env" / "ray.yaml").exists()
    assert (target / "rlhpo" / "pretrained" / "default" / "model.zip").exists()
    assert (target / "rlhpo" / "conf" / "evaluate" / "experiment" / "smoke.yaml").exists()
    proc = _train_cli("+experiment=smoke", "--cfg", "job", cwd=tmp_path, env={"PYTHONPATH": str(target)}, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "n_intervals: 8" in proc.stdout
