"""Evaluate the controller against baselines: ``python -m rlhpo.evaluate [overrides]``.

Every method trains through :func:`rlhpo.evaluation.runner.run_task` (PBT through the same
:class:`~rlhpo.training.session.TrainingSession`) with the same budget in training examples per run, on
the held-out task families by default. The Hydra run directory receives:

    runs.csv        one row per run: test loss and metric, best / final validation loss,
                    examples, compute (search trials included), diverged, speedups
    histories.csv   every run's per-interval hyperparameters and losses
    summary.md      the summary table per method, and whether the controller loses to a baseline
    plots/          validation loss vs examples per task (first seed), the controller's lr /
                    batch size / weight decay trajectories
    tb/             TensorBoard logs: tb/<task>/<method>_seed<k>
    config.yaml     the resolved configuration

Examples::

    python -m rlhpo.evaluate +experiment=smoke
    python -m rlhpo.evaluate policy=outputs/2026-11-23/15-00-00/policy methods=[constant,cosine,controller]
    python -m rlhpo.evaluate launcher=ray n_jobs=8

The library entry point is :func:`run`, which takes an :class:`EvaluateConfig` (no Hydra).
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import hydra
import numpy as np
import pandas as pd
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from rlhpo.cli import cli_errors, to_dataclass
from rlhpo.errors import ArtifactError, ConfigError
from rlhpo.evaluation.baselines import (
    Constant,
    Cosine,
    Hypergradient,
    Plateau,
    Replay,
    StepDecay,
)
from rlhpo.evaluation.runner import ControllerSchedule, RunResult, Schedule, run_task
from rlhpo.output import check_writable, write_failed
from rlhpo.policy.artifact import load_artifact
from rlhpo.tasks import Hyperparams, Task, TaskError, make_family, resolve_families

#: every method, in the order the summary lists them
METHODS: tuple[str, ...] = (
    "constant",
    "cosine",
    "step",
    "plateau",
    "hypergradient",
    "optuna",
    "pbt",
    "controller",
    "replay",
)
#: methods that need the policy artifact
POLICY_METHODS: tuple[str, ...] = ("controller", "replay")
#: optional methods: (module to import, pip extra that provides it)
OPTIONAL_METHODS: dict[str, tuple[str, str]] = {"optuna": ("optuna", "search"), "pbt": ("ray.tune", "ray")}
#: the replay ablation runs on these fresh seeds (seed + offset), never seen by the main runs
REPLAY_SEED_OFFSET = 1000
LAUNCHERS: tuple[str, ...] = ("joblib", "ray")


@dataclass
class EvaluateConfig:
    """``python -m rlhpo.evaluate``: the controller against baselines on held-out tasks.

    :param methods: methods to run, from ``METHODS``; ``replay`` also runs the controller
    :param families: task families (or groups "held_out", "meta_train", "all") to evaluate on
    :param n_tasks: task seeds per family
    :param task_seed_start: the first task seed (2000+: apart from meta-training's evaluation seeds)
    :param seeds: run seeds per task (0 .. seeds-1): model initialisation and batch order
    :param budget_scale: multiplies every task's example budget
    :param n_intervals: control intervals per run (the controller decides once per interval)
    :param policy: the controller's artifact: a pretrained name ("default") or a folder
    :param optuna_trials: Optuna trials per task and seed
    :param pbt_population: PBT population size
    :param pbt_interval: control intervals between PBT's exploit/explore steps
    :param hypergradient_beta: the hypergradient learning rate of hypergradient descent
    :param n_jobs: runs in parallel (-1: one per CPU); also the CPUs of a Ray instance started here
    :param launcher: ``joblib`` (loky processes) or ``ray`` (Ray remote tasks)
    :param device: where target networks train ("cpu", "cuda", "cuda:N")
    """

    methods: list[str] = field(default_factory=lambda: list(METHODS))
    families: list[str] = field(default_factory=lambda: ["held_out"])
    n_tasks: int = 2
    task_seed_start: int = 2000
    seeds: int = 5
    budget_scale: float = 1.0
    n_intervals: int = 20
    policy: str = "default"
    optuna_trials: int = 20
    pbt_population: int = 4
    pbt_interval: int = 4
    hypergradient_beta: float = 0.02
    n_jobs: int = 2
    launcher: str = "joblib"
    device: str = "cpu"

    def validate(self) -> "EvaluateConfig":
        """Check every field; raise :class:`ConfigError` naming the field and what is allowed."""
        if isinstance(self.methods, str) or not isinstance(self.methods, Sequence) or not self.methods:
            raise ConfigError(f"methods must be a non-empty list of {list(METHODS)}, got {self.methods!r}")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"methods: unknown method(s) {unknown}; allowed: {list(METHODS)}")
        self.methods = list(dict.fromkeys(self.methods))
        try:
            self.families = resolve_families(list(self.families))
        except TaskError as e:
            raise ConfigError(f"families: {e}") from None
        for name, low in (
            ("n_tasks", 1),
            ("task_seed_start", 0),
            ("seeds", 1),
            ("n_intervals", 1),
            ("optuna_trials", 1),
            ("pbt_population", 2),
            ("pbt_interval", 1),
        ):
            v = getattr(self, name)
            if not _is_int(v) or v < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}")
        if "pbt" in self.methods and self.pbt_interval >= self.n_intervals:
            raise ConfigError(
                f"pbt_interval ({self.pbt_interval}) must be below n_intervals ({self.n_intervals}), "
                "or PBT never exploits"
            )
        if not (isinstance(self.budget_scale, (int, float)) and math.isfinite(self.budget_scale) and self.budget_scale > 0):
            raise ConfigError(f"budget_scale must be a finite number > 0, got {self.budget_scale!r}")
        if not (isinstance(self.hypergradient_beta, (int, float)) and 0 < self.hypergradient_beta < 1):
            raise ConfigError(f"hypergradient_beta must be a number in (0, 1), got {self.hypergradient_beta!r}")
        if not isinstance(self.policy, str) or not self.policy:
            raise ConfigError(f"policy must be a pretrained name or an artifact folder, got {self.policy!r}")
        if not _is_int(self.n_jobs) or not (self.n_jobs >= 1 or self.n_jobs == -1):
            raise ConfigError(f"n_jobs must be an integer >= 1, or -1 for one per CPU, got {self.n_jobs!r}")
        if self.launcher not in LAUNCHERS:
            raise ConfigError(f"launcher must be one of {list(LAUNCHERS)}, got {self.launcher!r}")
        if not isinstance(self.device, str) or not (self.device == "cpu" or re.fullmatch(r"cuda(:\d+)?", self.device)):
            raise ConfigError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        return self

    @property
    def workers(self) -> int:
        """``n_jobs`` with -1 resolved to the CPU count."""
        return (os.cpu_count() or 1) if self.n_jobs == -1 else self.n_jobs


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def register_configs() -> None:
    """Register the schema with Hydra's ConfigStore (conf/evaluate/evaluate.yaml extends it)."""
    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)


