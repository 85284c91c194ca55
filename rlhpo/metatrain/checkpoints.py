"""Atomic, resumable meta-training checkpoints.

A checkpoint is a folder ``checkpoints/step_<n>/`` holding the SB3 model (policy weights and
optimizer state), the VecNormalize statistics, and ``state.pt`` (step counter, episode count
and RNG states). It is written to a temporary folder and renamed into place, and a ``COMPLETE``
marker is written last, so a kill at any moment leaves either the whole checkpoint or none.
Loading walks back from the newest to the first one that loads.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from rlhpo.errors import CheckpointError, CheckpointWriteError
from rlhpo.output import describe_os_error

log = logging.getLogger(__name__)


def write_error(what: str, path: Path, e: OSError, checkpoint_dir: Path) -> CheckpointWriteError:
    """The error for a failed write of ``what`` to ``path``: the cause and the last good checkpoint."""
    good = list_checkpoints(checkpoint_dir)
    last = (
        f"the last good checkpoint is {good[-1]} (step {_step(good[-1])}); nothing before it is lost"
        if good
        else f"there is no complete checkpoint in {checkpoint_dir} yet"
    )
    where = f" ({e.filename})" if e.filename else ""
    return CheckpointWriteError(f"could not write {what} to {str(path)!r}: {describe_os_error(e)}{where}; {last}")


def _step(path: Path) -> int:
    return int(path.name.split("_")[1])


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Delete a checkpoint folder so that a kill midway never leaves a half-deleted one that
    still looks complete: rename it out of the ``step_*`` namespace first (atomic), then delete."""
    trash = path.with_name(f".del_{path.name}_{os.getpid()}")
    try:
        os.replace(path, trash)
    except FileNotFoundError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _clean_stale(directory: Path, keep: Path) -> None:
    """Temporary and half-deleted folders left by a process killed while it wrote or pruned."""
    for p in directory.iterdir():
        if p != keep and p.is_dir() and (p.name.startswith(".tmp_") or p.name.startswith(".del_")):
            shutil.rmtree(p, ignore_errors=True)


def save_checkpoint(directory: Path, model: Any, vec_normalize: Optional[Any], keep: int = 3) -> Path:
    """Write ``step_<n>/`` atomically and keep the ``keep`` newest checkpoints.

    A kill at any moment leaves the previous checkpoints intact and either the whole new one or
    none of it. One writer per directory.

    :raises CheckpointWriteError: a write failed (disk full, permissions); names the directory
        and the last good checkpoint, which is untouched
    """
    final = directory / f"step_{model.num_timesteps:010d}"
    tmp: Optional[Path] = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=directory, prefix=".tmp_"))
        _clean_stale(directory, tmp)
        _prune(directory, keep)  # a writer killed before its own pruning left keep + 1: never more
        model.save(tmp / "model.zip")
        if vec_normalize is not None:
            vec_normalize.save(str(tmp / "vecnormalize.pkl"))
        torch.save(
            {"num_timesteps": model.num_timesteps, "rng": _rng_state()},
            tmp / "state.pt",
        )
        (tmp / "COMPLETE").write_text("ok\n")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(tmp)
        if final.exists():  # the same step saved again (a resumed run): out of the way first
            _remove(final)
        os.replace(tmp, final)
        _fsync_dir(directory)
    except OSError as e:
        raise write_error("a checkpoint", directory, e, directory) from e
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    _prune(directory, keep)
    return final


def _prune(directory: Path, keep: int) -> None:
    for old in list_checkpoints(directory)[:-keep]:
        _remove(old)


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("step_*") if p.is_dir() and (p / "COMPLETE").exists())


@dataclass
class LoadedCheckpoint:
    path: Path
    model: Any
    num_timesteps: int


def load_latest(directory: Path, load_model: Any, vec_normalize: Optional[Any], env: Any) -> Optional[LoadedCheckpoint]:
    """Load the newest checkpoint that loads; report and skip broken ones.

    :param load_model: ``PPO.load``-like callable ``(path, env) -> model``
    :param vec_normalize: the VecNormalize wrapper whose statistics to restore (or None)
    """
    candidates = list_checkpoints(directory)
    if not candidates:
        return None
    for path in reversed(candidates):
        try:
            if not zipfile.is_zipfile(path / "model.zip"):
                raise CheckpointError("model.zip is not a zip archive (truncated?)")
            state = torch.load(path / "state.pt", weights_only=False)
            if vec_normalize is not None:
                from stable_baselines3.common.vec_env import VecNormalize

                if not (path / "vecnormalize.pkl").exists():
                    raise CheckpointError("vecnormalize.pkl is missing")
                loaded = VecNormalize.load(str(path / "vecnormalize.pkl"), vec_normalize.venv)
                vec_normalize.obs_rms, vec_normalize.ret_rms = loaded.obs_rms, loaded.ret_rms
            model = load_model(path / "model.zip", env)
            model.num_timesteps = int(state["num_timesteps"])
            _set_rng_state(state["rng"])
            log.info("resumed from checkpoint %s (%d steps)", path, model.num_timesteps)
            return LoadedCheckpoint(path, model, model.num_timesteps)
        except Exception as e:  # a corrupt checkpoint: fall back to the previous good one
            log.warning("checkpoint %s is unusable (%s: %s); trying the previous one", path, type(e).__name__, e)
            print(f"[rlhpo] checkpoint {path} is unusable ({type(e).__name__}: {e}); trying the previous one")
    raise CheckpointError(f"no usable checkpoint in {directory}: all of {[p.name for p in candidates]} failed to load")
