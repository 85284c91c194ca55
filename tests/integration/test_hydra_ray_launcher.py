"""Hydra multirun on Ray: hydra-ray-launcher's local launcher runs a meta-training sweep.

hydra-ray-launcher cannot be installed beside the pinned environment by pip's resolver (it
declares cloudpickle<3, joblib 1.6.0 needs cloudpickle>=3), so it is not in envs/*.txt. This test
installs the pinned version from envs/hydra-ray-launcher.txt with --no-deps into a temporary
folder, as the README says, and runs a two-job sweep through it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # subprocesses, Ray or minutes of meta-training

pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def launcher_path(tmp_path_factory) -> str:
    try:  # already installed into this environment
        import hydra_plugins.hydra_ray_launcher  # noqa: F401

        return ""
    except ImportError:
        pass
    target = tmp_path_factory.mktemp("hydra_ray_launcher")
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         "-r", str(ROOT / "envs" / "hydra-ray-launcher.txt")],
        capture_output=True, text=True, timeout=300,
    )
    assert pip.returncode == 0, pip.stderr[-3000:]
    return str(target)


def test_multirun_sweep_on_the_hydra_ray_launcher(launcher_path, tmp_path):
    env = {**os.environ, "RAY_DISABLE_USAGE_STATS": "1"}
    if launcher_path:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (launcher_path, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [
            sys.executable, "-m", "rlhpo.train", "-m", "hydra/launcher=ray", "seed=0,1", "+experiment=smoke",
            "total_timesteps=64", "checkpoint_every=64", "eval_every=0", "ppo.n_steps=32", "env.n_intervals=4",
            "+hydra.launcher.ray.init.num_cpus=2", "+hydra.launcher.ray.init.include_dashboard=false",
            f"hydra.sweep.dir={tmp_path}",
        ],
        capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Ray Launcher is launching 2 jobs" in proc.stderr + proc.stdout
    for job in ("0", "1"):
        assert (tmp_path / job / "policy" / "model.zip").exists()
        assert "seed: " + job in (tmp_path / job / "config.yaml").read_text()
