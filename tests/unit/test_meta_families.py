"""The broad meta-training families (``rlhpo.tasks.meta_*``).

* every one is registered in ``META_TRAIN_FAMILIES``; two seeds sample valid tasks whose model
  gives the right output shape and a finite loss and metric on a training batch;
* the architecture and the data vary with the seed;
* the coverage they promise: classification with 2-3 and with 20-50 classes, datasets from a few
  hundred to tens of thousands of examples, budgets from under one epoch to many epochs;
* the Gaussian NLL of ``hetero_gaussian`` really goes negative after a short training at the
  sensible start, and the Poisson NLL and robust losses run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlhpo.tasks import FAMILIES, META_TRAIN_FAMILIES, Task, make_family
from rlhpo.training.session import TrainingSession

#: the families of the rlhpo.tasks.meta_* modules
NEW = tuple(n for n, cls in FAMILIES.items() if cls.__module__.startswith("rlhpo.tasks.meta_"))
CLASSIFIERS = ("seq_recurrent", "set_attention", "shapes_conv", "toy_lnresnet", "categorical_fm")
SCALE = 0.05

_cache: dict[tuple[str, int, float], Task] = {}


def sample(name: str, seed: int, scale: float = SCALE) -> Task:
    if (name, seed, scale) not in _cache:
        _cache[(name, seed, scale)] = make_family(name, budget_scale=scale).sample(seed)
    return _cache[(name, seed, scale)]


def expected_output_shape(task: Task, batch: int) -> tuple[int, ...]:
    name = task.family
    if name in CLASSIFIERS:
        return (batch, task.info["classes"])
    if name == "manifold_ae":
        return (batch, task.info["dim"])
    if name == "hetero_gaussian":
        return (batch, 2)  # mean and log variance
    return (batch,)  # robust_regression, poisson_counts


def test_registered_as_meta_training_families():
    assert len(NEW) == 9 and len(META_TRAIN_FAMILIES) >= 12
    for name in NEW:
        assert name in META_TRAIN_FAMILIES and FAMILIES[name].name == name
        cls = FAMILIES[name]
        assert cls.data_source and cls.architecture and cls.description
    # one data generator and one architecture generator each: none shared with another family
    for attr in ("data_source", "architecture"):
        new = [getattr(FAMILIES[n], attr) for n in NEW]
        others = {getattr(cls, attr) for n, cls in FAMILIES.items() if n not in NEW}
        assert len(set(new)) == len(new) and not set(new) & others, attr


@pytest.mark.parametrize("name", NEW)
def test_two_seeds_sample_valid_tasks_with_the_right_output(name):
    for seed in (0, 1):
        task = sample(name, seed)
        assert task.validate() is task and task.family == name
        torch.manual_seed(0)
        model = task.model_fn()
        x, y = task.train.x[:8], task.train.y[:8]
        out = model(x)
        assert tuple(out.shape) == expected_output_shape(task, len(x)), (name, seed, out.shape)
        loss = task.loss_fn(out, y)
        assert loss.dim() == 0 and math.isfinite(float(loss.detach()))
        assert math.isfinite(task.metric_fn(out.detach(), y))
        if name in CLASSIFIERS:
            assert int(task.train.y.max()) < task.info["classes"]


@pytest.mark.parametrize("name", NEW)
def test_architecture_and_data_vary_with_the_seed(name):
    tasks = [sample(name, seed) for seed in range(4)]
    archs, n_params = set(), set()
    for task in tasks:
        torch.manual_seed(0)
        model = task.model_fn()
        n_params.add(sum(p.numel() for p in model.parameters()))
        archs.add(tuple(sorted((k, str(v)) for k, v in task.info.items() if k in _ARCH_KEYS)))
    assert len(archs) > 1 and len(n_params) > 1, name
    a, b = tasks[0].train, tasks[1].train
    assert a.x.shape != b.x.shape or not torch.equal(a.x, b.x)
    assert len({len(t.train) for t in tasks}) > 1  # the dataset size varies too


_ARCH_KEYS = {
    "cell", "hidden", "layers", "readout", "dim", "heads", "blocks", "pool", "channels", "norm", "groups",
    "residual", "downsample", "width", "depth", "activation", "post_norm", "two_layer", "bottleneck", "features",
}


def test_coverage_of_classes_sizes_and_budgets():
    """Few (2-3) and many (20-50) classes; a few hundred to tens of thousands of examples;
    budgets under one epoch and of many epochs (at the meta-training budget scale 0.5)."""
    classes, sizes, epochs = set(), [], []
    for name in NEW:
        for seed in range(10):
            task = sample(name, seed, 0.5)
            if name in CLASSIFIERS:
                classes.add(task.info["classes"])
            n = len(task.train) + len(task.val) + len(task.test)
            sizes.append(n)
            epochs.append(task.budget_examples / len(task.train))
    assert any(c <= 3 for c in classes) and any(c >= 20 for c in classes)
    assert min(sizes) < 1000 and max(sizes) > 10000
    assert min(epochs) < 1.0 and max(epochs) > 10.0


def test_gaussian_nll_goes_negative_at_the_sensible_start():
    task = sample("hetero_gaussian", 1, 0.5).with_start("sensible")
    session = TrainingSession(task, seed=0)
    first, _ = session.evaluate("val")
    session.train(2500)
    val, _ = session.evaluate("val")
    assert math.isfinite(val) and val < 0.0 < first, (first, val)
    # the metric is the negated loss
    with torch.no_grad():
        out = session.model(task.val.x)
    assert task.metric_fn(out, task.val.y) == pytest.approx(-float(task.loss_fn(out, task.val.y)), rel=1e-5)


@pytest.mark.parametrize("name", ["robust_regression", "poisson_counts"])
def test_losses_beyond_mse_decrease_at_the_sensible_start(name):
    task = sample(name, 0, 0.5).with_start("sensible")
    session = TrainingSession(task, seed=0)
    first, _ = session.evaluate("train")
    session.train(1500)
    after, _ = session.evaluate("train")
    assert math.isfinite(after) and after < first, (name, first, after)


def test_robust_regression_samples_both_losses():
    losses = {sample("robust_regression", seed).info["loss"] for seed in range(6)}
    assert losses == {"huber", "l1"}


def test_point_sets_are_permutation_invariant():
    task = sample("set_attention", 0)
    torch.manual_seed(0)
    model = task.model_fn().eval()
    x = task.train.x[:4]
    perm = torch.as_tensor(np.random.default_rng(0).permutation(x.shape[1]))
    with torch.no_grad():
        assert torch.allclose(model(x), model(x[:, perm]), atol=1e-5)