# -- jobs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    """A task by family and seed: cheap to send to a worker, which samples the task itself."""

    family: str
    seed: int
    budget_scale: float

    def make(self) -> Task:
        return make_family(self.family, self.budget_scale).sample(self.seed)


@dataclass
class Job:
    """One run (an Optuna job is a whole search: its trials and the final run).

    :param group: "main" (the evaluation seeds) or "replay" (the fresh seeds of the ablation)
    """

    task: TaskSpec
    method: str
    seed: int
    group: str
    n_intervals: int
    device: str
    tb_root: Optional[str]
    policy: Optional[str] = None
    beta: float = 0.02
    optuna_trials: int = 20
    replay: Optional[list[Hyperparams]] = None


@dataclass
class JobResult:
    job: Job
    result: RunResult
    metric_name: str
    wall_s: float


def _tb_dir(tb_root: str, task_name: str, method: str, seed: int) -> str:
    safe = re.sub(r"[^\w.-]+", "_", task_name)
    return str(Path(tb_root) / safe / f"{method}_seed{seed}")


def _writer(job: Job, task: Task) -> Any:
    if job.tb_root is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(_tb_dir(job.tb_root, task.name, job.method, job.seed))


def make_schedule(job: Job) -> Schedule:
    """The schedule a single-run method trains under."""
    if job.method == "constant":
        return Constant()
    if job.method == "cosine":
        return Cosine()
    if job.method == "step":
        return StepDecay()
    if job.method == "plateau":
        return Plateau(factor=0.5, patience=2)
    if job.method == "hypergradient":
        return Hypergradient(job.beta)
    if job.method == "controller":
        return ControllerSchedule(load_artifact(job.policy or "default"))
    if job.method == "replay":
        return Replay(job.replay or [])
    raise ValueError(f"{job.method!r} is not a single-run method")


