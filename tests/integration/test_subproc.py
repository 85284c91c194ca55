"""A vec-env worker process that dies is restarted; meta-training goes on."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import tiny_train_config

from rlhpo.envs.vec.subproc import RestartingSubprocVecEnv
from rlhpo.errors import WorkerCrashError
from rlhpo.metatrain.checkpoints import list_checkpoints
from rlhpo.train import build_vec_env

pytestmark = pytest.mark.slow  # subprocesses, Ray or minutes of meta-training


def _subproc_config(max_restarts=10):
    cfg = tiny_train_config()
    cfg.vec_env.kind, cfg.vec_env.n_envs, cfg.vec_env.max_restarts = "subproc", 2, max_restarts
    return cfg.validate()


def _kill(process) -> int:
    pid = process.pid
    os.kill(pid, signal.SIGKILL)
    process.join(timeout=10)
    return pid


def _step(venv, n=1):
    for _ in range(n):
        actions = np.stack([venv.action_space.sample() for _ in range(venv.num_envs)])
        out = venv.step(actions)
    return out


def test_killed_worker_is_restarted_and_stepping_continues(caplog):
    venv = build_vec_env(_subproc_config(max_restarts=3))
    inner = venv.venv
    assert isinstance(inner, RestartingSubprocVecEnv)
    try:
        venv.reset()
        _step(venv, 2)
        dead = _kill(inner.processes[0])
        with caplog.at_level(logging.WARNING, logger="rlhpo.envs.vec.subproc"):
            obs, rewards, dones, infos = _step(venv)
        assert dones[0] and infos[0]["worker_restarted"] and infos[0]["TimeLimit.truncated"]
        assert rewards[0] == 0.0 and np.isfinite(obs).all()
        assert infos[0]["terminal_observation"].shape == obs[0].shape
        assert not infos[1].get("worker_restarted")  # the other worker is untouched
        assert inner.processes[0].pid != dead and inner.processes[0].is_alive()
        assert f"vec env worker 0 (pid {dead}) killed by SIGKILL" in caplog.text and "restarting it" in caplog.text
        _step(venv, 3)  # the new worker steps like the old one
        # dead between steps: the next step's send fails
        _kill(inner.processes[1])
        obs, rewards, dones, infos = _step(venv)
        assert dones[1] and infos[1]["worker_restarted"]
        # dead before a reset
        _kill(inner.processes[1])
        assert np.isfinite(venv.reset()).all()
        _step(venv, 2)
        assert inner.restarts == 3
        # the cap: a third death is an error that says what happened and what to do
        _kill(inner.processes[0])
        with pytest.raises(WorkerCrashError, match=r"worker 0 \(pid \d+\) killed by SIGKILL .* more than vec_env.max_restarts=3"):
            _step(venv)
    finally:
        venv.close()
    assert all(not p.is_alive() for p in inner.processes)


def test_meta_training_survives_a_killed_worker(tmp_path):
    """SIGKILL a worker of a real meta-training run (CLI, two subprocess workers): it finishes."""
    import psutil

    run_dir = tmp_path / "run"
    args = ["+experiment=smoke", "vec_env=subproc", "vec_env.n_envs=2", "total_timesteps=640", "checkpoint_every=64",
            "eval_every=0", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen([sys.executable, "-m", "rlhpo.train", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and not list_checkpoints(run_dir / "checkpoints"):
            time.sleep(0.2)
        assert list_checkpoints(run_dir / "checkpoints"), "meta-training did not get going"
        # the workers are the forkserver's children: descendants of the trainer that are not its children
        workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if p.ppid() != proc.pid]
        assert len(workers) == 2, workers
        workers[0].send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert "vec env worker" in out and f"(pid {workers[0].pid}) killed by SIGKILL" in out and "restarting it" in out
    from rlhpo.policy.artifact import load_artifact

    assert load_artifact(run_dir / "policy").spec.timesteps >= 640
