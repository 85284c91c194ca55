"""Disk full and unwritable outputs: checked before any work where possible; a write that fails
later is a clear error naming the directory, the cause and (meta-training) the last good
checkpoint, never a traceback from inside TensorBoard or torch."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_task, tiny_train_config

from rlhpo.errors import CheckpointWriteError, ConfigError, OutputWriteError
from rlhpo.metatrain.checkpoints import list_checkpoints
from rlhpo.train import run

AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_non_root = pytest.mark.skipif(AS_ROOT, reason="root writes into read-only (chmod) folders anyway")
# the injected TensorBoard failure kills TensorBoard's writer thread; pytest reports that thread's
# exception at whichever test of this file runs next
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


def _fail_checkpoint_state_from(monkeypatch, n: int, err: int) -> None:
    """The n-th checkpoint's state.pt write (and every later one) fails with ``err``: in the middle
    of the checkpoint, after model.zip and the statistics are written."""
    real, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        if isinstance(f, Path) and f.name == "state.pt":
            calls.append(f)
            if len(calls) >= n:
                raise OSError(err, os.strerror(err), str(f))
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


@pytest.mark.parametrize(
    "err, cause",
    [(errno.ENOSPC, "the disk is full"), (errno.EACCES, "it is not writable (permission denied)"),
     (errno.EDQUOT, "the disk quota is exceeded")],
)
def test_checkpoint_write_failing_mid_run(err, cause, tmp_path, monkeypatch, capsys):
    _fail_checkpoint_state_from(monkeypatch, 2, err)
    with pytest.raises(CheckpointWriteError) as info:
        run(tiny_train_config(total_timesteps=256, checkpoint_every=64), tmp_path)
    ckpt = tmp_path / "checkpoints"
    msg = str(info.value)
    assert msg.startswith(f"could not write a checkpoint to {str(ckpt)!r}: {cause}"), msg
    assert f"the last good checkpoint is {ckpt / 'step_0000000064'} (step 64); nothing before it is lost" in msg
    assert [p.name for p in list_checkpoints(ckpt)] == ["step_0000000064"]
    assert not [p for p in ckpt.iterdir() if p.name.startswith(".")], "the failed write left its temporary folder"
    # with space again, the run resumes from that checkpoint
    monkeypatch.undo()
    capsys.readouterr()
    run(tiny_train_config(total_timesteps=192, checkpoint_every=64), tmp_path)
    assert f"resuming from {ckpt / 'step_0000000064'} at step 64" in capsys.readouterr().out


def test_tensorboard_write_failing_mid_run(tmp_path, monkeypatch):
    """TensorBoard writes on a background thread; its failure surfaces in SB3's logger. Still the
    same clear error, with the last good checkpoint."""
    from tensorboard.summary.writer import record_writer

    real, n = record_writer.RecordWriter.write, [0]

    def write(self, data):
        n[0] += 1
        if n[0] > 60:  # after the first two rollouts' logs
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "events.out.tfevents")
        return real(self, data)

    monkeypatch.setattr(record_writer.RecordWriter, "write", write)
    with pytest.raises(CheckpointWriteError) as info:
        run(tiny_train_config(total_timesteps=100_000, checkpoint_every=64), tmp_path)
    msg = str(info.value)
    assert msg.startswith(f"could not write meta-training output to {str(tmp_path)!r}: the disk is full (events.out.tfevents)")
    assert re.search(r"the last good checkpoint is .*step_\d+ \(step \d+\)", msg), msg


@pytest.mark.slow
def test_cli_checkpoint_write_failure_is_one_clear_line(tmp_path):
    """python -m rlhpo.train with a full disk mid-run: the message, exit code 1, no traceback."""
    run_dir = tmp_path / "run"
    code = f"""
import errno, os, sys, torch
from pathlib import Path
real, calls = torch.save, []
def save(obj, f, *a, **kw):
    if isinstance(f, Path) and f.name == "state.pt":
        calls.append(f)
        if len(calls) >= 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
    return real(obj, f, *a, **kw)
torch.save = save
sys.argv = ["rlhpo.train", "+experiment=smoke", "eval_every=0", "checkpoint_every=64", "hydra.run.dir={run_dir}"]
from rlhpo.train import main
main()
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f"[rlhpo] error: could not write a checkpoint to {str(run_dir / 'checkpoints')!r}: the disk is full" in proc.stderr
    assert "the last good checkpoint is" in proc.stderr and "step_0000000064" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_errors_one_line_and_exit_code(capsys, monkeypatch):
    """The CLI wrapper: rlhpo's errors become one line and exit code 1; a background thread's
    write error (TensorBoard's) prints no traceback; anything else is left alone."""
    import threading

    from rlhpo.cli import cli_errors

    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    with pytest.raises(SystemExit) as info:
        with cli_errors():
            t = threading.Thread(target=lambda: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
            t.start()
            t.join()
            raise CheckpointWriteError("could not write a checkpoint to 'x': the disk is full")
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err == "[rlhpo] error: could not write a checkpoint to 'x': the disk is full\n"
    with pytest.raises(KeyError):  # not one of rlhpo's errors: a normal traceback
        with cli_errors():
            raise KeyError("bug")
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigError):  # HYDRA_FULL_ERROR=1: the traceback, as Hydra does
        with cli_errors():
            raise ConfigError("x")