def run_job(job: Job) -> JobResult:
    """Run one job (in a worker process, or in this one); raise naming the job if it fails."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # parallelism is across runs; one thread each avoids oversubscription
    start = time.perf_counter()
    task = job.task.make()
    writer = _writer(job, task)
    try:
        if job.method == "optuna":
            from rlhpo.evaluation.search import optuna_search

            result = optuna_search(
                task, job.seed, job.optuna_trials, job.n_intervals, job.device, writer=writer
            )
        else:
            result = run_task(task, make_schedule(job), job.seed, job.n_intervals, job.device, writer, job.method)
    except Exception as e:
        raise RuntimeError(f"{job.method} on task {task.name!r} seed {job.seed} failed: {type(e).__name__}: {e}") from e
    finally:
        if writer is not None:
            writer.close()
        torch.set_num_threads(threads)
    return JobResult(job, result, task.metric_name, time.perf_counter() - start)


def _pbt_job(job: Job, population: int, interval: int, num_cpus: int) -> JobResult:
    from rlhpo.evaluation.search import pbt_search

    start = time.perf_counter()
    task = job.task.make()
    writer = _writer(job, task)
    try:
        result = pbt_search(task, job.seed, population, interval, job.n_intervals, job.device, num_cpus=num_cpus, writer=writer)
    finally:
        if writer is not None:
            writer.close()
    return JobResult(job, result, task.metric_name, time.perf_counter() - start)


def _execute(jobs: list[Job], config: EvaluateConfig, bar: Any) -> Iterator[JobResult]:
    """Run independent jobs in parallel (joblib loky processes, or Ray tasks), as they finish."""
    if not jobs:
        return
    if config.launcher == "ray":
        import ray

        remote = ray.remote(num_cpus=1)(run_job)
        pending = [remote.remote(j) for j in jobs]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            out = ray.get(done[0])
            bar.update(1)
            yield out
        return
    from joblib import Parallel, delayed

    parallel = Parallel(n_jobs=config.workers, backend="loky", return_as="generator_unordered")
    for out in parallel(delayed(run_job)(j) for j in jobs):
        bar.update(1)
        yield out


# -- availability ----------------------------------------------------------------------------


def _check_optional(methods: list[str]) -> dict[str, str]:
    """Which optional methods cannot run, and why."""
    import importlib

    skipped = {}
    for method, (module, extra) in OPTIONAL_METHODS.items():
        if method not in methods:
            continue
        try:
            importlib.import_module(module)
        except Exception as e:  # not only ImportError: a broken install fails in many ways
            skipped[method] = f"`import {module}` failed ({type(e).__name__}: {e}); install it with pip install 'rlhpo[{extra}]'"
    return skipped


def _check_policy(config: EvaluateConfig) -> tuple[Optional[str], dict[str, str]]:
    """The policy artifact's absolute path, or the controller methods to skip and why.

    :raises ArtifactError: when only controller methods were asked for and the policy cannot load
    """
    wanted = [m for m in config.methods if m in POLICY_METHODS]
    if not wanted:
        return None, {}
    try:
        artifact = load_artifact(config.policy)
    except ArtifactError as e:
        if set(config.methods) <= set(POLICY_METHODS):
            raise
        return None, {m: f"the policy could not be loaded: {e}" for m in wanted}
    if artifact.spec.n_intervals != config.n_intervals:
        print(
            f"[rlhpo] note: the policy was meta-trained with {artifact.spec.n_intervals} control intervals; "
            f"this evaluation uses n_intervals={config.n_intervals}"
        )
    return str(Path(artifact.path).resolve()), {}


# -- the harness -----------------------------------------------------------------------------


def run(config: EvaluateConfig, out_dir: str | os.PathLike) -> pd.DataFrame:
    """Evaluate every method of ``config`` and write the outputs to ``out_dir``.

    :param config: what to evaluate (validated here)
    :param out_dir: where runs.csv, histories.csv, summary.md, plots/ and tb/ go
    :returns: one row per run (as in runs.csv)
    """
    config.validate()
    out = check_writable(out_dir)  # before any run: a full disk or a read-only folder fails here
    tb_root = str(check_writable(out / "tb", "tb/ of the output directory"))
    (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))

    if config.launcher == "ray":
        try:
            import ray  # noqa: F401
        except ImportError as e:
            raise ConfigError(f"launcher=ray needs Ray ({e}); pip install 'rlhpo[ray]', or use launcher=joblib") from None
    skipped = _check_optional(config.methods)
    policy, policy_skipped = _check_policy(config)
    skipped.update(policy_skipped)
    for method, why in skipped.items():
        print(f"[rlhpo] skipping {method}: {why}")
    methods = [m for m in config.methods if m not in skipped]
    if not methods:
        raise ConfigError(f"no method can run: {'; '.join(f'{m}: {w}' for m, w in skipped.items())}")

    specs = [
        TaskSpec(family, config.task_seed_start + i, float(config.budget_scale))
        for family in config.families
        for i in range(config.n_tasks)
    ]
    for spec in specs:  # fail here, naming the task, rather than in a worker
        spec.make()
    seeds = list(range(config.seeds))

    def job(spec: TaskSpec, method: str, seed: int, group: str = "main", **kw: Any) -> Job:
        return Job(
            spec, method, seed, group, config.n_intervals, config.device, tb_root, policy=policy,
            beta=config.hypergradient_beta, optuna_trials=config.optuna_trials, **kw,
        )

    # The replay ablation needs the controller's schedules on the main seeds, and the controller
    # on the fresh seeds to compare with.
    single = [m for m in methods if m not in ("pbt", "replay")]
    if "replay" in methods and "controller" not in single:
        single.append("controller")
    phase1 = [job(s, m, k) for s in specs for k in seeds for m in single]
    if "replay" in methods:
        phase1 += [job(s, "controller", k + REPLAY_SEED_OFFSET, "replay") for s in specs for k in seeds]
    phase1.sort(key=lambda j: j.method != "optuna")  # the longest jobs first balance the workers
    n_replay = len(specs) * len(seeds) if "replay" in methods else 0
    n_pbt = len(specs) * len(seeds) if "pbt" in methods else 0

    from tqdm import tqdm

    started_ray = False
    results: list[JobResult] = []
    try:
        from rlhpo.evaluation.search import ensure_ray

        if config.launcher == "ray":
            started_ray = ensure_ray(config.workers)
        with tqdm(total=len(phase1) + n_replay + n_pbt, desc="runs", unit="run", dynamic_ncols=True) as bar:
            results += list(_execute(phase1, config, bar))
            if n_replay:
                by_key = {(r.job.task, r.job.seed): r.result for r in results if r.job.method == "controller" and r.job.group == "main"}
                replays = [
                    job(s, "replay", k + REPLAY_SEED_OFFSET, "replay", replay=by_key[(s, k)].schedule())
                    for s in specs
                    for k in seeds
                ]
                results += list(_execute(replays, config, bar))
            if n_pbt:  # started only now, so its daemons do not sit beside the joblib workers
                started_ray |= ensure_ray(config.workers)
            for s in specs if n_pbt else []:
                for k in seeds:  # sequential: each PBT already runs its population in parallel
                    results.append(_pbt_job(job(s, "pbt", k), config.pbt_population, config.pbt_interval, config.workers))
                    bar.update(1)
    finally:
        if started_ray:
            import ray

            ray.shutdown()

    if "controller" not in methods:  # it ran only as the replay ablation's dependency
        results = [r for r in results if not (r.job.method == "controller" and r.job.group == "main")]
    df = runs_frame(results)
    summary = summarize(df, skipped)
    try:
        df.to_csv(out / "runs.csv", index=False)
        histories_frame(results).to_csv(out / "histories.csv", index=False)
        (out / "summary.md").write_text(summary)
        plot(results, out / "plots")
    except OSError as e:
        print(summary)  # the results are not lost with the files
        raise write_failed("the evaluation's results", out, e) from e
    print(summary)
    print(f"[rlhpo] results in {out}")
    return df


# -- tables ----------------------------------------------------------------------------------


def _speedup(baseline: Optional[RunResult], controller: RunResult) -> float:
    """Examples ``baseline`` needs to reach the controller's final validation loss, divided by the
    controller's examples: inf if it never does, NaN if there is nothing to compare."""
    if baseline is None or controller.diverged or not math.isfinite(controller.final_val_loss) or controller.examples <= 0:
        return float("nan")
    needed = baseline.examples_to_reach(controller.final_val_loss)
    return float("inf") if needed is None else needed / controller.examples


