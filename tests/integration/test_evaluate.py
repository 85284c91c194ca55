"""The evaluation harness: config errors, the controller and its replay, skipping what cannot run,
and ``python -m rlhpo.evaluate +experiment=smoke`` end to end as a user runs it."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_tiny_task

from rlhpo.errors import ArtifactError, ConfigError
from rlhpo.evaluate import METHODS, EvaluateConfig, run
from rlhpo.evaluation.baselines import Constant, Replay
from rlhpo.evaluation.runner import ControllerSchedule, log_history, run_task
from rlhpo.policy.artifact import load_artifact

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def policy_artifact(smoke_policy: Path) -> Path:
    """A policy from a few seconds of meta-training (conftest's shared smoke run)."""
    return smoke_policy


CALIBRATED = {
    "adam": {"lr": 1e-3, "weight_decay": 0.0}, "adamw": {"lr": 1e-3, "weight_decay": 1e-2}, "sgd": {"lr": 0.05, "weight_decay": 5e-4}
}


def tiny_config(**overrides: object) -> EvaluateConfig:
    base = dict(
        families=["tabular"], n_tasks=1, seeds=1, budget_scale=0.03, n_intervals=5, n_jobs=1, starts=["sensible"],
        calibrated=CALIBRATED,
    )
    base.update(overrides)
    return EvaluateConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        (dict(methods=["constant", "bayesopt"]), r"methods: unknown method\(s\) \['bayesopt'\]; allowed: \['constant', 'cosine'"),
        (dict(methods=[]), r"methods must be a non-empty list"),
        (dict(seeds=0), r"seeds must be an integer >= 1, got 0"),
        (dict(n_tasks=1.5), r"n_tasks must be an integer >= 1, got 1.5"),
        (dict(families=["imagenet"]), r"families: unknown task family 'imagenet'; allowed:"),
        (dict(budget_scale=0.0), r"budget_scale must be a finite number > 0"),
        (dict(pbt_population=1), r"pbt_population must be an integer >= 2"),
        (dict(pbt_interval=20, n_intervals=20), r"pbt_interval \(20\) must be below n_intervals \(20\)"),
        (dict(hypergradient_beta=1.0), r"hypergradient_beta must be a number in \(0, 1\)"),
        (dict(n_jobs=0), r"n_jobs must be an integer >= 1, or -1"),
        (dict(launcher="dask"), r"launcher must be one of \['joblib', 'ray'\], got 'dask'"),
        (dict(device="tpu"), r"device must be 'cpu', 'cuda' or 'cuda:N'"),
        (dict(starts=["good"]), r"starts: unknown start regime\(s\) \['good'\]; allowed: \['sensible', 'random'\]"),
        (dict(starts=[]), r"starts must be a non-empty list"),
        (dict(methods=["calibrated"], calibrated={}), r"calibrated: no default for optimizer\(s\)"),
        (dict(search_seeds=0), r"search_seeds must be an integer >= 1 or null"),
    ],
)
def test_config_errors_name_the_field(overrides: dict, pattern: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=pattern):
        run(EvaluateConfig(**overrides), tmp_path)  # type: ignore[arg-type]
    assert not (tmp_path / "runs.csv").exists()


def test_controller_keeps_budget_and_replay_reproduces_its_schedule(policy_artifact: Path) -> None:
    task = make_tiny_task()
    ctrl = run_task(task, ControllerSchedule(load_artifact(policy_artifact)), seed=0, n_intervals=5)
    assert ctrl.method == "controller" and not ctrl.diverged and len(ctrl.history) == 5
    # whatever batch sizes the controller picks, the run spends exactly the budget
    assert ctrl.examples == task.budget_examples and ctrl.steps > 0
    replay = run_task(task, Replay(ctrl.schedule()), seed=1000, n_intervals=5)
    assert replay.schedule() == ctrl.schedule()