# -- checked before any work -----------------------------------------------------------------


def test_tensorboard_dir_in_the_way_fails_before_training(tmp_path):
    (tmp_path / "tb").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"tb/ of the output directory '.*tb' cannot be used: a file is in the way"):
        run(tiny_train_config(), tmp_path)
    assert not (tmp_path / "checkpoints").exists() or not list_checkpoints(tmp_path / "checkpoints")


def test_unwritable_tensorboard_dir_fails_before_training(tmp_path, monkeypatch):
    """As a user without write permission on tb/ (simulated, so it also runs as root)."""
    import tempfile as real_tempfile

    import rlhpo.output

    real = real_tempfile.NamedTemporaryFile

    def named_temporary_file(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).name == "tb":
            raise PermissionError(errno.EACCES, "Permission denied", str(Path(dir) / ".write_test_x"))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(rlhpo.output.tempfile, "NamedTemporaryFile", named_temporary_file)
    with pytest.raises(ConfigError, match=r"tb/ of the output directory '.*tb' cannot be used: it is not writable \(permission denied\)"):
        run(tiny_train_config(), tmp_path)
    assert not list_checkpoints(tmp_path / "checkpoints")


@needs_non_root
def test_read_only_tensorboard_dir_fails_before_training(tmp_path):
    (tmp_path / "tb").mkdir()
    (tmp_path / "tb").chmod(0o500)
    try:
        with pytest.raises(ConfigError, match=r"tb/ of the output directory .* it is not writable \(permission denied\)"):
            run(tiny_train_config(), tmp_path)
    finally:
        (tmp_path / "tb").chmod(0o700)


def test_disk_nearly_full_fails_before_training(tmp_path, monkeypatch):
    import shutil

    import rlhpo.output

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(rlhpo.output.shutil, "disk_usage", lambda p: usage._replace(free=10 * 2**20))
    with pytest.raises(ConfigError, match=r"output directory .* has only 10 MiB free; need at least 50 MiB"):
        run(tiny_train_config(), tmp_path)


# -- evaluate and apply ----------------------------------------------------------------------


def _tiny_eval_config(**kw):
    from rlhpo.evaluate import EvaluateConfig

    base = dict(methods=["constant"], families=["tabular"], n_tasks=1, seeds=1, budget_scale=0.03, n_intervals=3, n_jobs=1)
    base.update(kw)
    return EvaluateConfig(**base)


def test_evaluate_output_in_the_way_fails_before_any_run(tmp_path):
    from rlhpo.evaluate import run as evaluate

    (tmp_path / "out").write_text("x")
    with pytest.raises(ConfigError, match=r"output directory '.*out' cannot be used: a file is in the way"):
        evaluate(_tiny_eval_config(), tmp_path / "out")


@needs_non_root
def test_evaluate_read_only_output_fails_before_any_run(tmp_path):
    from rlhpo.evaluate import run as evaluate

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match=r"output directory .* it is not writable \(permission denied\)"):
            evaluate(_tiny_eval_config(), ro / "out")
    finally:
        ro.chmod(0o700)


def test_evaluate_results_write_failing_keeps_the_summary(tmp_path, monkeypatch, capsys):
    import pandas as pd

    from rlhpo.evaluate import run as evaluate

    def to_csv(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)
    with pytest.raises(OutputWriteError, match=r"could not write the evaluation's results to '.*out': the disk is full \(.*runs.csv\)"):
        evaluate(_tiny_eval_config(), tmp_path / "out")
    assert "constant" in capsys.readouterr().out  # the summary table was printed before the error


def test_apply_tensorboard_dir_in_the_way_fails_before_training(tmp_path):
    from rlhpo.apply import apply

    (tmp_path / "tb").write_text("x")
    with pytest.raises(ConfigError, match=r"TensorBoard directory '.*tb' cannot be used: a file is in the way"):
        apply(make_tiny_task(), "default", tb_dir=tmp_path / "tb")


@needs_non_root
def test_apply_read_only_tensorboard_dir_fails_before_training(tmp_path):
    from rlhpo.apply import apply

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match=r"TensorBoard directory .* it is not writable \(permission denied\)"):
            apply(make_tiny_task(), "default", tb_dir=ro / "tb")
    finally:
        ro.chmod(0o700)