def runs_frame(results: list[JobResult]) -> pd.DataFrame:
    """One row per run, with the test loss normalised by constant's (same task and seed) and the
    controller's speedups over cosine and constant."""
    index = {(r.result.task, r.job.method, r.job.seed, r.job.group): r.result for r in results}
    rows = []
    for r in results:
        res, j = r.result, r.job
        hist = res.history
        row: dict[str, Any] = dict(
            task=res.task,
            family=res.family,
            task_seed=j.task.seed,
            method=j.method,
            group=j.group,
            seed=j.seed,
            test_loss=res.test_loss,
            test_metric=res.test_metric,
            metric=r.metric_name,
            best_val_loss=res.best_val_loss,
            final_val_loss=res.final_val_loss,
            examples=res.examples,
            compute_examples=res.compute_examples,
            diverged=res.diverged,
        )
        for key in ("lr", "batch_size", "weight_decay"):
            row[f"{key}_start"] = hist[0][key] if hist else float("nan")
            row[f"{key}_end"] = hist[-1][key] if hist else float("nan")
        ref = index.get((res.task, "constant", j.seed, j.group))
        with np.errstate(invalid="ignore", divide="ignore"):
            row["norm_test_loss"] = float(np.float64(res.test_loss) / ref.test_loss) if ref is not None else float("nan")
        if j.method == "controller" and j.group == "main":
            row["speedup_vs_cosine"] = _speedup(index.get((res.task, "cosine", j.seed, "main")), res)
            row["speedup_vs_constant"] = _speedup(index.get((res.task, "constant", j.seed, "main")), res)
        else:
            row["speedup_vs_cosine"] = row["speedup_vs_constant"] = float("nan")
        row["wall_s"] = round(r.wall_s, 2)
        rows.append(row)
    df = pd.DataFrame(rows)
    order = {m: i for i, m in enumerate(METHODS)}
    return df.sort_values(["family", "task", "group", "seed", "method"], key=lambda c: c.map(order) if c.name == "method" else c).reset_index(drop=True)


