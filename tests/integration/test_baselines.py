"""Baseline schedules: each runs on a tiny task, keeps the example budget, and does what it claims."""

from __future__ import annotations

import math
from typing import Callable

import pytest
import torch
from conftest import make_tiny_task

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
from rlhpo.evaluation.runner import Schedule, run_task
from rlhpo.tasks import Hyperparams, Task
from rlhpo.training.session import TrainingSession

CALIBRATED = {
    "adam": {"lr": 3e-3, "weight_decay": 0.0}, "adamw": {"lr": 3e-3, "weight_decay": 1e-2}, "sgd": {"lr": 0.1, "weight_decay": 5e-4}
}

SCHEDULES: dict[str, Callable[[], Schedule]] = {
    "constant": Constant,
    "cosine": Cosine,
    "step": StepDecay,
    "plateau": Plateau,
    "hypergradient": Hypergradient,
    "calibrated": lambda: Calibrated(CALIBRATED),
    "schedulefree": ScheduleFree,
    "prodigy": Prodigy,
}


def train_by_hand(schedule: Schedule, task: Task, n_intervals: int = 4) -> TrainingSession:
    """Run ``schedule`` over the whole budget and return the session, to read the lr after the
    last step (run_task records each interval's starting values only)."""
    session = TrainingSession(task, seed=0)
    schedule.start(session, n_intervals)
    session.train_until(task.budget_examples, schedule._hook("before_step"), schedule._hook("after_step"))
    return session


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_keeps_the_budget(name: str) -> None:
    if name in ("schedulefree", "prodigy"):
        pytest.importorskip({"schedulefree": "schedulefree", "prodigy": "prodigyopt"}[name])
    task = make_tiny_task(budget=648)  # not a multiple of the batch size: the last batch is cut short
    result = run_task(task, SCHEDULES[name](), seed=0, n_intervals=4)
    assert result.method == name
    assert not result.diverged and math.isfinite(result.test_loss)
    assert result.examples == task.budget_examples  # exactly the budget
    assert result.steps == math.ceil(648 / 16)
    assert len(result.history) == 4
    # these baselines move the lr only (the calibrated one starts from its own lr and decay)
    wd = CALIBRATED["adam"]["weight_decay"] if name == "calibrated" else 1e-4
    assert all(h["batch_size"] == 16 and h["weight_decay"] == pytest.approx(wd) for h in result.history)


def test_cosine_decays_to_zero() -> None:
    task = make_tiny_task(lr=1e-2)
    result = run_task(task, Cosine(), n_intervals=4)
    lrs = [h["lr"] for h in result.history]
    assert lrs[1] > lrs[2] > lrs[3]
    assert train_by_hand(Cosine(), task).hparams.lr < 1e-3 * 1e-2


def test_step_decay_drops_tenfold_at_half_and_three_quarters() -> None:
    # 640 examples / batch 16 = 40 steps: milestones at steps 20 and 30, i.e. the ends of intervals 1 and 2
    result = run_task(make_tiny_task(lr=1e-2), StepDecay(), n_intervals=4)
    assert [h["lr"] for h in result.history] == pytest.approx([1e-2, 1e-2, 1e-3, 1e-4])


def test_plateau_halves_lr_after_patience_of_stalled_val_loss() -> None:
    task = make_tiny_task(lr=1e-2)
    session = TrainingSession(task)
    schedule = Plateau(factor=0.5, patience=2)
    schedule.start(session, 10)
    stats = session.train(16)
    for val_loss in (1.0, 0.9, 0.8):  # improving: no reduction
        schedule.end_interval(session, stats, val_loss)
    assert session.hparams.lr == pytest.approx(1e-2)
    for _ in range(2):  # stalled, but within patience
        schedule.end_interval(session, stats, 0.8)
    assert session.hparams.lr == pytest.approx(1e-2)
    schedule.end_interval(session, stats, 0.8)  # third stalled interval: patience exceeded
    assert session.hparams.lr == pytest.approx(5e-3)


def test_hypergradient_raises_a_too_small_lr_and_lowers_an_oscillating_one() -> None:
    small = run_task(make_tiny_task(regression=True, lr=1e-4, optimizer="adam"), Hypergradient(0.02), n_intervals=4)
    lrs = [h["lr"] for h in small.history]
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] > 1.3e-4 and lrs == sorted(lrs)
    # SGD with momentum at lr 0.3 on a linear regression oscillates: successive gradients disagree
    large = run_task(make_tiny_task(regression=True, lr=0.3, optimizer="sgd"), Hypergradient(0.02), n_intervals=4)
    assert not large.diverged
    assert large.history[-1]["lr"] < 0.9 * 0.3


def test_hypergradient_beta_must_keep_lr_positive() -> None:
    with pytest.raises(ValueError, match=r"beta must be in \(0, 1\)"):
        Hypergradient(1.5)


def test_replay_reproduces_a_recorded_schedule() -> None:
    task = make_tiny_task(lr=1e-2)
    recorded = run_task(task, StepDecay(), seed=0, n_intervals=4).schedule()
    replayed = run_task(task, Replay(recorded), seed=1, n_intervals=4)
    assert replayed.schedule() == recorded
    # batch size and weight decay too
    hand = [Hyperparams(1e-2, 8, 1e-4), Hyperparams(3e-3, 16, 1e-3), Hyperparams(1e-3, 32, 0.0), Hyperparams(1e-4, 4, 1e-2)]
    result = run_task(task, Replay(hand), seed=2, n_intervals=4)
    assert result.schedule() == hand
    assert result.examples == task.budget_examples


