"""The soak script: memory sampling of the meta-training process tree, and its verdict."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.soak import Sample, growth_after_warmup, report

pytestmark = pytest.mark.slow  # subprocesses, Ray or minutes of meta-training

ROOT = Path(__file__).resolve().parents[2]


def _series(mib_per_min: float, n: int = 12, start: float = 500.0) -> list[Sample]:
    return [Sample(60.0 * k, start + mib_per_min * k, start / 2, start / 3, 5, -1) for k in range(n)]


def test_growth_is_measured_after_warmup():
    samples = _series(2.0)
    samples[0].rss_mib = 10.0  # start-up, before the warm-up: ignored
    g = growth_after_warmup(samples, warmup_s=300)
    assert g.n_post_warmup == 7
    assert g.warmup_rss_mib == pytest.approx(510.0) and g.last_rss_mib == pytest.approx(522.0)
    assert g.growth_mib == pytest.approx(12.0) and g.growth_pct == pytest.approx(100 * 12 / 510)
    assert g.slope_mib_per_hour == pytest.approx(120.0)


def test_verdict(capsys):
    assert report(_series(0.0), 300, max_growth_pct=10, max_slope_mib_per_hour=100) == 0
    assert "soak: OK" in capsys.readouterr().out
    assert report(_series(2.0), 300, max_growth_pct=10, max_slope_mib_per_hour=100) == 1  # 120 MiB/h
    assert "soak: FAIL" in capsys.readouterr().out
    assert report(_series(20.0), 300, max_growth_pct=10, max_slope_mib_per_hour=1e9) == 1  # +23% growth


def _soak(tmp_path, *args, timeout=90):
    # bench/ is run from the repository (python -m bench.<name>), not shipped in the wheel
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.run(
        [sys.executable, "-m", "bench.soak", "--out", str(tmp_path / "soak.csv"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_soak_samples_the_whole_process_tree(tmp_path):
    """A short real soak: the smoke run with two subprocess workers, sampled every 3 s."""
    proc = _soak(
        tmp_path,
        "--minutes", "0.4", "--interval", "3", "--warmup-minutes", "0.2",
        "--max-growth-pct", "1000", "--max-slope-mib-per-hour", "1e9",
        "--run-dir", str(tmp_path / "run"),
        "+experiment=smoke", "vec_env=subproc", "vec_env.n_envs=2", "checkpoint_every=64", "eval_every=0",
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "soak.csv")))
    assert len(rows) >= 6
    late = rows[-1]
    assert int(late["n_procs"]) >= 3  # the trainer and both workers (and the forkserver)
    assert float(late["rss_mib"]) > float(late["trainer_rss_mib"]) > 100
    assert int(late["checkpoint_step"]) > 0  # meta-training was really running
    assert "RSS (tree):" in proc.stdout and "MiB/hour" in proc.stdout and "soak: OK" in proc.stdout
    # stopped: no process of the run is left (they all ran in tmp_path)
    import psutil

    left = [p.pid for p in psutil.process_iter(["cwd"]) if p.info["cwd"] == str(tmp_path)]
    assert not left, f"processes of the soak still running: {left}"


def test_soak_reports_a_failed_run(tmp_path):
    proc = _soak(tmp_path, "--minutes", "1", "--interval", "1", "ppo.batch_size=7", timeout=60)
    assert proc.returncode == 2
    assert "meta-training ended early" in proc.stderr and "divisible by ppo.batch_size" in proc.stderr
