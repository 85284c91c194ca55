"""Output directories: check them before any work, and turn a failed write into a clear error.

Every entry point that writes (``rlhpo.train``, ``rlhpo.evaluate``, ``rlhpo.apply``) checks its
output folders with :func:`check_writable` before it trains anything, and reports a write that
fails later (a full disk, a revoked permission) with :func:`describe_os_error`, naming the
path and the cause rather than a traceback from inside TensorBoard or torch.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from rlhpo.errors import ConfigError, OutputWriteError

#: errors of a write that the user can fix (space, quota, permissions, a read-only mount)
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS})
MIN_FREE_BYTES = 50 * 2**20


def write_failed(what: str, path: str | os.PathLike, e: OSError) -> OutputWriteError:
    """The error for a failed write of ``what`` to ``path`` (raise it ``from e``)."""
    where = f" ({e.filename})" if e.filename and str(e.filename) != str(path) else ""
    return OutputWriteError(f"could not write {what} to {str(path)!r}: {describe_os_error(e)}{where}")


def describe_os_error(e: OSError) -> str:
    """What went wrong, in words: 'the disk is full', 'permission denied', ..."""
    if e.errno == errno.ENOSPC:
        return "the disk is full"
    if e.errno == errno.EDQUOT:
        return "the disk quota is exceeded"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "it is not writable (permission denied)"
    if e.errno == errno.EROFS:
        return "it is on a read-only file system"
    if e.errno in (errno.EEXIST, errno.ENOTDIR):
        return f"a file is in the way ({e.filename} is not a directory)"
    return f"it is not writable ({e.strerror or type(e).__name__})"


def check_writable(directory: str | os.PathLike, what: str = "output directory", min_free: int = MIN_FREE_BYTES) -> Path:
    """Create ``directory`` if needed, write and sync a test file in it, and check free space.

    :raises ConfigError: naming the directory and the cause
    """
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=d, prefix=".write_test_") as f:
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise ConfigError(f"{what} {str(d)!r} cannot be used: {describe_os_error(e)}") from None
    free = shutil.disk_usage(d).free
    if free < min_free:
        raise ConfigError(f"{what} {str(d)!r} has only {free // 2**20} MiB free; need at least {min_free // 2**20} MiB")
    return d


#: the one TensorBoard tag set: the Controller, ``rlhpo.apply`` and the environment log a run's
#: record under these tags, at x = optimizer steps (``progress/examples`` holds the examples)
TB_TAGS: dict[str, str] = {
    "lr": "hparams/lr",
    "batch_size": "hparams/batch_size",
    "weight_decay": "hparams/weight_decay",
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "val_metric": "metric/val",
    "rolled_back": "guard/rollback",
    "chosen": "probe/factor",  # a branching probe's choice (rlhpo.control.probe)
    "noise_scale": "batch/noise_scale",  # the gradient noise scale the batch rule read (rlhpo.control.batch_rule)
    "examples": "progress/examples",
}


def log_record(writer: object, record: dict, prefix: str = "") -> None:
    """Write one record (the start, a decision, an interval of a baseline) to TensorBoard: every
    key of :data:`TB_TAGS` the record has with a finite number (a bool counts as 0/1), at
    x = its optimizer steps so far (``record["steps"]``).
    ``prefix`` (a method's name) goes before the tag; a ``None`` writer logs nothing."""
    if writer is None:
        return
    import math
    import numbers

    x = int(record.get("steps", 0) or 0)
    for key, tag in TB_TAGS.items():
        v = record.get(key)
        if isinstance(v, bool):
            v = float(v)
        if isinstance(v, numbers.Real) and math.isfinite(v):
            writer.add_scalar(f"{prefix}/{tag}" if prefix else tag, v, x)  # type: ignore[attr-defined]
