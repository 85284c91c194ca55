"""SIGKILL at random moments: during checkpoint writes, and meta-training killed at several
points. What must hold: the newest complete checkpoint is the last one written before the kill,
every complete checkpoint loads, and resuming continues from it.

The killed processes are forks of this test process (no interpreter start-up per kill, so many
kills fit in seconds), running the real checkpoint code and the real meta-training loop.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import tiny_train_config

from rlhpo.metatrain.checkpoints import list_checkpoints, load_latest, save_checkpoint
from rlhpo.metatrain.trainer import _algo, build_model, build_vec_env, run

pytestmark = [pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"), pytest.mark.slow]


def _step(path: Path) -> int:
    return int(path.name.split("_")[1])


def _fork(child) -> tuple[int, int]:
    """Run ``child(write_fd)`` in a forked process; return (pid, read_fd)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        os.close(r)
        code = 0
        try:
            child(w)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    return pid, r


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, "the child ended before the kill"


def _reported(fd: int) -> list[int]:
    """Steps the child reported as saved (each line is written after save_checkpoint returned)."""
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    os.close(fd)
    return [int(x) for x in data.decode().split()]


@pytest.fixture
def model_and_env():
    cfg = tiny_train_config().validate()
    venv = build_vec_env(cfg)
    yield cfg, build_model(cfg, venv, Path("unused")), venv
    venv.close()


def _load(cfg, directory, venv):
    return load_latest(directory, lambda p, env: _algo(cfg).load(p, env=env, device="cpu"), venv, venv)


def test_sigkill_at_random_moments_of_checkpoint_writes(model_and_env, tmp_path, caplog):
    cfg, model, venv = model_and_env
    ckpt = tmp_path / "checkpoints"
    rng = random.Random(0)
    t0 = time.perf_counter()
    save_checkpoint(ckpt, model, venv, keep=3)
    t_save = time.perf_counter() - t0  # one write, to spread the kills over a few of them

    def writer(fd):
        while True:  # what CheckpointCallback does, as fast as it can
            model.num_timesteps += 64
            save_checkpoint(ckpt, model, venv, keep=3)
            os.write(fd, f"{model.num_timesteps}\n".encode())

    kills = mid_write = 0
    with caplog.at_level(logging.WARNING, logger="rlhpo.metatrain.checkpoints"):
        for _ in range(20):
            before = [_step(p) for p in list_checkpoints(ckpt)]
            pid, fd = _fork(writer)
            time.sleep(rng.uniform(0, 4 * t_save))
            _kill(pid)
            kills += 1
            reported = _reported(fd)
            mid_write += any(p.name.startswith(".tmp_") for p in ckpt.iterdir())
            complete = [_step(p) for p in list_checkpoints(ckpt)]
            last_good = max(reported, default=max(before))
            # nothing written before the kill is lost; at most the one being written is missing
            assert complete[-1] in (last_good, last_good + 64), (reported[-3:], complete)
            assert last_good in complete
            assert len(complete) <= 4  # keep=3, plus the new one if killed before it pruned
            loaded = _load(cfg, ckpt, venv)
            assert loaded.num_timesteps == complete[-1]
            model.num_timesteps = complete[-1]  # the next writer continues from there, like a resume
        assert "unusable" not in caplog.text  # no truncated checkpoint was ever taken for complete
    # every complete checkpoint loads, not only the newest
    for p in list_checkpoints(ckpt):
        assert _algo(cfg).load(p / "model.zip", device="cpu") is not None
        assert torch.load(p / "state.pt", weights_only=False)["num_timesteps"] == _step(p)
    # the next write clears what the killed writers left half-done
    save_checkpoint(ckpt, model, venv, keep=3)
    assert not [p.name for p in ckpt.iterdir() if p.name.startswith(".")]
    assert kills == 20 and mid_write >= 3, f"only {mid_write} of the kills landed inside a write"