def test_run_controller_replay_and_baselines(policy_artifact: Path, tmp_path: Path) -> None:
    cfg = tiny_config(methods=["constant", "cosine", "controller", "replay"], seeds=2, policy=str(policy_artifact))
    df = run(cfg, tmp_path)
    assert set(df.start) == {"sensible"}
    main, ablation = df[df.group == "main"], df[df.group == "replay"]
    assert sorted(main.method) == sorted(["constant", "cosine", "controller"] * 2)
    assert sorted(ablation.method) == ["controller", "controller", "replay", "replay"]
    assert set(ablation.seed) == {1000, 1001}
    assert (main[main.method == "constant"].norm_test_loss == 1.0).all()
    ctrl = main[main.method == "controller"]
    assert ctrl.best_no_tuning.isin(["constant", "cosine"]).all() and ctrl.ratio_vs_best_no_tuning.notna().all()
    assert main[main.method != "controller"].to_controller_final_val.notna().all()  # time-to-target, per baseline run
    assert (df.compute_examples == df.examples).all()  # single runs: compute is the run itself
    assert (df.examples == df.examples.iloc[0]).all() and (df.steps > 0).all() and (df.wall_s >= 0).all()
    # the replayed hyperparameters are the controller's on the same task and run seed
    hist = pd.read_csv(tmp_path / "histories.csv")
    for seed in (0, 1):
        a = hist[(hist.method == "controller") & (hist.group == "main") & (hist.seed == seed)]
        b = hist[(hist.method == "replay") & (hist.seed == seed + 1000)]
        assert a.lr.tolist() == pytest.approx(b.lr.tolist()) and a.batch_size.tolist() == b.batch_size.tolist()
    summary = (tmp_path / "summary.md").read_text()
    assert "| controller | 2 |" in summary and "Schedule-replay ablation (sensible start)" in summary
    assert "#### Where the controller loses" in summary
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(
        [f"{df.task[0]}_{kind}.png" for kind in ("val_loss", "controller_hparams", "anytime")] + ["performance_profile_sensible.png"]
    )
    assert (tmp_path / "tb" / df.task[0] / "sensible" / "replay_seed1001").is_dir()


def test_methods_compared_with_the_calibrated_run_bring_it_along(capsys: pytest.CaptureFixture) -> None:
    cfg = tiny_config(methods=["constant", "lr_grid", "seesaw"]).validate()
    assert cfg.methods == ["constant", "lr_grid", "seesaw", "calibrated"]
    assert capsys.readouterr().out.strip() == (
        "[rlhpo] adding calibrated to methods: its run is the reference of lr_grid, seesaw (time to result's target, headroom)"
    )
    tiny_config(methods=["calibrated", "lr_grid"]).validate()
    assert capsys.readouterr().out == ""
    with pytest.raises(ConfigError, match=r"calibrated: no default for optimizer\(s\) \[.*\]; .* drop \['seesaw', 'calibrated'\]"):
        EvaluateConfig(methods=["seesaw"], calibrated={}).validate()


def test_lr_grid_and_seesaw_end_to_end(tmp_path: Path) -> None:
    """Time to result in runs.csv for every run, the grid on the search seeds only at 7x the
    compute, seesaw at the same examples in fewer steps, the report's new tables and the anytime
    view (also from the report command)."""
    from rlhpo.evaluation.report import main as report_main
    from rlhpo.evaluation.ttr import COLUMNS

    cfg = tiny_config(methods=["constant", "seesaw", "lr_grid"], seeds=2, search_seeds=1, budget_scale=0.05)
    df = run(cfg, tmp_path).set_index(["method", "seed"])
    assert sorted(df.index) == sorted([(m, s) for m in ("constant", "seesaw", "calibrated") for s in (0, 1)] + [("lr_grid", 0)])
    assert df[list(COLUMNS)].notna().all().all()  # every run has a target: the calibrated run of its seed
    cal, grid, seesaw = df.loc["calibrated"], df.loc[("lr_grid", 0)], df.loc["seesaw"]
    assert (cal.speedup_steps >= 1).all() and (cal.steps_to_target <= cal.steps).all()
    assert grid.compute_examples == 7 * grid.examples and grid.lr_factor in (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8)
    assert grid.final_val_loss <= cal.loc[0].final_val_loss  # factor 1 is the calibrated run itself
    assert math.isclose(grid.headroom, 1 - grid.test_loss / cal.loc[0].test_loss)
    assert (seesaw.examples == cal.examples).all() and (seesaw.steps < cal.steps).all()
    assert (seesaw.batch_size_last > seesaw.batch_size_first).all()
    hist = pd.read_csv(tmp_path / "histories.csv")
    assert hist.groupby(["method", "seed"]).steps.apply(lambda s: s.is_monotonic_increasing).all()
    assert (hist.seconds >= 0).all()
    summary = (tmp_path / "summary.md").read_text()
    assert "Time to result:" in summary and "Headroom = 1 - lr_grid / calibrated test loss" in summary
    task = df.task.iloc[0]
    assert (tmp_path / "plots" / f"{task}_anytime.png").is_file()
    report_main([str(tmp_path / "runs.csv"), "--anytime", str(tmp_path / "anytime")])
    assert [p.name for p in (tmp_path / "anytime").iterdir()] == [f"{task}_anytime.png"]
    (tmp_path / "histories.csv").unlink()
    with pytest.raises(SystemExit):
        report_main([str(tmp_path / "runs.csv"), "--anytime", str(tmp_path / "anytime")])


