"""Apply a pretrained controller to a training run: ``python -m rlhpo.apply [overrides]``.

    python -m rlhpo.apply task=digits_cnn policy=default compare=true
    python -m rlhpo.apply task=mypkg.tasks.make_task policy=outputs/.../policy
    python -m rlhpo.apply 'task={_target_: mypkg.tasks.make_task, n: 500}'

Trains the task under the controller (through :func:`rlhpo.evaluation.runner.run_task`, the one loop),
logs losses and the chosen hyperparameters to TensorBoard, writes ``decisions.json`` and prints
a summary. With ``compare=true`` it also runs the task's default constant hyperparameters, a
cosine schedule and the calibrated default (warm-up + cosine at one lr per optimizer kind, the
prior controller v3 starts from) with the same budget and seed, and prints the four side by side.

TensorBoard: one run directory per method (``tb/controller``, ``tb/constant``, ``tb/cosine``, ``tb/calibrated``),
each with the same tags (:data:`TB_TAGS`: ``hparams/lr``, ``loss/val`` ...), one value per
interval, so the methods overlay on one chart. ``decisions.json`` and ``results.json`` are strict
JSON: a value that is not a finite number (an interval that trained no example has no training
loss) is ``null``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import hydra
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig

from rlhpo.cli import build_task, cli_errors, to_dataclass
from rlhpo.errors import ConfigError, check_device, is_int, is_number
from rlhpo.evaluation.baselines import Calibrated, Constant, Cosine
from rlhpo.evaluation.runner import ControllerSchedule, RunResult, run_task
from rlhpo.output import check_writable, log_record, write_failed
from rlhpo.policy.artifact import DEFAULT_POLICY, load_artifact
from rlhpo.tasks import FAMILIES, FAMILY_GROUPS, Task

#: printed under the comparison table
TABLE_NOTE = (
    "val: the validation split, which the controller reads at every decision (final = after the last\n"
    "interval, best = lowest of any interval); test: the held-out test split, evaluated once after\n"
    "training and never seen by any method -- compare methods on test. A method can be worse on val\n"
    "and better on test: val is one small split measured at one point, and the controller's choices\n"
    "react to it."
)


#: how the run's summary names the split a task's family belongs to
SPLITS: dict[str, str] = {
    "final": "a `final` held-out family: it shares neither data nor an architecture generator with meta-training, "
    "and no development decision used it",
    "dev": "a `dev` held-out family: it shares neither data nor an architecture generator with meta-training; "
    "development decisions used it",
    "near": "a `near` held-out family: it shares its data or its architecture generator with meta-training",
    "meta_train": "a meta-training family: the shipped policy was trained on tasks of it",
}


def family_split(family: str) -> str:
    """Which split ``family`` belongs to, in words (a family of the user's own has none)."""
    for group, words in SPLITS.items():
        if family in FAMILY_GROUPS[group]:
            return words
    return "not one of rlhpo's families"


@dataclass
class ApplyConfig:
    """``python -m rlhpo.apply``.

    :param task: a family name (one task is sampled with ``task_seed``), the dotted path of a
        factory that returns an :class:`rlhpo.tasks.Task`, or a node with ``_target_`` (and the
        factory's arguments)
    :param task_seed: which task of the family
    :param seed: fixes the target network's initialisation and batch order
    :param policy: a pretrained name (``default``) or an artifact folder
    :param compare: also run the default constant and cosine schedules and the calibrated default
    :param n_intervals: control intervals (null: the policy's own)
    :param budget_scale: multiplies the task's example budget
    :param device: where the target network trains
    :param deterministic: the policy's mean action (true) or a sampled one
    :param torch_threads: CPU threads for the target network (small networks run fastest on
        one; the thread count also changes float summation order, so fix it to reproduce a run)
    """

    task: Any = "digits_cnn"
    task_seed: int = 0
    seed: int = 0
    policy: str = DEFAULT_POLICY
    compare: bool = False
    n_intervals: Optional[int] = None
    budget_scale: float = 1.0
    device: str = "cpu"
    deterministic: bool = True
    torch_threads: int = 1

    def validate(self) -> "ApplyConfig":
        """Check every field; raise :class:`ConfigError` naming the field and what is allowed."""
        if not (isinstance(self.task, (str, Task)) or (isinstance(self.task, (dict, DictConfig)) and "_target_" in self.task)):
            raise ConfigError(
                f"task must be a family name ({sorted(FAMILIES)}), a factory's dotted path or a node with _target_, "
                f"got {self.task!r}"
            )
        for name, low in (("task_seed", 0), ("seed", 0), ("torch_threads", 1)):
            v = getattr(self, name)
            if not (is_int(v) and v >= low):
                raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}")
        if not (isinstance(self.policy, (str, os.PathLike)) and str(self.policy)):
            raise ConfigError(f"policy must be a pretrained name ('default') or an artifact folder, got {self.policy!r}")
        if self.n_intervals is not None and not (is_int(self.n_intervals) and self.n_intervals >= 1):
            raise ConfigError(f"n_intervals must be null (the policy's own) or an integer >= 1, got {self.n_intervals!r}")
        if not (is_number(self.budget_scale) and self.budget_scale > 0):
            raise ConfigError(f"budget_scale must be a finite number > 0, got {self.budget_scale!r}")
        check_device(self.device)
        for name in ("compare", "deterministic"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        return self


def apply(
    task: Task,
    policy: str | os.PathLike = DEFAULT_POLICY,
    seed: int = 0,
    compare: bool = False,
    n_intervals: Optional[int] = None,
    device: str = "cpu",
    deterministic: bool = True,
    tb_dir: Optional[str | os.PathLike] = None,
) -> dict[str, RunResult]:
    """Train ``task`` under the controller (and, with ``compare``, the baselines).

    :return: results by method name: ``controller`` (and ``constant``, ``cosine`` from the task's
        start, and ``calibrated``: warm-up + cosine at the calibrated default, the prior the
        controller v3 starts from)
    """
    ApplyConfig(
        task=task, seed=seed, policy=policy, compare=compare, n_intervals=n_intervals, device=device,  # type: ignore[arg-type]
        deterministic=deterministic,
    ).validate()
    artifact = load_artifact(policy)
    if tb_dir is not None:
        check_writable(tb_dir, "TensorBoard directory")  # before any training
    n = n_intervals or artifact.spec.n_intervals
    methods: dict[str, Any] = {"controller": lambda: ControllerSchedule(artifact, deterministic)}
    if compare:
        methods.update(constant=Constant, cosine=Cosine, calibrated=lambda: Calibrated(artifact.spec.prior_table))
    results = {}
    for name, make in methods.items():
        results[name] = run_task(task, make(), seed=seed, n_intervals=n, device=device, method=name)
        if tb_dir is not None:
            log_run(Path(tb_dir) / name, results[name])
    return results


def trained_intervals(history: list[dict]) -> list[dict]:
    """The records of intervals that trained at least one example (a batch larger than an
    interval leaves the next one empty: no training loss, the same example count)."""
    rows, last = [], None
    for h in history:
        if h.get("steps", 1) == 0 or h["examples"] == last:
            continue
        rows.append(h)
        last = h["examples"]
    return rows


def log_run(run_dir: Path, result: RunResult) -> None:
    """One method's run into its own TensorBoard directory, under :data:`TB_TAGS`, one value per
    interval (at the examples seen), and the test loss at the end."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir))
    try:
        for row in trained_intervals(result.history):
            log_record(writer, row)
        for tag, v in (("loss/test", result.test_loss), ("metric/test", result.test_metric)):
            if math.isfinite(v):
                writer.add_scalar(tag, v, result.steps)
    finally:
        writer.close()


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite float as None, for ``json.dumps(allow_nan=False)``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    return obj


def summary_table(results: dict[str, RunResult], metric_name: str) -> str:
    rows = [f"{'method':<11} {'final val':>10} {'best val':>10} {'test loss':>10} {'test ' + metric_name:>16} {'examples':>9}"]
    for name, r in results.items():
        status = "  (diverged)" if r.diverged else ""
        rows.append(
            f"{name:<11} {r.final_val_loss:>10.4f} {r.best_val_loss:>10.4f} {r.test_loss:>10.4f} "
            f"{r.test_metric:>16.4f} {r.examples:>9d}{status}"
        )
    return "\n".join(rows + [TABLE_NOTE])


def verdict_lines(results: dict[str, RunResult]) -> list[str]:
    """Who won on the test split: one line per method with its test loss and its ratio to the best
    (diverged runs last), the winner first."""
    order = sorted(results, key=lambda k: (results[k].diverged or not math.isfinite(results[k].test_loss), results[k].test_loss))
    best = results[order[0]].test_loss
    lines = []
    for rank, name in enumerate(order):
        r = results[name]
        if r.diverged or not math.isfinite(r.test_loss):
            lines.append(f"  {name}: diverged")
            continue
        ratio = r.test_loss / best if best > 0 else float("nan")
        tail = "  <- best test loss" if rank == 0 else f"  ({ratio:.3f}x the best)"
        lines.append(f"  {name}: test loss {r.test_loss:.4f}{tail}")
    tied = [k for k in order if math.isfinite(results[k].test_loss) and abs(results[k].test_loss - best) <= 1e-6 * abs(best)]
    head = (f"won on the test split: {order[0]}" if len(tied) < 2
            else f"tied on the test split: {', '.join(tied)} (the same run: the rule is the calibrated default)"
            if "controller" in tied and "calibrated" in tied else f"tied on the test split: {', '.join(tied)}")
    return [head] + lines


def plot_runs(results: dict[str, RunResult], path: Path, title: str) -> Path:
    """The compared methods' lr, batch size, weight decay and validation loss per interval against
    optimizer steps (a PNG, matplotlib's Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = (("val_loss", "validation loss"), ("lr", "lr (interval start)"), ("batch_size", "batch size"), ("weight_decay", "weight decay"))
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for name, r in results.items():
        rows = trained_intervals(r.history)
        x = [h.get("steps", h["examples"]) for h in rows]
        for ax, (key, _) in zip(axes, keys):
            ax.plot(x, [h[key] for h in rows], marker=".", label=name)
    for ax, (key, label) in zip(axes, keys):
        ax.set_xlabel("optimizer steps")
        ax.set_title(label)
        if key in ("val_loss", "lr", "weight_decay"):
            ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=90)
    except OSError as e:
        raise write_failed("the comparison plot", path, e) from e
    finally:
        plt.close(fig)
    return path


ConfigStore.instance().store(name="apply_schema", node=ApplyConfig)


@hydra.main(version_base="1.3", config_path="pkg://rlhpo.conf.apply", config_name="apply")
def main(cfg: DictConfig) -> None:
    with cli_errors():  # rlhpo's own errors: the message, exit code 1, no library traceback
        _main(cfg)


def _main(cfg: Any) -> None:
    from hydra.core.hydra_config import HydraConfig

    cfg = to_dataclass(cfg, ApplyConfig).validate()  # before any work: every field checked
    run_dir = check_writable(HydraConfig.get().runtime.output_dir)
    torch.set_num_threads(cfg.torch_threads)
    task = build_task(cfg.task, cfg.task_seed, cfg.budget_scale)
    results = apply(
        task,
        cfg.policy,
        seed=cfg.seed,
        compare=cfg.compare,
        n_intervals=cfg.n_intervals,
        device=cfg.device,
        deterministic=cfg.deterministic,
        tb_dir=run_dir / "tb",
    )
    decisions = results["controller"].history
    print(f"task {task.name} ({task.optimizer}, start lr {task.default_hparams.lr:.2e}, "
          f"batch {task.default_hparams.batch_size}, budget {task.budget_examples} examples), seed {cfg.seed}")
    print(f"family {task.family}: {family_split(task.family)}")
    print("controller decisions (per interval):")
    shown = trained_intervals(decisions)
    for h in shown:
        val = f"{h['val_loss']:.4f}" if math.isfinite(h["val_loss"]) else "nan"
        print(f"  {h['examples']:>8d} ex  lr {h['lr']:.2e}  batch {h['batch_size']:>4d}  wd {h['weight_decay']:.1e}  val {val}")
    if len(shown) < len(decisions):
        print(f"  ({len(decisions) - len(shown)} interval(s) trained no example -- the batch was larger than the interval -- "
              "and are not shown)")
    print(summary_table(results, task.metric_name))
    if len(results) > 1:
        print("\n".join(verdict_lines(results)))
        print(f"plot: {plot_runs(results, run_dir / 'compare.png', f'{task.name} (seed {cfg.seed})')}")
    try:
        (run_dir / "decisions.json").write_text(json.dumps(strict_json(decisions), indent=1, allow_nan=False))
        summary = {k: {**asdict(v), "history": None} for k, v in results.items()}
        (run_dir / "results.json").write_text(json.dumps(strict_json(summary), indent=1, allow_nan=False))
    except OSError as e:
        raise write_failed("decisions.json and results.json", run_dir, e) from e
    print(f"TensorBoard: tensorboard --logdir {run_dir / 'tb'}")


if __name__ == "__main__":
    main()