def test_sigkill_in_the_middle_of_a_checkpoint_write(model_and_env, tmp_path):
    """Deterministically mid-write: the model and statistics are written, state.pt is not."""
    cfg, model, venv = model_and_env
    ckpt = tmp_path / "checkpoints"
    for _ in range(2):
        model.num_timesteps += 64
        save_checkpoint(ckpt, model, venv, keep=3)

    def writer(fd):
        real_save = torch.save

        def paused_save(obj, f, *a, **kw):
            if isinstance(f, Path) and f.name == "state.pt":
                os.write(fd, b"paused\n")
                time.sleep(60)  # killed here
            return real_save(obj, f, *a, **kw)

        torch.save = paused_save
        model.num_timesteps += 64
        save_checkpoint(ckpt, model, venv, keep=3)

    pid, fd = _fork(writer)
    line = os.read(fd, 100)
    assert line == b"paused\n"
    partial = [p for p in ckpt.iterdir() if p.name.startswith(".tmp_")]
    assert len(partial) == 1 and (partial[0] / "model.zip").exists()  # really in the middle
    _kill(pid)
    os.close(fd)
    assert [_step(p) for p in list_checkpoints(ckpt)] == [64, 128]
    assert _load(cfg, ckpt, venv).num_timesteps == 128


def test_meta_training_killed_at_several_points_resumes(tmp_path):
    """Real meta-training (rlhpo.train.run) killed at random moments, resumed each time."""
    run_dir = tmp_path / "run"
    rng = random.Random(1)
    resumed_from = []
    for k in range(4):
        before = list_checkpoints(run_dir / "checkpoints")
        newest_before = _step(before[-1]) if before else -1
        def child(fd):
            sys.stdout = os.fdopen(fd, "w", buffering=1)  # its messages, line by line, to the test
            run(tiny_train_config(total_timesteps=10**6, checkpoint_every=32), run_dir)

        pid, fd = _fork(child)
        # kill at a random moment after it has written at least one new checkpoint
        deadline = time.time() + 90
        while time.time() < deadline:
            now = list_checkpoints(run_dir / "checkpoints")
            if now and _step(now[-1]) > newest_before:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 1.0))
        _kill(pid)
        with os.fdopen(fd) as f:
            said = f.read()
        if before:  # it resumed from the newest checkpoint the previous kill left, not from scratch
            assert f"resuming from {before[-1]} at step {newest_before}" in said, said
        after = list_checkpoints(run_dir / "checkpoints")
        assert after and _step(after[-1]) > newest_before, "no progress between kills"
        resumed_from.append(_step(after[-1]))
    # finish: resume from the last good checkpoint and run 64 more steps
    last = resumed_from[-1]
    path = run(tiny_train_config(total_timesteps=last + 64, checkpoint_every=32), run_dir)
    from rlhpo.policy.artifact import load_artifact

    assert load_artifact(path).spec.timesteps == last + 64
    assert resumed_from == sorted(resumed_from) and len(set(resumed_from)) == 4


def test_a_writer_killed_before_pruning_twice_leaves_at_most_keep_plus_one(model_and_env, tmp_path, monkeypatch):
    """Two writers in a row killed between their rename and their pruning: the second prunes first."""
    from rlhpo.metatrain import checkpoints

    _, model, venv = model_and_env
    ckpt = tmp_path / "checkpoints"
    for _ in range(3):
        model.num_timesteps += 64
        save_checkpoint(ckpt, model, venv, keep=3)
    real_prune, calls = checkpoints._prune, []

    def prune_then_die(directory, keep):  # the pruning after the rename never happens
        calls.append(1)
        if len(calls) % 2 == 1:
            real_prune(directory, keep)

    monkeypatch.setattr(checkpoints, "_prune", prune_then_die)
    for _ in range(2):
        model.num_timesteps += 64
        save_checkpoint(ckpt, model, venv, keep=3)
        assert len(list_checkpoints(ckpt)) <= 4