def histories_frame(results: list[JobResult]) -> pd.DataFrame:
    """Every run's per-interval records, long format."""
    rows = [
        dict(task=r.result.task, method=r.job.method, group=r.job.group, seed=r.job.seed, **h)
        for r in results
        for h in r.result.history
    ]
    return pd.DataFrame(rows)


def _fmt(x: Optional[float], digits: int = 3) -> str:
    """A number with ``digits`` decimals; inf is "never" (a target never reached), NaN "n/a"."""
    if x is None or math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "never" if x > 0 else "-inf"
    return f"{x:.{digits}f}"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _win_rate(df: pd.DataFrame, method: str, baseline: str) -> float:
    """Fraction of task-seeds where ``method``'s test loss is below ``baseline``'s."""
    a = df[df.method == method].set_index(["task", "seed"]).test_loss
    b = df[df.method == baseline].set_index(["task", "seed"]).test_loss
    both = a.index.intersection(b.index)
    return float((a[both] < b[both]).mean()) if len(both) else float("nan")


def _median_iqr(values: pd.Series) -> tuple[float, float, float]:
    v = values.dropna().to_numpy(dtype=float)
    if not len(v):
        return float("nan"), float("nan"), float("nan")
    # diverged runs are inf: a huge stand-in keeps the interpolation clear of inf - inf = NaN
    big = 1e300
    q25, q50, q75 = (float(q) if abs(q) < 1e250 else math.copysign(math.inf, q) for q in np.percentile(np.clip(v, -big, big), [25, 50, 75]))
    return q50, q25, q75


