"""Soak test: does meta-training's memory stay flat over a long run?

Launches ``python -m rlhpo.train`` (the default configuration, a step budget it will not reach,
output into a temporary or given directory; any Hydra overrides are passed on), samples the
resident memory of the whole process tree (the trainer, the forkserver and the vector-env
workers) at a fixed interval, stops the run and reports:

* every sample (RSS summed over the tree, USS summed over the tree, the trainer's own RSS,
  the number of processes and the newest checkpoint's step);
* the growth after warm-up: the last sample minus the first sample at or after the warm-up,
  in MiB and percent, and the least-squares slope over the post-warm-up samples in MiB/hour.

Writes the samples to a CSV. Exits 1 when the growth exceeds ``--max-growth-pct`` or the slope
exceeds ``--max-slope-mib-per-hour``; 2 when meta-training itself fails.

    python -m bench.soak --minutes 30 --out docs/results/soak.csv vec_env.n_envs=2
    python -m bench.soak --minutes 1 --interval 5 --warmup-minutes 0.25 +experiment=smoke
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

MIB = 2**20


@dataclass
class Sample:
    elapsed_s: float
    rss_mib: float  # RSS summed over the process tree (shared pages count once per process)
    uss_mib: float  # unique set size summed over the tree (memory freed if that process exited)
    trainer_rss_mib: float
    n_procs: int
    checkpoint_step: int  # the newest complete checkpoint's step (-1: none yet)


@dataclass
class Growth:
    warmup_rss_mib: float
    last_rss_mib: float
    growth_mib: float
    growth_pct: float
    slope_mib_per_hour: float  # least squares over post-warm-up samples (nan with fewer than 2)
    n_post_warmup: int


def sample_tree(pid: int, run_dir: Optional[Path] = None, t0: float = 0.0) -> Optional[Sample]:
    """Memory of process ``pid`` and all its descendants; None when ``pid`` is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
        root_rss = root.memory_info().rss
    except psutil.NoSuchProcess:
        return None
    rss = uss = 0
    n = 0
    for p in procs:
        try:
            info = p.memory_full_info()  # reads /proc/<pid>/smaps for USS: fine once a minute
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        except psutil.AccessDenied:
            info = None
        if info is None:
            continue
        rss += info.rss
        uss += getattr(info, "uss", info.rss)
        n += 1
    step = -1
    if run_dir is not None:
        from rlhpo.metatrain.checkpoints import list_checkpoints

        ckpts = list_checkpoints(run_dir / "checkpoints")
        if ckpts:
            step = int(ckpts[-1].name.split("_")[1])
    return Sample(time.monotonic() - t0, rss / MIB, uss / MIB, root_rss / MIB, n, step)


def growth_after_warmup(samples: Sequence[Sample], warmup_s: float, key: str = "rss_mib") -> Growth:
    """Growth from the first sample at or after ``warmup_s`` to the last one, and the slope."""
    post = [s for s in samples if s.elapsed_s >= warmup_s]
    if not post:
        nan = float("nan")
        return Growth(nan, nan, nan, nan, nan, 0)
    first, last = getattr(post[0], key), getattr(post[-1], key)
    slope = float("nan")
    if len(post) >= 2:
        xs = [s.elapsed_s / 3600.0 for s in post]
        ys = [getattr(s, key) for s in post]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        sxx = sum((x - mx) ** 2 for x in xs)
        if sxx > 0:
            slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    return Growth(first, last, last - first, 100.0 * (last - first) / first if first else float("nan"), slope, len(post))


def write_csv(path: Path, samples: Sequence[Sample]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(Sample.__dataclass_fields__))
        w.writeheader()
        for s in samples:
            w.writerow({k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(s).items()})


