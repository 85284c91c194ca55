"""rlhpo.recommend end to end: recommend() on a tiny task, the CLI, Controller warm_start, the
evaluation harness's warm-start methods."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
from conftest import make_tiny_task
from torch import nn

import rlhpo
from rlhpo.evaluation.warm import WARM_METHODS, lr_range_test, run_warm
from rlhpo.recommend import Recommendation, RecommendWarning, recommend_task
from rlhpo.tasks import Hyperparams


def _in_bounds(hp: Hyperparams, n_train: int) -> bool:
    return 1e-5 <= hp.lr <= 1.0 and 1 <= hp.batch_size <= min(512, n_train) and 1e-6 <= hp.weight_decay <= 0.1


def test_recommend_on_a_tiny_task_is_within_bounds():
    task = make_tiny_task()
    model = task.model_fn()
    before = [p.detach().clone() for p in model.parameters()]
    rec = rlhpo.recommend(model, task.train, optimizer="adam", total_examples=task.budget_examples)
    assert isinstance(rec, rlhpo.Recommendation) and not rec.fallback
    assert _in_bounds(rec.hparams, len(task.train)) and isinstance(rec.hparams.batch_size, int)
    assert 0 < rec.confidence <= 1 and rec.lr_range[0] <= rec.hparams.lr <= rec.lr_range[1]
    assert rec.nearest and all(n["family"] for n in rec.nearest)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the model is untouched
    assert "recommended start" in str(rec)


def test_recommend_takes_a_dataloader_and_falls_back_for_a_model_without_parameters():
    task = make_tiny_task()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(task.train.x, task.train.y), batch_size=24)
    opt = torch.optim.SGD(task.model_fn().parameters(), lr=0.3, weight_decay=0.0)
    rec = rlhpo.recommend(task.model_fn(), loader, optimizer=opt, total_examples=500)
    assert not rec.fallback and rec.features.optimizer == "sgd"
    with pytest.warns(RecommendWarning, match="no parameters"):
        rec = rlhpo.recommend(nn.Identity(), loader, optimizer=opt, total_examples=500)
    assert rec.fallback and rec.confidence == 0 and rec.hparams == Hyperparams(0.3, 24, 0.0)


def test_recommend_task_falls_back_to_the_task_start():
    task = make_tiny_task(n=12)
    rec = recommend_task(task)
    assert _in_bounds(rec.hparams, len(task.train))
    task.model_fn = lambda: nn.Identity()
    with pytest.warns(RecommendWarning):
        assert recommend_task(task).hparams == task.default_hparams


def test_cli_prints_the_recommendation(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "rlhpo.recommend", "task=digits_mlp:3", "budget_scale=0.2"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "recommended start: lr" in out.stdout and "nearest meta-training tasks" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "rlhpo.recommend", "task=digits_mlp:x"], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert bad.returncode == 1 and "task seed" in bad.stderr + bad.stdout
    assert not list(tmp_path.iterdir())  # it only prints: no Hydra log (an empty __main__.log) in the working directory


def test_controller_warm_start_records_the_recommendation():
    task = make_tiny_task()
    model = task.model_fn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-5, weight_decay=1e-4)
    c = rlhpo.Controller.from_pretrained(optimizer=opt, total_examples=640, warm_start=True, model=model, train_data=task.train)
    rec = c.recommendation
    assert isinstance(rec, Recommendation) and c.history[0]["recommended"] and c.history[0]["lr"] == rec.hparams.lr
    assert opt.param_groups[0]["lr"] == pytest.approx(rec.hparams.lr)
    with pytest.warns(RecommendWarning, match="needs model"):
        c = rlhpo.Controller.from_pretrained(optimizer=opt, total_examples=640, warm_start=True)
    assert c.recommendation.fallback and c.history[0]["fallback"]
    plain = rlhpo.Controller.from_pretrained(optimizer=opt, total_examples=640)
    assert plain.history == []


@pytest.mark.parametrize("method", WARM_METHODS)
def test_warm_methods_count_probes_in_the_budget(method):
    task = make_tiny_task(budget=640)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = run_warm(method, task, seed=0, n_intervals=4, device="cpu", writer=None)
    assert r.compute_examples == r.examples == task.budget_examples and r.method == method
    assert r.info["probe_examples"] == task.budget_examples - r.history[-1]["examples"]
    if method == "lr_range_cosine":
        assert r.info["probe_examples"] > 0 and r.history[0]["lr"] > 0
    else:
        assert "recommended_lr" in r.info


def test_lr_range_test_finds_a_sane_lr():
    lr, info = lr_range_test(make_tiny_task(budget=4000, optimizer="sgd"))
    assert 1e-5 < lr < 1.0 and 200 <= info["probe_examples"] <= 800