def summarize(df: pd.DataFrame, skipped: Optional[dict[str, str]] = None) -> str:
    """The markdown summary: a table per method, the verdict sentence, the replay ablation."""
    main = df[df.group == "main"]
    header = [
        "method", "runs", "median norm. test loss", "IQR", "win rate vs constant", "win rate vs cosine",
        "median speedup vs cosine", "median speedup vs constant", "compute (examples)", "diverged",
    ]
    rows, medians = [], {}
    for method in [m for m in METHODS if m in set(main.method)]:
        d = main[main.method == method]
        med, q25, q75 = _median_iqr(d.norm_test_loss)
        medians[method] = med
        speed = [
            _fmt(_median_iqr(d[col])[0], 2) if method == "controller" else "—"
            for col in ("speedup_vs_cosine", "speedup_vs_constant")
        ]
        rows.append([
            method,
            str(len(d)),
            _fmt(med),
            f"{_fmt(q25)}–{_fmt(q75)}",
            "—" if method == "constant" else _fmt(_win_rate(main, method, "constant"), 2),
            "—" if method == "cosine" else _fmt(_win_rate(main, method, "cosine"), 2),
            *speed,
            f"{int(d.compute_examples.sum()):,}",
            str(int(d.diverged.sum())),
        ])
    n_tasks, n_seeds = main.task.nunique(), main.seed.nunique()
    text = [
        "# Evaluation summary",
        "",
        f"{n_tasks} task(s) x {n_seeds} seed(s), families: {', '.join(sorted(set(main.family)))}. "
        "Normalised test loss = test loss / constant's test loss on the same task and seed (lower is better; "
        "IQR = 25th–75th percentile). Win rate = fraction of task-seeds with a lower test loss than the baseline. "
        "Speedup = examples the baseline needs to reach the controller's final validation loss / the controller's "
        "examples (\"never\": it does not get there). Compute counts every example trained, search trials included.",
        "",
        _markdown(header, rows),
        "",
        _verdict(medians),
    ]
    text += _family_section(main)
    text += _replay_section(df)
    if skipped:
        text += ["", "Skipped methods:", ""] + [f"- {m}: {why}" for m, why in skipped.items()]
    return "\n".join(text) + "\n"


def _family_section(main: pd.DataFrame) -> list[str]:
    """Median normalised test loss per family and method: where the controller wins and loses."""
    methods = [m for m in METHODS if m in set(main.method)]
    families = sorted(set(main.family))
    rows = [
        [fam] + [_fmt(_median_iqr(main[(main.family == fam) & (main.method == m)].norm_test_loss)[0]) for m in methods]
        for fam in families
    ]
    return ["", "## Per family (median normalised test loss)", "", _markdown(["family", *methods], rows)]


def _verdict(medians: dict[str, float]) -> str:
    """A plain sentence: does the controller lose to cosine or to constant on median?"""
    ctrl = medians.get("controller")
    if ctrl is None or math.isnan(ctrl):
        return "The controller was not evaluated, so there is no verdict on it."
    lost, held = [], []
    for base in ("cosine", "constant"):
        ref = medians.get(base)
        if ref is None or math.isnan(ref):
            continue
        (lost if ctrl > ref else held).append(f"{base} ({_fmt(ctrl)} vs {_fmt(ref)})")
    if not lost and not held:
        return "Neither cosine nor constant was evaluated, so the controller has no baseline to lose to."
    if lost:
        s = f"On median normalised test loss the controller LOSES to {' and to '.join(lost)}"
        return s + (f", and does not lose to {held[0]}." if held else ".")
    return f"On median normalised test loss the controller does not lose to {' or to '.join(held)}."


