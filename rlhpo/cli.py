"""What the ``python -m rlhpo.train|apply|evaluate|recommend`` entry points share: one-line errors,
turning a Hydra config into the library's plain dataclasses, and the task a config names. Hydra
stays at these edges; the library API takes plain Python objects."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Any, Iterator

from rlhpo.errors import USER_ERRORS, ConfigError, TaskError
from rlhpo.output import WRITE_ERRNOS
from rlhpo.tasks import FAMILIES, Task, make_family


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


def check_keys(cfg: Any, where: str = "") -> None:
    """Refuse a key that no field of the node's schema has, at the top level and in every nested
    typed node: Hydra's ``+key=value`` adds any key, so a typo (``+comparre=true``) would
    otherwise run silently with the setting ignored. One line: the key, the allowed keys."""
    import dataclasses
    import difflib

    from omegaconf import DictConfig, OmegaConf

    schema = OmegaConf.get_type(cfg)
    if not (isinstance(cfg, DictConfig) and dataclasses.is_dataclass(schema)):
        return  # an untyped node (a task's ``_target_`` node, a free-form dict): anything goes
    allowed = [f.name for f in dataclasses.fields(schema)]
    unknown = [str(k) for k in cfg.keys() if k not in allowed]
    if unknown:
        close = difflib.get_close_matches(unknown[0], allowed, n=1)
        hint = f" (did you mean {where}{close[0]}?)" if close else ""
        raise ConfigError(
            f"unknown config key {', '.join(where + k for k in unknown)}{hint}; "
            f"allowed keys{' of ' + where.rstrip('.') if where else ''}: {', '.join(allowed)}"
        )
    for key in allowed:
        node = cfg._get_node(key)
        if isinstance(node, DictConfig):
            check_keys(node, f"{where}{key}.")


def to_dataclass(cfg: Any, schema: type) -> Any:
    """A Hydra DictConfig (already typed by ``schema``) as the plain dataclass; a key the schema
    does not know (a ``+key=`` typo) is a :class:`ConfigError` (:func:`check_keys`)."""
    from omegaconf import OmegaConf

    check_keys(cfg)
    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj, schema):
        raise ConfigError(f"expected a {schema.__name__} config, got {type(obj).__name__}")
    return obj


def build_task(spec: Any, task_seed: int = 0, budget_scale: float = 1.0) -> Task:
    """A task from a family name, a ``{_target_: ...}`` node (a factory Hydra calls), or a Task itself."""
    import hydra
    from omegaconf import DictConfig

    if isinstance(spec, Task):
        task = spec
    elif isinstance(spec, str) and spec in FAMILIES:
        return make_family(spec, budget_scale).sample(task_seed)
    elif isinstance(spec, str) and "." not in spec:
        raise ConfigError(
            f"task={spec!r} is not a task family; allowed: {sorted(FAMILIES)}, a factory's dotted path "
            "(task=mypkg.make_task) or task='{_target_: mypkg.make_task}'"
        )
    elif isinstance(spec, str) or (isinstance(spec, (dict, DictConfig)) and "_target_" in spec):
        spec = {"_target_": spec} if isinstance(spec, str) else spec
        target = spec["_target_"]
        try:
            task = hydra.utils.instantiate(spec)
        except Exception as e:
            cause = e.__cause__ if e.__cause__ is not None else e  # Hydra wraps the factory's own error
            raise ConfigError(f"task._target_={target!r} could not be called: {type(cause).__name__}: {cause}") from None
        if not isinstance(task, Task):
            raise TaskError(f"task factory {target!r} returned {type(task).__name__}; it must return an rlhpo.tasks.Task")
    else:
        raise ConfigError(f"task must be a family name or a node with _target_, got {spec!r}")
    task.validate()
    if budget_scale != 1.0:
        task = task.with_budget(max(1, int(task.budget_examples * budget_scale)))
    return task
