"""The jobs of ``python -m rlhpo.evaluate`` and how they run: :func:`run` plans one job per task,
start regime, method and seed, runs them in parallel (joblib loky processes or Ray tasks) and
writes the report (:mod:`rlhpo.evaluation.report`).

The evaluation is resumable: every finished job is appended to ``results.jsonl`` in the output
folder as it completes, and a rerun into the same folder (same run-defining settings) skips the
jobs found there.

Every single-run method trains through :func:`rlhpo.evaluation.runner.run_task`; Optuna and PBT
through :mod:`rlhpo.evaluation.search`, on the same :class:`~rlhpo.training.session.TrainingSession`.
Workers import this module (not ``rlhpo.evaluate``): :func:`run_job` and :class:`Job` are
pickled by reference to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import pandas as pd
import torch
from omegaconf import OmegaConf

from rlhpo.errors import ArtifactError, ConfigError
from rlhpo.evaluation.baselines import (
    Calibrated,
    Constant,
    Cosine,
    Hypergradient,
    Plateau,
    Prodigy,
    Replay,
    ScheduleFree,
    StepDecay,
)
from rlhpo.evaluation.config import (
    OPTIONAL_METHODS,
    POLICY_METHODS,
    REPLAY_SEED_OFFSET,
    EvaluateConfig,
)
from rlhpo.evaluation.report import (
    histories_frame,
    plot,
    plot_profiles,
    runs_frame,
    safe_name,
    summarize,
)
from rlhpo.evaluation.runner import ControllerSchedule, RunResult, Schedule, run_task
from rlhpo.output import check_writable, write_failed
from rlhpo.policy.artifact import load_artifact
from rlhpo.tasks import Hyperparams, Task, make_family

# -- jobs ------------------------------------------------------------------------------------


#: the ``start`` of a search method's task: it searches its own hyperparameters, whatever the start
ANY_START = "any"


@dataclass(frozen=True)
class TaskSpec:
    """A task by family, seed and start regime: cheap to send to a worker, which samples the task
    itself. ``start`` is "sensible" or "random" (:meth:`Task.with_start`), or "any" (the sampled
    task as it is, for the search methods, which ignore the start)."""

    family: str
    seed: int
    budget_scale: float
    start: str = "random"

    def make(self) -> Task:
        task = make_family(self.family, self.budget_scale).sample(self.seed)
        return task if self.start == ANY_START else task.with_start(self.start)


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
    calibrated: Optional[dict] = None

    @property
    def key(self) -> tuple:
        """What identifies the job's result in results.jsonl."""
        return (self.task.family, self.task.seed, self.task.start, self.method, self.seed, self.group)


@dataclass
class JobResult:
    job: Job
    result: RunResult
    metric_name: str
    wall_s: float


def _tb_dir(tb_root: str, task_name: str, start: str, method: str, seed: int) -> str:
    return str(Path(tb_root) / safe_name(task_name) / start / f"{method}_seed{seed}")


def _writer(job: Job, task: Task) -> Any:
    if job.tb_root is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(_tb_dir(job.tb_root, task.name, job.task.start, job.method, job.seed))


def make_schedule(job: Job) -> Schedule:
    """The schedule a single-run method trains under."""
    if job.method == "constant":
        return Constant()
    if job.method == "cosine":
        return Cosine()
    if job.method == "calibrated":
        return Calibrated(job.calibrated or {})
    if job.method == "schedulefree":
        return ScheduleFree()
    if job.method == "prodigy":
        return Prodigy()
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
    task = job.task.make()
    writer = _writer(job, task)
    start = time.perf_counter()  # the training only: not the data's generation, not the writer's import
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
    _note_start(result, task)
    return JobResult(job, result, task.metric_name, time.perf_counter() - start)


def _note_start(result: RunResult, task: Task) -> None:
    """Record the task's optimizer and starting values in the result (the report's start columns)."""
    hp = task.default_hparams
    result.info.update(optimizer=task.optimizer, start_lr=hp.lr, start_batch_size=hp.batch_size, start_weight_decay=hp.weight_decay)


def _pbt_job(job: Job, population: int, interval: int, num_cpus: int) -> JobResult:
    from rlhpo.evaluation.search import pbt_search

    task = job.task.make()
    writer = _writer(job, task)
    start = time.perf_counter()
    try:
        result = pbt_search(task, job.seed, population, interval, job.n_intervals, job.device, num_cpus=num_cpus, writer=writer)
    finally:
        if writer is not None:
            writer.close()
    _note_start(result, task)
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


