"""How the jobs of ``python -m rlhpo.evaluate`` run: in parallel as joblib loky processes or Ray
tasks (:func:`_execute`), the replays after the controller, PBT last (:func:`_run_plan`).

The evaluation is resumable: every finished job is appended to ``results.jsonl`` in the output
folder as it completes (:class:`_Store`), and a rerun into the same folder (same run-defining
settings) skips the jobs found there.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from rlhpo.evaluation.config import REPLAY_SEED_OFFSET, EvaluateConfig
from rlhpo.evaluation.plan import _Plan
from rlhpo.evaluation.runner import RunResult
from rlhpo.evaluation.worker import Job, JobResult, TaskSpec, _pbt_job, run_job


def _execute(
    jobs: list[Job], config: EvaluateConfig, bar: Any, run_one: Callable[[Job], JobResult] = run_job
) -> Iterator[JobResult]:
    """Run independent jobs in parallel (joblib loky processes, or Ray tasks), as they finish:
    ``run_one`` (:func:`~rlhpo.evaluation.worker.run_job`) on each."""
    if not jobs:
        return
    if config.launcher == "ray":
        import ray

        remote = ray.remote(num_cpus=1)(run_one)
        pending = [remote.remote(j) for j in jobs]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            out = ray.get(done[0])
            bar.update(1)
            yield out
        return
    from joblib import Parallel, delayed

    parallel = Parallel(n_jobs=config.workers, backend="loky", return_as="generator_unordered")
    for out in parallel(delayed(run_one)(j) for j in jobs):
        bar.update(1)
        yield out


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


def _run_plan(
    plan: _Plan, store: Optional[_Store] = None, run_one: Callable[[Job], JobResult] = run_job
) -> list[JobResult]:
    """Run every job of ``plan`` not already in ``store``: the independent ones, then the
    replays, then PBT (``run_one`` runs each job but PBT's: see :func:`_execute`)."""
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
            results += [keep(r) for r in _execute(phase1, config, bar, run_one)]
            if n_replay:
                replays = plan.replay_jobs(results)
                bar.update(len(replays) - len(todo(replays)))
                results += [keep(r) for r in _execute(todo(replays), config, bar, run_one)]
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