def report(samples: Sequence[Sample], warmup_s: float, max_growth_pct: float, max_slope_mib_per_hour: float) -> int:
    """Print the growth after warm-up of the tree's RSS and USS and the trainer's RSS; 1 when the
    tree's RSS grew beyond either limit, else 0."""
    verdict = 0
    for key, label in (("rss_mib", "RSS (tree)"), ("uss_mib", "USS (tree)"), ("trainer_rss_mib", "RSS (trainer)")):
        g = growth_after_warmup(samples, warmup_s, key)
        if g.n_post_warmup == 0:
            print(f"{label}: no sample after the warm-up of {warmup_s / 60:g} min")
            continue
        print(
            f"{label}: {g.warmup_rss_mib:.1f} MiB at warm-up -> {g.last_rss_mib:.1f} MiB at the end: "
            f"{g.growth_mib:+.1f} MiB ({g.growth_pct:+.1f}%), slope {g.slope_mib_per_hour:+.1f} MiB/hour "
            f"over {g.n_post_warmup} samples"
        )
        if key == "rss_mib":
            over_pct = g.growth_pct > max_growth_pct
            over_slope = math.isfinite(g.slope_mib_per_hour) and g.slope_mib_per_hour > max_slope_mib_per_hour
            if over_pct or over_slope:
                print(
                    f"soak: FAIL: RSS growth {g.growth_pct:+.1f}% (limit {max_growth_pct:g}%), "
                    f"slope {g.slope_mib_per_hour:+.1f} MiB/hour (limit {max_slope_mib_per_hour:g})"
                )
                verdict = 1
    if verdict == 0:
        print("soak: OK: memory within the limits")
    return verdict


def _stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM the run's process group (trainer and workers), SIGKILL what is left."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers of the group (workers, forkserver)
    except ProcessLookupError:
        pass
    proc.wait()


def _watch(cmd: list[str], log_path: Path, run_dir: Path, interval: float, minutes: float) -> tuple[subprocess.Popen, list[Sample], bool]:
    """Run ``cmd`` and sample its process tree every ``interval`` s for ``minutes``; stop it after."""
    samples: list[Sample] = []
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        t0 = time.monotonic()
        failed = False
        try:
            k = 0
            while True:
                s = sample_tree(proc.pid, run_dir, t0)
                if s is None or proc.poll() is not None:
                    failed = proc.poll() not in (None, 0)
                    break
                samples.append(s)
                print(
                    f"  {s.elapsed_s / 60:6.2f} min  RSS {s.rss_mib:8.1f} MiB  USS {s.uss_mib:8.1f} MiB  "
                    f"trainer {s.trainer_rss_mib:7.1f} MiB  procs {s.n_procs}  checkpoint step {s.checkpoint_step}",
                    flush=True,
                )
                k += 1
                if k * interval > minutes * 60 + 1e-9:
                    break
                time.sleep(max(0.0, t0 + k * interval - time.monotonic()))
        finally:
            _stop(proc)
    return proc, samples, failed


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Further arguments are Hydra overrides for python -m rlhpo.train.",
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="how long to run meta-training")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between memory samples")
    parser.add_argument("--warmup-minutes", type=float, default=5.0, help="growth is measured from this point on")
    parser.add_argument("--out", type=Path, default=Path("soak.csv"), help="CSV of the samples")
    parser.add_argument("--run-dir", type=Path, default=None, help="meta-training output (default: a temporary folder, removed)")
    parser.add_argument("--max-growth-pct", type=float, default=10.0, help="fail above this growth after warm-up (percent)")
    parser.add_argument("--max-slope-mib-per-hour", type=float, default=100.0, help="fail above this post-warm-up slope")
    args, overrides = parser.parse_known_args(argv)
    bad = [o for o in overrides if o.startswith("--")]
    if bad:
        parser.error(f"unknown option(s) {bad}; Hydra overrides are key=value")
    if args.minutes <= 0 or args.interval <= 0 or args.warmup_minutes < 0:
        parser.error("--minutes and --interval must be > 0, --warmup-minutes >= 0")

    run_dir = args.run_dir
    tmp = None
    if run_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="rlhpo_soak_"))
        run_dir = tmp / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "train.log"
    cmd = [
        sys.executable,
        "-m",
        "rlhpo.train",
        "total_timesteps=1000000000",  # never reached: the soak stops it
        "progress_bar=false",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    print("soak:", " ".join(cmd[2:]), flush=True)
    print(f"soak: {args.minutes:g} min, a sample every {args.interval:g} s, warm-up {args.warmup_minutes:g} min", flush=True)
    proc, samples, failed = _watch(cmd, log_path, run_dir, args.interval, args.minutes)
    write_csv(args.out, samples)
    tail = log_path.read_text()[-3000:]
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)
    if failed or not samples:
        print(f"soak: meta-training ended early (exit code {proc.returncode}); its output ends with:\n{tail}", file=sys.stderr)
        return 2

    print(f"\nsamples: {len(samples)} over {samples[-1].elapsed_s / 60:.1f} min; written to {args.out}")
    return report(samples, args.warmup_minutes * 60, args.max_growth_pct, args.max_slope_mib_per_hour)


if __name__ == "__main__":
    sys.exit(main())