def test_optuna_search_counts_all_trials_and_is_seeded() -> None:
    pytest.importorskip("optuna")
    from rlhpo.evaluation.search import SearchSpace, optuna_search

    task = make_tiny_task(budget=320)
    a = optuna_search(task, seed=3, n_trials=3, n_intervals=2)
    b = optuna_search(task, seed=3, n_trials=3, n_intervals=2)
    assert a.method == "optuna" and a.schedule() == b.schedule() and a.test_loss == b.test_loss
    # three trials and the final run, each exactly the budget
    assert a.compute_examples == 4 * task.budget_examples
    assert a.info["tuned_schedule"] in ("constant", "cosine")  # the schedule is searched too
    space = SearchSpace().for_task(task)
    assert space.lr[0] <= a.info["tuned_lr"] <= space.lr[1]
    assert space.batch_size[0] <= a.info["tuned_batch_size"] <= space.batch_size[1] == 32


def test_search_space_clip() -> None:
    from rlhpo.evaluation.search import SearchSpace

    assert SearchSpace().clip(Hyperparams(50.0, 2000, 1e-9)) == Hyperparams(1.0, 512, 1e-6)
    assert SearchSpace().clip(Hyperparams(1e-9, 1, 0.5)) == Hyperparams(1e-5, 8, 0.1)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_calibrated_trains_at_the_calibrated_default_of_the_optimizer_kind(optimizer: str) -> None:
    task = make_tiny_task(lr=1e-5, optimizer=optimizer)
    session = train_by_hand(Calibrated(CALIBRATED), task)
    assert session.hparams.weight_decay == pytest.approx(CALIBRATED[optimizer]["weight_decay"])
    result = run_task(task, Calibrated(CALIBRATED), n_intervals=4)
    assert max(h["lr"] for h in result.history) <= CALIBRATED[optimizer]["lr"]
    assert max(h["lr"] for h in result.history) > 0.5 * CALIBRATED[optimizer]["lr"]  # cosine near its peak
    with pytest.raises(ValueError, match="no calibrated default for optimizer 'adam'"):
        run_task(task if optimizer == "adam" else make_tiny_task(), Calibrated({"sgd": CALIBRATED["sgd"]}))


@pytest.mark.parametrize("optimizer, cls", [("adamw", "AdamWScheduleFree"), ("adam", "AdamWScheduleFree"), ("sgd", "SGDScheduleFree")])
def test_schedulefree_replaces_the_optimizer_and_evaluates_at_the_averaged_weights(optimizer: str, cls: str) -> None:
    schedulefree = pytest.importorskip("schedulefree")
    task = make_tiny_task(lr=1e-2, optimizer=optimizer)
    schedule = ScheduleFree()
    session = TrainingSession(task)
    session.optimizer = schedule.make_optimizer(session)
    assert isinstance(session.optimizer, getattr(schedulefree, cls))
    g = session.optimizer.param_groups[0]
    assert g["lr"] == pytest.approx(1e-2) and g["weight_decay"] == pytest.approx(1e-4) and g["warmup_steps"] == 2
    session.train_until(320)
    y = [p.detach().clone() for p in session.model.parameters()]
    schedule.before_evaluate(session)  # eval mode: the parameters are the averaged sequence x
    assert not g["train_mode"] and any(not torch.equal(a, p) for a, p in zip(y, session.model.parameters()))
    schedule.after_evaluate(session)  # back to y for training
    assert g["train_mode"] and all(torch.allclose(a, p) for a, p in zip(y, session.model.parameters()))


def test_run_task_calls_the_evaluation_hooks_around_every_evaluation() -> None:
    calls: list[str] = []

    class Spy(Schedule):
        name = "spy"

        def before_evaluate(self, session: TrainingSession) -> None:
            calls.append("before")

        def after_evaluate(self, session: TrainingSession) -> None:
            calls.append("after")

    run_task(make_tiny_task(), Spy(), n_intervals=3)
    assert calls == ["before", "after"] * 4  # three validations and the test


def test_schedulefree_recomputes_batchnorm_statistics_at_the_averaged_weights() -> None:
    pytest.importorskip("schedulefree")
    from torch import nn

    task = make_tiny_task(lr=1e-2, optimizer="adamw")
    task.model_fn = lambda: nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 2))
    result = run_task(task, ScheduleFree(), n_intervals=3)
    assert not result.diverged and math.isfinite(result.test_loss)
    schedule = ScheduleFree()
    session = TrainingSession(task)
    session.optimizer = schedule.make_optimizer(session)
    session.train_until(320)
    bn = session.model[1]
    before = bn.running_mean.clone()
    schedule.before_evaluate(session)
    assert not torch.equal(before, bn.running_mean)  # recomputed at x
    schedule.after_evaluate(session)


def test_prodigy_runs_at_lr_one_under_warmup_and_cosine() -> None:
    prodigyopt = pytest.importorskip("prodigyopt")
    task = make_tiny_task(lr=1e-5, optimizer="adamw", budget=6400)  # 400 steps: d grows from d0
    schedule = Prodigy()
    result = run_task(task, schedule, n_intervals=4)
    assert not result.diverged
    g = schedule.scheduler.optimizer.param_groups[0]
    assert isinstance(schedule.scheduler.optimizer, prodigyopt.Prodigy)
    assert g["safeguard_warmup"] and g["use_bias_correction"] and g["weight_decay"] == pytest.approx(1e-4)
    assert g["d"] > 1e3 * g["d0"]  # it estimated a step size
    lrs = [h["lr"] for h in result.history]
    assert lrs[1] == pytest.approx(max(lrs)) and max(lrs) <= 1.0 and lrs[-1] < lrs[1]  # multiplier: warm-up, then cosine
