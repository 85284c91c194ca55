"""Every error rlhpo raises on purpose, and the small checks that build their messages.

This module imports nothing from the package, so any module may raise any of these without
an import circle. Each message names the problem and what is allowed.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Sequence

import numpy as np


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the field and what is allowed."""


class TaskError(ValueError):
    """A task (built-in or a user's) is malformed; the message names the task and the problem."""


class ControllerError(ValueError):
    """Bad input to the controller; the message says what is wrong and what is allowed."""


class ArtifactError(ValueError):
    """A policy artifact is missing, corrupt or incompatible; the message says which and why."""


class OutputWriteError(RuntimeError):
    """An output could not be written; the message names the path and the cause."""


class CheckpointError(RuntimeError):
    """A meta-training checkpoint cannot be loaded or written."""


class CheckpointWriteError(CheckpointError, OutputWriteError):
    """A checkpoint (or another output of meta-training) could not be written; the message names
    the directory, the cause and the last good checkpoint."""


class WorkerCrashError(RuntimeError):
    """Vector-environment workers died more often than the restart cap allows."""


class ActorRestartLimitError(RuntimeError):
    """Environment actors died more often than ``max_restarts`` allows."""


#: the errors a ``python -m rlhpo.*`` entry point reports as one line (see :func:`rlhpo.cli.cli_errors`)
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    OutputWriteError,
    CheckpointError,
    ArtifactError,
    TaskError,
    ControllerError,
    WorkerCrashError,
)


def is_int(v: object) -> bool:
    """An integer, not a bool (``True`` is an int to Python, never a count to a user)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def is_number(v: object) -> bool:
    """A finite int or float, not a bool."""
    if is_int(v):
        return True
    return isinstance(v, (float, np.floating)) and math.isfinite(v)


def check_fields(obj: object, where: str, rules: Sequence[tuple[str, Callable[[Any], Any], str]]) -> None:
    """Each rule ``(names, ok, allowed)``: a field of ``obj`` among the space-separated ``names`` whose
    value is not ``ok`` is a :class:`ConfigError`: ``<where><name> must be <allowed>, got <value>``."""
    for names, ok, allowed in rules:
        for name in names.split():
            if not ok(v := getattr(obj, name)):
                raise ConfigError(f"{where}{name} must be {allowed}, got {v!r}")


def check_seeds(where: str, seeds: Any, allow_empty: bool) -> None:
    """A list of task seeds (integers >= 0), at least one unless ``allow_empty``."""
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise ConfigError(f"{where} must be a list of integers >= 0, got {seeds!r}")
    seeds = list(seeds)
    if not allow_empty and not seeds:
        raise ConfigError(f"{where} must list at least one seed (integers >= 0)")
    bad = [x for x in seeds if not (is_int(x) and x >= 0)]
    if bad:
        raise ConfigError(f"{where} must be a list of integers >= 0, got {bad[0]!r} in {seeds!r}")


def check_device(value: object, where: str = "device") -> str:
    """``value`` if it names a device rlhpo can train on here (``cpu``, ``cuda``, ``cuda:N``).

    :raises ConfigError: for another string, or ``cuda`` on a machine where torch sees no GPU
    """
    if not (isinstance(value, str) and re.fullmatch(r"cpu|cuda(:\d+)?", value)):
        raise ConfigError(f"{where} must be 'cpu', 'cuda' or 'cuda:N', got {value!r}")
    if value.startswith("cuda"):
        import torch  # here, not at the top: this module stays importable without torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{where}={value!r} but torch sees no CUDA device; use {where}=cpu")
    return value


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """Issue ``message`` as a warning attributed to the user's line: the innermost frame outside
    rlhpo, torch, the integrations' frameworks and the interpreter's own machinery (a step
    pre-hook or a finalizer would otherwise name ``torch/optim/optimizer.py`` or ``weakref.py``).
    Python's default filter shows it once per line."""
    import os
    import sys
    import warnings

    skip = [os.path.dirname(os.path.abspath(__file__)) + os.sep]  # rlhpo itself
    for lib in ("torch", "lightning", "pytorch_lightning", "transformers", "accelerate"):
        module = sys.modules.get(lib)
        if module is not None and getattr(module, "__file__", None):
            skip.append(os.path.dirname(os.path.abspath(module.__file__)) + os.sep)
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_code.co_filename
        if not (name.startswith(tuple(skip)) or name.endswith(("weakref.py", "atexit.py")) or name.startswith("<")):
            break
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:  # only library frames (an interpreter exit): the plain warning
        warnings.warn(message, category, stacklevel=2)
        return
    registry = frame.f_globals.setdefault("__warningregistry__", {})
    warnings.warn_explicit(message, category, frame.f_code.co_filename, frame.f_lineno,
                           module=frame.f_globals.get("__name__", "__main__"), registry=registry)