def _replay_section(df: pd.DataFrame) -> list[str]:
    rep = df[df.group == "replay"]
    ctrl = rep[rep.method == "controller"].set_index(["task", "seed"]).test_loss
    replay = rep[rep.method == "replay"].set_index(["task", "seed"]).test_loss
    both = ctrl.index.intersection(replay.index)
    if not len(both):
        return []
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (replay[both] / ctrl[both]).replace([np.inf, -np.inf], np.nan)
    wins = int((ctrl[both] < replay[both]).sum())
    return [
        "",
        "## Schedule-replay ablation",
        "",
        f"The controller's per-interval hyperparameters, replayed open-loop on fresh seeds (seed + {REPLAY_SEED_OFFSET}), "
        f"against the closed-loop controller on the same fresh seeds: median test-loss ratio replay / controller = "
        f"{_fmt(float(ratio.median()) if ratio.notna().any() else float('nan'))}; the closed-loop controller is better on "
        f"{wins} of {len(both)} task-seeds.",
    ]


# -- plots -----------------------------------------------------------------------------------


def plot(results: list[JobResult], plot_dir: Path) -> None:
    """Validation loss vs examples of every method per task (first seed), and the controller's
    hyperparameter trajectories per task (all seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plot_dir.mkdir(parents=True, exist_ok=True)
    main = [r for r in results if r.job.group == "main"]
    order = {m: i for i, m in enumerate(METHODS)}
    for task in sorted({r.result.task for r in main}):
        runs = sorted((r for r in main if r.result.task == task), key=lambda r: (order[r.job.method], r.job.seed))
        first = min(r.job.seed for r in runs)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        positive = True
        for r in runs:
            if r.job.seed != first:
                continue
            pts = [(h["examples"], h["val_loss"]) for h in r.result.history if math.isfinite(h["val_loss"])]
            if pts:
                positive &= all(v > 0 for _, v in pts)
                ax.plot(*zip(*pts), marker=".", label=r.job.method + (" (diverged)" if r.result.diverged else ""))
        if positive:
            ax.set_yscale("log")
        ax.set(xlabel="training examples", ylabel="validation loss", title=f"{task} (seed {first})")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(plot_dir / f"{_safe(task)}_val_loss.png", dpi=110)
        plt.close(fig)

        ctrl = [r for r in runs if r.job.method == "controller"]
        if ctrl:
            fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
            for ax, key in zip(axes, ("lr", "batch_size", "weight_decay")):
                for r in ctrl:
                    h = r.result.history  # the value used during each interval, which ends at "examples"
                    xs = [0] + [x["examples"] for x in h]
                    ax.step(xs, [x[key] for x in h] + [h[-1][key]], where="post", label=f"seed {r.job.seed}")
                ax.set(xlabel="training examples", ylabel=key, yscale="log")
            axes[0].legend(fontsize=8)
            fig.suptitle(f"controller on {task}")
            fig.tight_layout()
            fig.savefig(plot_dir / f"{_safe(task)}_controller_hparams.png", dpi=110)
            plt.close(fig)


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name)


# -- the Hydra edge --------------------------------------------------------------------------

register_configs()


@hydra.main(version_base="1.3", config_path="pkg://rlhpo.conf.evaluate", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    """``python -m rlhpo.evaluate``: Hydra composes the config, :func:`run` does the work."""
    from hydra.core.hydra_config import HydraConfig

    with cli_errors():  # rlhpo's own errors: the message, exit code 1, no library traceback
        run(to_dataclass(cfg, EvaluateConfig), HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    # Run through the imported module, not __main__: joblib and Ray then pickle run_job and Job
    # by reference (rlhpo.evaluate.run_job) instead of by value from __main__.
    from rlhpo.evaluate import main as _main

    _main()
