"""What the ``python -m rlhpo.train|apply|evaluate`` entry points share: one-line errors and
turning a Hydra config into the library's plain dataclasses. Hydra stays at these edges; the
library API takes plain Python objects."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Any, Iterator

from rlhpo.errors import USER_ERRORS, ConfigError
from rlhpo.output import WRITE_ERRNOS


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """For ``python -m`` entry points: rlhpo's own errors (bad configuration, an unusable output
    directory, a failed checkpoint write, a bad artifact or task) end the program with their
    message and exit code 1, without a traceback from deep inside the libraries.
    ``HYDRA_FULL_ERROR=1`` shows the traceback."""
    full = os.environ.get("HYDRA_FULL_ERROR") == "1"
    previous_hook = threading.excepthook

    def quiet_write_errors(args: Any) -> None:
        # TensorBoard writes on a background thread, which prints its full traceback when the
        # disk fills; the main thread raises the same error again, which is reported below
        if not full and isinstance(args.exc_value, OSError) and args.exc_value.errno in WRITE_ERRNOS:
            return
        previous_hook(args)

    threading.excepthook = quiet_write_errors
    try:
        yield
    except USER_ERRORS as e:
        if full:
            raise
        print(f"[rlhpo] error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)
    finally:
        threading.excepthook = previous_hook


def to_dataclass(cfg: Any, schema: type) -> Any:
    """A Hydra DictConfig (already typed by ``schema``) as the plain dataclass."""
    from omegaconf import OmegaConf

    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj, schema):
        raise ConfigError(f"expected a {schema.__name__} config, got {type(obj).__name__}")
    return obj