def test_log_history_writes_finite_values_at_their_examples() -> None:
    class Writer:
        def __init__(self) -> None:
            self.scalars: list[tuple[str, float, int]] = []

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            self.scalars.append((tag, value, step))

    w = Writer()
    rows = [dict(examples=10, lr=0.1, val_loss=1.5), dict(examples=20, lr=0.05, val_loss=float("nan"))]
    log_history(w, "task", rows, keys=("lr", "val_loss", "missing"))
    assert w.scalars == [("task/lr", 0.1, 10), ("task/val_loss", 1.5, 10), ("task/lr", 0.05, 20)]
    log_history(None, "task", rows)  # no writer: nothing to do


def test_run_task_can_leave_the_test_split_unread() -> None:
    result = run_task(make_tiny_task(), Constant(), seed=0, n_intervals=3, test_split=False)
    assert not result.diverged and math.isnan(result.test_loss) and math.isnan(result.test_metric)
    assert math.isfinite(result.final_val_loss)


def test_the_entry_point_reexports_the_evaluation_modules() -> None:
    import rlhpo.evaluate as entry
    from rlhpo.evaluation import config, jobs, report

    assert entry.run is jobs.run and entry.run_job is jobs.run_job and entry.EvaluateConfig is config.EvaluateConfig
    assert entry.summarize is report.summarize and entry.METHODS == METHODS