def _runnable_methods(config: EvaluateConfig) -> tuple[list[str], dict[str, str], Optional[str]]:
    """The methods that can run, the skipped ones with why, and the policy's path.

    :raises ConfigError: when Ray is the launcher but missing, or when no method can run
    """
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
    return methods, skipped, policy


# -- the plan --------------------------------------------------------------------------------


@dataclass
class _Plan:
    """What :func:`run` runs: the tasks, start regimes, seeds and methods, and how each job is
    configured."""

    config: EvaluateConfig
    methods: list[str]
    specs: list[TaskSpec]  # one per task and start regime
    search_specs: list[TaskSpec]  # one per task, start "any" (the search methods)
    seeds: list[int]
    tb_root: str
    policy: Optional[str]

    @classmethod
    def make(cls, config: EvaluateConfig, methods: list[str], tb_root: str, policy: Optional[str]) -> "_Plan":
        tasks = [(family, config.task_seed_start + i) for family in config.families for i in range(config.n_tasks)]
        scale = float(config.budget_scale)
        specs = [TaskSpec(f, t, scale, start) for f, t in tasks for start in config.starts]
        search_specs = [TaskSpec(f, t, scale, ANY_START) for f, t in tasks]
        for spec in specs:  # fail here, naming the task, rather than in a worker
            spec.make()
        return cls(config, methods, specs, search_specs, list(range(config.seeds)), tb_root, policy)

    def job(self, spec: TaskSpec, method: str, seed: int, group: str = "main", **kw: Any) -> Job:
        c = self.config
        return Job(
            spec, method, seed, group, c.n_intervals, c.device, self.tb_root, policy=self.policy,
            beta=c.hypergradient_beta, optuna_trials=c.optuna_trials, calibrated=dict(c.calibrated), **kw,
        )

    def independent_jobs(self) -> list[Job]:
        """The jobs that need no other job's result, the longest (Optuna) first.

        The replay ablation needs the controller's schedules on the main seeds, and the
        controller on the fresh seeds to compare with."""
        single = [m for m in self.methods if m not in ("pbt", "replay", "optuna")]
        if "replay" in self.methods and "controller" not in single:
            single.append("controller")
        jobs = []
        if "optuna" in self.methods:
            jobs += [self.job(s, "optuna", k) for s in self.search_specs for k in self.search_seeds]
        jobs += [self.job(s, m, k) for s in self.specs for k in self.seeds for m in single]
        if "replay" in self.methods:
            jobs += [self.job(s, "controller", k + REPLAY_SEED_OFFSET, "replay") for s in self.specs for k in self.seeds]
        return jobs

    def replay_jobs(self, results: list[JobResult]) -> list[Job]:
        """The open-loop replays of the controller's schedules on the main seeds."""
        by_key = {(r.job.task, r.job.seed): r.result for r in results if r.job.method == "controller" and r.job.group == "main"}
        return [
            self.job(s, "replay", k + REPLAY_SEED_OFFSET, "replay", replay=by_key[(s, k)].schedule())
            for s in self.specs
            for k in self.seeds
        ]

    def pbt_jobs(self) -> list[Job]:
        return [self.job(s, "pbt", k) for s in self.search_specs for k in self.search_seeds] if "pbt" in self.methods else []

    @property
    def search_seeds(self) -> list[int]:
        n = self.config.search_seeds
        return self.seeds if n is None else self.seeds[:n]

    def fingerprint(self) -> str:
        """What makes a stored result reusable: the settings that change a run's outcome."""
        c = self.config
        keys = dict(
            budget_scale=c.budget_scale, n_intervals=c.n_intervals, policy=self.policy, optuna_trials=c.optuna_trials,
            pbt_population=c.pbt_population, pbt_interval=c.pbt_interval, beta=c.hypergradient_beta,
            calibrated=c.calibrated, device=c.device,
        )
        return hashlib.sha1(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[:12]


# -- resuming --------------------------------------------------------------------------------

RESULTS_FILE = "results.jsonl"


class _Store:
    """results.jsonl: one finished job per line, appended as it completes; read back on resume."""

    def __init__(self, out: Path, plan: _Plan) -> None:
        self.path, self.plan, self.fp = out / RESULTS_FILE, plan, plan.fingerprint()

    def load(self) -> dict[tuple, JobResult]:
        done: dict[tuple, JobResult] = {}
        if not self.path.exists():
            return done
        stale = 0
        for line in self.path.read_text().splitlines():
            try:
                d = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if d.get("fp") != self.fp:
                stale += 1
                continue
            family, task_seed, start, method, seed, group = d["key"]
            spec = TaskSpec(family, int(task_seed), float(self.plan.config.budget_scale), start)
            job = self.plan.job(spec, method, int(seed), group)
            result = RunResult(**d["result"])
            done[job.key] = JobResult(job, result, d["metric_name"], float(d["wall_s"]))
        if stale:
            print(f"[rlhpo] {self.path}: {stale} stored result(s) from other settings ignored")
        if done:
            print(f"[rlhpo] resuming: {len(done)} finished job(s) found in {self.path}")
        return done

    def append(self, r: JobResult) -> None:
        line = dict(key=list(r.job.key), fp=self.fp, metric_name=r.metric_name, wall_s=r.wall_s, result=asdict(r.result))
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")


# -- the harness -----------------------------------------------------------------------------


def _run_plan(plan: _Plan, store: Optional[_Store] = None) -> list[JobResult]:
    """Run every job of ``plan`` not already in ``store``: the independent ones, then the
    replays, then PBT."""
    from tqdm import tqdm

    config = plan.config
    done = store.load() if store is not None else {}
    results: list[JobResult] = list(done.values())

    def todo(jobs: list[Job]) -> list[Job]:
        return [j for j in jobs if j.key not in done]

    def keep(r: JobResult) -> JobResult:
        if store is not None:
            store.append(r)
        return r

    phase1 = todo(plan.independent_jobs())
    n_replay = len(plan.specs) * len(plan.seeds) if "replay" in plan.methods else 0
    pbt = todo(plan.pbt_jobs())
    started_ray = False
    try:
        from rlhpo.evaluation.search import ensure_ray

        if config.launcher == "ray":
            started_ray = ensure_ray(config.workers)
        with tqdm(total=len(phase1) + n_replay + len(pbt), desc="runs", unit="run", dynamic_ncols=True) as bar:
            results += [keep(r) for r in _execute(phase1, config, bar)]
            if n_replay:
                replays = plan.replay_jobs(results)
                bar.update(len(replays) - len(todo(replays)))
                results += [keep(r) for r in _execute(todo(replays), config, bar)]
            if pbt:  # started only now, so its daemons do not sit beside the joblib workers
                started_ray |= ensure_ray(config.workers)
            for job in pbt:  # sequential: each PBT already runs its population in parallel
                results.append(keep(_pbt_job(job, config.pbt_population, config.pbt_interval, config.workers)))
                bar.update(1)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    wanted = {j.key for j in plan.independent_jobs() + plan.pbt_jobs()} | {
        (s.family, s.seed, s.start, "replay", k + REPLAY_SEED_OFFSET, "replay") for s in plan.specs for k in plan.seeds
    }
    results = [r for r in results if r.job.key in wanted]  # a resumed folder may hold other jobs
    if "controller" not in plan.methods:  # it ran only as the replay ablation's dependency
        results = [r for r in results if not (r.job.method == "controller" and r.job.group == "main")]
    return results


def _write_report(results: list[JobResult], skipped: dict[str, str], out: Path, starts: list[str]) -> pd.DataFrame:
    """Write runs.csv, histories.csv, summary.md and plots/; print the summary."""
    df = runs_frame(results, starts)
    summary = summarize(df, skipped)
    try:
        df.to_csv(out / "runs.csv", index=False)
        histories_frame(results).to_csv(out / "histories.csv", index=False)
        (out / "summary.md").write_text(summary)
        plot(results, out / "plots")
        plot_profiles(df, out / "plots")
    except OSError as e:
        print(summary)  # the results are not lost with the files
        raise write_failed("the evaluation's results", out, e) from e
    print(summary)
    print(f"[rlhpo] results in {out}")
    return df


def run(config: EvaluateConfig, out_dir: str | os.PathLike) -> pd.DataFrame:
    """Evaluate every method of ``config`` and write the outputs to ``out_dir``.

    Resumable: jobs already in ``out_dir/results.jsonl`` (from a run with the same run-defining
    settings) are not run again.

    :param config: what to evaluate (validated here)
    :param out_dir: where runs.csv, histories.csv, summary.md, plots/, tb/ and results.jsonl go
    :returns: one row per run and start regime (as in runs.csv)
    """
    config.validate()
    out = check_writable(out_dir)  # before any run: a full disk or a read-only folder fails here
    tb_root = str(check_writable(out / "tb", "tb/ of the output directory"))
    (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))
    methods, skipped, policy = _runnable_methods(config)
    plan = _Plan.make(config, methods, tb_root, policy)
    return _write_report(_run_plan(plan, _Store(out, plan)), skipped, out, list(config.starts))
