"""The held-out split is clean, and tasks start from either regime.

* groups: ``meta_train``, ``dev``, ``final`` and ``near`` partition the built-in families;
  ``held_out`` is ``dev`` + ``final`` + ``near``;
* clean transfer: no ``dev``/``final`` family shares its data source or its architecture generator
  with a meta-training family. Proved three ways: the families' declared ``data_source`` and
  ``architecture``; the layer types of sampled models (every one has a layer type no
  meta-training model has, except the ``dev`` family ``friedman_resmlp``: see
  :data:`SHARES_LAYER_TYPES`); and sampling every ``dev``/``final`` family with the
  meta-training generators (``make_mlp``, ``sample_mlp_arch``, ``make_classification``, the
  digits loader, the data and architecture generators of the ``meta_*`` families)
  booby-trapped to raise;
* :meth:`Task.with_start`: ``"sensible"`` is :data:`SENSIBLE_STARTS` at the usual batch size,
  ``"random"`` the sampled start; anything else raises.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch
from torch import nn

import rlhpo.tasks as tasks_mod
from rlhpo.errors import TaskError
from rlhpo.evaluation.baselines import Constant
from rlhpo.evaluation.runner import run_task
from rlhpo.tasks import (
    DEV_FAMILIES,
    FAMILIES,
    FAMILY_GROUPS,
    FINAL_FAMILIES,
    HELD_OUT_FAMILIES,
    META_TRAIN_FAMILIES,
    NEAR_FAMILIES,
    SENSIBLE_STARTS,
    START_REGIMES,
    Hyperparams,
    Task,
    make_family,
)

SCALE = 0.01
CLEAN = DEV_FAMILIES + FINAL_FAMILIES
BUILTIN = META_TRAIN_FAMILIES + CLEAN + NEAR_FAMILIES
SEQUENCE_FAMILIES = ("algorithmic_seq", "char_lm")

_cache: dict[tuple[str, int], Task] = {}


def sample(name: str, seed: int) -> Task:
    if (name, seed) not in _cache:
        _cache[(name, seed)] = make_family(name, budget_scale=SCALE).sample(seed)
    return _cache[(name, seed)]


# --------------------------------------------------------------------------- groups


def test_groups_partition_the_builtin_families():
    groups = {g: set(FAMILY_GROUPS[g]) for g in ("meta_train", "dev", "final", "near")}
    for a in groups:
        assert groups[a], a
        for b in groups:
            if a < b:
                assert not groups[a] & groups[b], (a, b)
    assert set().union(*groups.values()) == set(BUILTIN)
    assert set(BUILTIN) <= set(FAMILIES)
    assert FAMILY_GROUPS["held_out"] == HELD_OUT_FAMILIES == DEV_FAMILIES + FINAL_FAMILIES + NEAR_FAMILIES
    assert set(FAMILY_GROUPS["all"]) >= set(BUILTIN)


def test_group_membership():
    assert "char_lm" in FINAL_FAMILIES
    assert set(NEAR_FAMILIES) == {"digits_cnn", "tabular"}
    assert len(DEV_FAMILIES) >= 2 and len(FINAL_FAMILIES) >= 2 and len(CLEAN) >= 5
    # roughly half of the new clean families in each
    assert abs(len(DEV_FAMILIES) - (len(FINAL_FAMILIES) - 1)) <= 1


def test_every_family_declares_its_data_and_architecture():
    for name in BUILTIN:
        cls = FAMILIES[name]
        assert cls.data_source and cls.architecture and cls.description, name
        if name not in META_TRAIN_FAMILIES:
            assert cls.novelty, name


# --------------------------------------------------------------------------- clean transfer


def test_clean_families_share_no_declared_data_or_architecture_with_meta_training():
    meta_data = {FAMILIES[n].data_source for n in META_TRAIN_FAMILIES}
    meta_arch = {FAMILIES[n].architecture for n in META_TRAIN_FAMILIES}
    for name in CLEAN:
        assert FAMILIES[name].data_source not in meta_data, name
        assert FAMILIES[name].architecture not in meta_arch, name
    # and dev decisions cannot leak into final: dev and final share neither either
    for attr in ("data_source", "architecture"):
        dev = {getattr(FAMILIES[n], attr) for n in DEV_FAMILIES}
        final = {getattr(FAMILIES[n], attr) for n in FINAL_FAMILIES}
        assert not dev & final, attr
        assert len(dev | final) == len(CLEAN), f"two clean families share an {attr}"


def test_near_families_are_near_for_the_reason_they_declare():
    meta_data = {FAMILIES[n].data_source for n in META_TRAIN_FAMILIES}
    meta_arch = {FAMILIES[n].architecture for n in META_TRAIN_FAMILIES}
    for name in NEAR_FAMILIES:
        cls = FAMILIES[name]
        assert cls.data_source in meta_data or cls.architecture in meta_arch, name


def _module_types(task: Task) -> set[type]:
    torch.manual_seed(0)
    return {type(m) for m in task.model_fn().modules()}


#: ``dev`` families whose standard layer types all occur in meta-training: ``friedman_resmlp``
#: is Linear + LayerNorm + GELU/SiLU/Mish, and meta-training has residual nets with LayerNorm
#: (``toy_lnresnet``), so only its Mish variant keeps a layer type of its own. Its declared data
#: and architecture stay distinct (the test above) and its model class is its own. Never a
#: ``final`` family: for those the assertion holds without exception.
SHARES_LAYER_TYPES: tuple[str, ...] = ("friedman_resmlp",)


def test_clean_models_have_layers_no_meta_training_model_has():
    assert set(SHARES_LAYER_TYPES) <= set(DEV_FAMILIES) and not set(SHARES_LAYER_TYPES) & set(FINAL_FAMILIES)
    meta_types: set[type] = set()
    for name in META_TRAIN_FAMILIES:
        for seed in range(4):
            meta_types |= _module_types(sample(name, seed))
    for name in CLEAN:
        for seed in (0, 1):
            new = _module_types(sample(name, seed)) - meta_types
            assert new, f"{name}: every layer type of its model also occurs in meta-training"
            if name in SHARES_LAYER_TYPES:
                continue
            # at least one of the new types is a standard layer, not only a wrapper class
            assert any(t.__module__.startswith("torch.nn") for t in new), (name, new)


class _Trap(Exception):
    pass


def _trap(*_args, **_kwargs):
    raise _Trap("a meta-training generator was used")


META_GENERATORS = (
    "make_mlp",
    "sample_mlp_arch",
    "make_classification",
    "_load",
    "_digits_splits",
    # the meta_* families' data and architecture generators
    "make_token_sequences",
    "sample_recurrent_arch",
    "make_point_sets",
    "sample_set_arch",
    "make_pattern_images",
    "sample_convnorm_arch",
    "make_toy_classification",
    "sample_lnresnet_arch",
    "make_categorical_records",
    "make_manifold",
    "make_outlier_regression",
    "make_intensity_counts",
    "make_heteroscedastic",
    "lift",
    "make_moons",
    "make_circles",
    "make_gaussian_quantiles",
    "make_blobs",
    "make_swiss_roll",
    "make_s_curve",
    "make_regression",
)


@pytest.fixture
def trapped_meta_generators(monkeypatch):
    """Every name under which a meta-training data or architecture generator is reachable from
    a task module raises :class:`_Trap` when called."""
    import sklearn.datasets

    patched = 0
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not (mod_name == "rlhpo.tasks" or mod_name.startswith("rlhpo.tasks.")):
            continue
        for attr in META_GENERATORS:
            if hasattr(mod, attr):
                monkeypatch.setattr(mod, attr, _trap)
                patched += 1
    monkeypatch.setattr(sklearn.datasets, "make_classification", _trap)
    monkeypatch.setattr(sklearn.datasets, "load_digits", _trap)
    assert patched >= 5
    return patched


@pytest.mark.parametrize("name", CLEAN)
def test_clean_families_sample_and_build_without_any_meta_training_generator(name, trapped_meta_generators):
    for seed in (0, 1):
        task = make_family(name, budget_scale=SCALE).sample(seed)
        torch.manual_seed(0)
        model = task.model_fn()
        assert not isinstance(model, nn.Sequential)  # make_mlp's output type
        out = model(task.train.x[:4])
        assert bool(torch.isfinite(out).all())


@pytest.mark.parametrize(
    "name", META_TRAIN_FAMILIES[:1] + ("digits_mlp", "tabular", "digits_cnn", "seq_recurrent", "shapes_conv", "toy_lnresnet")
)
def test_the_trap_catches_families_that_use_meta_training_generators(name, trapped_meta_generators):
    with pytest.raises(_Trap):
        make_family(name, budget_scale=SCALE).sample(0).model_fn()


# --------------------------------------------------------------------------- start regimes


def test_sensible_starts_are_the_usual_defaults():
    assert SENSIBLE_STARTS == {"adamw": (1e-3, 1e-2), "adam": (1e-3, 0.0), "sgd": (0.05, 5e-4)}
    assert set(START_REGIMES) == {"sensible", "random"}
    for lr, wd in SENSIBLE_STARTS.values():
        Hyperparams(lr, 32, wd).validate()


def test_usual_batch_size_per_family():
    for name in BUILTIN:
        task = sample(name, 0)
        expected = 16 if name in SEQUENCE_FAMILIES else 32
        assert FAMILIES[name].usual_batch_size == expected, name
        assert task.usual_batch_size == expected, name


@pytest.mark.parametrize("name", BUILTIN)
def test_with_start_sensible(name):
    for seed in (0, 1):
        task = sample(name, seed)
        before = (task.default_hparams, task.optimizer, dict(task.info))
        s = task.with_start("sensible")
        lr, wd = SENSIBLE_STARTS[task.optimizer]
        assert s is not task and s.validate() is s
        assert s.default_hparams == Hyperparams(lr, min(task.usual_batch_size, len(task.train)), wd)
        assert s.optimizer == task.optimizer and s.name == task.name and s.budget_examples == task.budget_examples
        assert s.train is task.train and s.val is task.val and s.test is task.test and s.model_fn is task.model_fn
        assert s.info == {**task.info, "start": "sensible"}
        assert (task.default_hparams, task.optimizer, task.info) == before  # the original is untouched


@pytest.mark.parametrize("name", CLEAN)
def test_with_start_random_is_the_sampled_start(name):
    task = sample(name, 0)
    r = task.with_start("random")
    assert r is not task
    assert r.default_hparams == task.default_hparams and r.optimizer == task.optimizer
    assert r.info["start"] == "random" and "start" not in task.info


@pytest.mark.parametrize("bad", ["bad", "Sensible", "", None, 1])
def test_with_start_rejects_unknown_regimes(bad):
    with pytest.raises(TaskError) as exc:
        sample("friedman_resmlp", 0).with_start(bad)
    assert "sensible" in str(exc.value) and "random" in str(exc.value)


def test_sensible_batch_size_is_capped_by_the_training_set():
    from conftest import make_tiny_task  # the shared helper in tests/conftest.py

    task = make_tiny_task()
    small = Task(**{**vars(task), "usual_batch_size": 10 * len(task.train)})
    assert small.with_start("sensible").default_hparams.batch_size == len(task.train)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, None])
def test_validate_rejects_a_bad_usual_batch_size(bad):
    from conftest import make_tiny_task

    task = make_tiny_task()
    with pytest.raises(TaskError, match="usual_batch_size"):
        Task(**{**vars(task), "usual_batch_size": bad}).validate()


@pytest.mark.parametrize("name", CLEAN)
def test_clean_families_run_in_the_evaluation_runner_from_both_starts(name):
    for regime in START_REGIMES:
        task = sample(name, 0).with_start(regime)
        result = run_task(task, Constant(), seed=0, n_intervals=2)
        if not result.diverged:
            assert math.isfinite(result.test_loss) and math.isfinite(result.test_metric), (name, regime)
    result = run_task(sample(name, 0).with_start("sensible"), Constant(), seed=0, n_intervals=2)
    assert not result.diverged, name


def test_tasks_module_exports():
    for attr in ("DEV_FAMILIES", "FINAL_FAMILIES", "NEAR_FAMILIES", "SENSIBLE_STARTS", "START_REGIMES"):
        assert attr in tasks_mod.__all__