def test_missing_policy_skips_controller_methods(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tiny_config(methods=["constant", "controller", "replay"], policy=str(tmp_path / "no_such_policy"))
    df = run(cfg, tmp_path / "out")
    assert list(df.method) == ["constant"]
    out = capsys.readouterr().out
    assert "skipping controller: the policy could not be loaded" in out and "skipping replay" in out
    assert "The controller was not evaluated" in (tmp_path / "out" / "summary.md").read_text()


def test_a_rerun_into_the_same_folder_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finished jobs are read back from results.jsonl; only the missing ones run."""
    from rlhpo.evaluation import jobs

    ran: list[str] = []
    real = jobs.run_job

    def counting(job: jobs.Job) -> jobs.JobResult:
        ran.append(job.method)
        return real(job)

    monkeypatch.setattr(jobs, "run_job", counting)
    first = run(tiny_config(methods=["constant", "cosine"], starts=["sensible", "random"]), tmp_path)
    assert sorted(ran) == ["constant", "constant", "cosine", "cosine"]
    ran.clear()
    second = run(tiny_config(methods=["constant", "cosine", "hypergradient"], starts=["sensible", "random"]), tmp_path)
    assert sorted(ran) == ["hypergradient", "hypergradient"]
    old = second[second.method != "hypergradient"].reset_index(drop=True)
    cols = ["task", "start", "method", "test_loss", "steps"]
    pd.testing.assert_frame_equal(old[cols], first[cols])
    # other run-defining settings: nothing is reused
    ran.clear()
    run(tiny_config(methods=["constant"], n_intervals=4), tmp_path)
    assert ran == ["constant"]


def test_missing_policy_fails_when_only_the_controller_was_asked_for(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no_such_policy"):
        run(tiny_config(methods=["controller"], policy=str(tmp_path / "no_such_policy")), tmp_path / "out")


def test_missing_optional_library_skips_its_method(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # makes `import optuna` fail
    monkeypatch.setitem(sys.modules, "ray.tune", None)
    df = run(tiny_config(methods=["constant", "optuna", "pbt"]), tmp_path)
    assert list(df.method) == ["constant"]
    out = capsys.readouterr().out
    assert "skipping optuna: `import optuna` failed" in out and "pip install 'rlhpo[search]'" in out
    assert "skipping pbt: `import ray.tune` failed" in out and "pip install 'rlhpo[ray]'" in out


def _cli(*args: str, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, RAY_DISABLE_USAGE_STATS="1", HYDRA_FULL_ERROR="0")
    return subprocess.run(
        [sys.executable, "-m", "rlhpo.evaluate", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_cli_config_error_is_clear(tmp_path: Path) -> None:
    proc = _cli("methods=[constant,bogus]", f"hydra.run.dir={tmp_path}", timeout=120)
    assert proc.returncode != 0
    assert "unknown method(s) ['bogus']; allowed:" in proc.stderr


def test_smoke_cli_runs_every_method(policy_artifact: Path, tmp_path: Path) -> None:
    """The user's smoke run: every method on one tiny task from both starts (about a minute)."""
    pytest.importorskip("optuna")
    pytest.importorskip("ray.tune")
    pytest.importorskip("schedulefree")
    pytest.importorskip("prodigyopt")
    proc = _cli("+experiment=smoke", f"policy={policy_artifact}", f"hydra.run.dir={tmp_path}", timeout=170)
    assert proc.returncode == 0, proc.stderr[-3000:]
    df = pd.read_csv(tmp_path / "runs.csv")
    assert set(df.method) == set(METHODS)
    for column in ("start", "wall_s", "steps", "test_loss", "test_metric", "metric", "examples", "compute_examples"):
        assert column in df.columns
    assert set(df.start) == {"sensible", "random"}
    # per start: every method once, plus the controller on the replay's fresh seed
    assert (df.groupby("start").size() == len(METHODS) + 1).all()
    assert not df.diverged.any() and df.test_loss.map(math.isfinite).all()
    assert (df.examples == df.examples.iloc[0]).all()  # one budget for every run
    search = df[df.method.isin(["optuna", "pbt"])]
    assert (search.compute_examples > search.examples).all()  # trials / population members counted
    # one search per task-seed, listed under both starts
    assert search.groupby("method").test_loss.nunique().eq(1).all()
    summary = (tmp_path / "summary.md").read_text()
    assert all(f"| {m} |" in summary for m in METHODS if m != "replay")
    assert "| method | runs | test loss / best no-tuning" in proc.stdout  # the table is printed too
    tb_runs = len(df[~df.method.isin(["optuna", "pbt"])]) + 2  # a search's run is logged once
    assert len(list((tmp_path / "tb").glob("*/*/*_seed*"))) == tb_runs


@pytest.mark.parametrize("policy", ["rule", "probe"])
def test_a_named_rule_is_what_the_controller_rows_run(policy: str, tmp_path: Path) -> None:
    """``policy=rule`` and ``policy=probe`` run those rules, not the learned
    policy of the folder they are built on: the rule's rows equal its prior's, the probe's record
    their branches."""
    df = run(tiny_config(methods=["prior_only", "controller"], seeds=1, policy=policy), tmp_path)
    ctrl, prior = df[df.method == "controller"].iloc[0], df[df.method == "prior_only"].iloc[0]
    if policy == "rule":
        assert ctrl.test_loss == pytest.approx(prior.test_loss, rel=1e-9) and ctrl.probe_examples == 0
    else:
        assert ctrl.probe_examples > 0 and ctrl.examples == prior.examples
