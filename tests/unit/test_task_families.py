"""Unit tests of the task families (rlhpo.tasks): sampling, determinism, well-formed tasks,
the meta-train / held-out split and the registry's errors. (The proof that the ``dev`` and
``final`` held-out families share no data and no architecture with meta-training, and the start
regimes, are in test_held_out_split.py.)

Every family is sampled with a tiny budget scale and only a couple of seeds; samples are cached
per module so each (family, seed) is built once (the slowest, noisy_quadratic, takes ~0.3 s).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rlhpo.errors import TaskError
from rlhpo.tasks import (
    FAMILIES,
    FAMILY_GROUPS,
    HELD_OUT_FAMILIES,
    META_TRAIN_FAMILIES,
    OPTIMIZERS,
    Hyperparams,
    Task,
    TaskFamily,
    make_family,
    register_family,
    resolve_families,
)
from rlhpo.tasks.base import sample_default_hparams, split_arrays

SCALE = 0.01  # every budget shrinks to max(64, 1% of the family's budget)
SEEDS = (0, 1)
#: the broad meta-training families (rlhpo.tasks.meta_*; tests/unit/test_meta_families.py tests them further)
META_BROAD = (
    "seq_recurrent",
    "set_attention",
    "shapes_conv",
    "toy_lnresnet",
    "categorical_fm",
    "manifold_ae",
    "robust_regression",
    "poisson_counts",
    "hetero_gaussian",
)
BUILTIN = (
    "synthetic_classification",
    "teacher_student",
    "noisy_quadratic",
    "digits_mlp",
    *META_BROAD,
    "digits_cnn",
    "tabular",
    "char_lm",
    "algorithmic_seq",
    "friedman_resmlp",
    "count_poisson",
    "series_conv",
    "code_bow",
)

_cache: dict[tuple[str, int], Task] = {}


def sample(name: str, seed: int) -> Task:
    key = (name, seed)
    if key not in _cache:
        _cache[key] = make_family(name, budget_scale=SCALE).sample(seed)
    return _cache[key]


def same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))


def test_builtin_families_are_registered():
    assert set(BUILTIN) <= set(FAMILIES)
    for name in BUILTIN:
        assert FAMILIES[name].name == name
        assert issubclass(FAMILIES[name], TaskFamily)


# --------------------------------------------------------------------------- per-family sampling


@pytest.mark.parametrize("name", BUILTIN)
class TestEveryFamily:
    def test_sample_is_a_valid_task(self, name):
        fam = make_family(name, budget_scale=SCALE)
        assert isinstance(fam, FAMILIES[name])
        assert fam.budget_scale == SCALE
        for seed in SEEDS:
            task = sample(name, seed)
            assert isinstance(task, Task)
            assert task.validate() is task
            assert task.family == name
            assert name in task.name and str(seed) in task.name

    def test_same_seed_same_task(self, name):
        a = sample(name, 0)
        b = make_family(name, budget_scale=SCALE).sample(0)  # a fresh family object, not the cache
        assert a is not b
        assert a.name == b.name
        assert a.default_hparams == b.default_hparams
        assert a.optimizer == b.optimizer
        assert a.budget_examples == b.budget_examples
        assert a.metric_name == b.metric_name
        for split in ("train", "val", "test"):
            sa, sb = getattr(a, split), getattr(b, split)
            assert same_tensor(sa.x, sb.x), f"{name}: {split}.x differs for the same seed"
            assert same_tensor(sa.y, sb.y), f"{name}: {split}.y differs for the same seed"
        # the same architecture: with the global seed fixed, identical initial parameters
        torch.manual_seed(123)
        ma = a.model_fn()
        torch.manual_seed(123)
        mb = b.model_fn()
        pa, pb = list(ma.state_dict().values()), list(mb.state_dict().values())
        assert len(pa) == len(pb)
        assert all(same_tensor(u, v) for u, v in zip(pa, pb))

    def test_different_seeds_different_tasks(self, name):
        a, b = sample(name, SEEDS[0]), sample(name, SEEDS[1])
        assert a.name != b.name
        assert not same_tensor(a.train.x, b.train.x)
        assert not same_tensor(a.val.x, b.val.x)
        assert (a.default_hparams, a.optimizer) != (b.default_hparams, b.optimizer)

    def test_splits_non_empty_and_consistent(self, name):
        for seed in SEEDS:
            task = sample(name, seed)
            sizes = [len(task.train), len(task.val), len(task.test)]
            assert all(n > 0 for n in sizes), sizes
            assert len(task.train) >= max(len(task.val), len(task.test)), sizes
            for split in (task.train, task.val, task.test):
                assert split.x.shape[0] == split.y.shape[0]
                assert split.x.shape[1:] == task.train.x.shape[1:]
                assert split.y.shape[1:] == task.train.y.shape[1:]
            # distinct tensors, not views of one another
            assert task.train.x.data_ptr() != task.val.x.data_ptr() != task.test.x.data_ptr()

    def test_model_and_loss_run_on_a_training_batch(self, name):
        task = sample(name, 0)
        torch.manual_seed(0)
        model = task.model_fn()
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert n_params > 0
        x, y = task.train.x[:8], task.train.y[:8]
        out = model(x)
        loss = task.loss_fn(out, y)
        assert isinstance(loss, torch.Tensor) and loss.dim() == 0 and loss.is_floating_point()
        assert math.isfinite(float(loss.detach()))
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
        assert any(float(g.abs().sum()) > 0 for g in grads)
        with torch.no_grad():
            metric = task.metric_fn(model(task.val.x[:16]), task.val.y[:16])
        assert isinstance(metric, float) and math.isfinite(metric)

    def test_default_hparams_in_sensible_ranges(self, name):
        for seed in SEEDS:
            task = sample(name, seed)
            hp = task.default_hparams
            assert isinstance(hp, Hyperparams)
            assert task.optimizer in ("sgd", "adam", "adamw")
            assert 1e-5 <= hp.lr <= 1.0, hp
            if task.optimizer != "sgd":
                assert hp.lr <= 0.1, hp
            assert isinstance(hp.batch_size, int) and 1 <= hp.batch_size <= min(128, len(task.train)), hp
            assert 1e-5 <= hp.weight_decay <= 1e-2, hp

    def test_budget_is_scaled_with_a_floor(self, name):
        full = make_family(name, budget_scale=1.0).sample(0).budget_examples
        tiny = sample(name, 0).budget_examples
        assert tiny == max(64, int(round(full * SCALE)))
        half = make_family(name, budget_scale=0.5).sample(0).budget_examples
        assert half == max(64, int(round(full * 0.5)))

    def test_sampling_leaves_the_global_torch_rng_alone(self, name):
        torch.manual_seed(7)
        before = torch.get_rng_state()
        make_family(name, budget_scale=SCALE).sample(1)
        assert torch.equal(torch.get_rng_state(), before)


# --------------------------------------------------------------------------- family-specific checks


def test_classification_targets_are_class_indices():
    for name in ("synthetic_classification", "digits_mlp", "digits_cnn"):
        task = sample(name, 0)
        assert task.train.y.dtype == torch.long
        n_out = task.model_fn()(task.train.x[:2]).shape[-1]
        assert int(task.train.y.min()) >= 0 and int(task.train.y.max()) < n_out
        assert task.metric_name == "accuracy"


def test_regression_targets_are_float():
    task = sample("teacher_student", 0)
    assert task.train.y.dtype == torch.float32 and task.train.y.dim() == 1
    assert task.metric_name == "r2"


def test_char_lm_targets_are_inputs_shifted_by_one():
    task = sample("char_lm", 0)
    x, y = task.train.x, task.train.y
    assert x.dtype == torch.long and x.shape == y.shape and x.dim() == 2
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert int(x.min()) >= 0 and int(x.max()) < 128
    out = task.model_fn()(x[:2])
    assert out.shape == (2, x.shape[1], 128)


def test_noisy_quadratic_split_sizes():
    task = sample("noisy_quadratic", 0)
    assert (len(task.train), len(task.val), len(task.test)) == (4096, 1024, 1024)


def test_tabular_picks_a_known_dataset():
    for seed in SEEDS:
        task = sample("tabular", seed)
        assert task.info["dataset"] in ("breast_cancer", "wine", "diabetes")
        assert task.info["dataset"] in task.name
        assert task.metric_name == ("r2" if task.info["dataset"] == "diabetes" else "accuracy")


def test_algorithmic_seq_targets_follow_the_operation_and_splits_share_no_sequence():
    from rlhpo.tasks.algorithmic import _targets

    ops = set()
    for seed in range(6):
        task = make_family("algorithmic_seq", budget_scale=SCALE).sample(seed)
        op, vocab, length = task.info["operation"], task.info["vocab"], task.info["length"]
        ops.add(op)
        assert task.metric_name == "token_accuracy"
        for split in (task.train, task.val, task.test):
            assert split.x.dtype == torch.long and split.y.dtype == torch.long
            assert split.x.shape[1:] == (length,) and split.y.shape == split.x.shape
            assert int(split.x.min()) >= 0 and int(split.x.max()) < vocab
            clean = torch.as_tensor(_targets(split.x.numpy(), op))
            flipped = float((split.y != clean).float().mean())
            assert flipped <= task.info["label_noise"] + 0.03  # only the label noise differs
        rows = [set(map(tuple, s.x.tolist())) for s in (task.train, task.val, task.test)]
        assert sum(map(len, rows)) == len(task.train) + len(task.val) + len(task.test)  # distinct
        assert not (rows[0] & rows[1]) and not (rows[0] & rows[2]) and not (rows[1] & rows[2])
        out = task.model_fn()(task.train.x[:3])
        n_out = length + 1 if op == "count" else vocab
        assert out.shape == (3, length, n_out) and int(task.train.y.max()) < n_out
    assert len(ops) >= 2
    a = torch.tensor([[3, 1, 2, 1]])
    assert _targets(a.numpy(), "reverse").tolist() == [[1, 2, 1, 3]]
    assert _targets(a.numpy(), "sort").tolist() == [[1, 1, 2, 3]]
    assert _targets(a.numpy(), "cummax").tolist() == [[3, 3, 3, 3]]
    assert _targets(a.numpy(), "count").tolist() == [[1, 2, 1, 2]]


def test_friedman_resmlp_targets_are_standardised_on_training_data():
    for seed in SEEDS:
        task = sample("friedman_resmlp", seed)
        assert task.info["generator"] in ("friedman1", "friedman2", "friedman3")
        assert task.metric_name == "r2" and task.train.y.dtype == torch.float32 and task.train.y.dim() == 1
        assert abs(float(task.train.y.mean())) < 1e-4 and abs(float(task.train.y.std()) - 1) < 1e-4
        assert torch.allclose(task.train.x.mean(dim=0), torch.zeros(task.train.x.shape[1]), atol=1e-4)


def test_count_poisson_loss_is_the_mean_poisson_deviance():
    from sklearn.metrics import mean_poisson_deviance

    from rlhpo.tasks.regression import deviance_explained, poisson_deviance

    for seed in SEEDS:
        task = sample("count_poisson", seed)
        y = task.train.y
        assert y.dtype == torch.float32 and y.dim() == 1
        assert bool((y >= 0).all()) and torch.equal(y, y.round())
        assert task.metric_name == "deviance_explained"
        n_num = task.info["numeric"]
        for j, card in enumerate(task.info["cards"]):  # categorical codes survive standardisation
            codes = task.train.x[:, n_num + j]
            assert torch.equal(codes, codes.round()) and int(codes.min()) >= 0 and int(codes.max()) < card
        torch.manual_seed(0)
        with torch.no_grad():
            out = task.model_fn()(task.train.x[:200])
        assert out.shape == (200,)
        expected = mean_poisson_deviance(y[:200].numpy().astype(np.float64), out.exp().double().numpy())
        assert float(poisson_deviance(out, y[:200])) == pytest.approx(expected, rel=1e-4)
    y = torch.tensor([0.0, 1.0, 3.0, 7.0])
    assert float(poisson_deviance(torch.log(y.clamp_min(1e-9)), y)) == pytest.approx(0.0, abs=1e-6)
    assert deviance_explained(torch.full((4,), float(np.log(y.mean()))), y) == pytest.approx(0.0, abs=1e-9)
    assert deviance_explained(torch.log(y.clamp_min(1e-12)), y) == pytest.approx(1.0, abs=1e-6)


def test_series_conv_splits_are_chronological_and_share_no_values():
    for seed in SEEDS:
        task = sample("series_conv", seed)
        w, h = task.info["window"], task.info["horizon"]
        assert task.train.x.shape[1:] == (w,) and task.train.y.shape[1:] == (h,)
        assert task.metric_name == "r2"
        # consecutive windows are shifted by one step
        assert torch.equal(task.train.x[1:, :-1], task.train.x[:-1, 1:])
        seen = torch.cat([task.train.x.flatten(), task.train.y.flatten()])
        for split in (task.val, task.test):
            values = torch.cat([split.x.flatten(), split.y.flatten()])
            assert not bool(torch.isin(values, seen).any())
        assert not bool(torch.isin(torch.cat([task.test.x.flatten(), task.test.y.flatten()]), task.val.x).any())
        model = task.model_fn()
        assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
        model.eval()
        assert model(task.val.x[:1]).shape == (1, h)  # one example in eval mode works


def test_code_bow_vocabulary_and_modules():
    from rlhpo.tasks.charlm import CORPUS_MODULES
    from rlhpo.tasks.text import BOW_MODULES, MeanBag

    assert not set(BOW_MODULES) & set(CORPUS_MODULES)
    for seed in SEEDS:
        task = sample("code_bow", seed)
        modules, vocab = task.info["modules"], task.info["vocab"]
        assert set(modules) <= set(BOW_MODULES) and len(set(modules)) == task.info["classes"]
        for split in (task.train, task.val, task.test):
            assert split.x.dtype == torch.long and int(split.x.min()) >= 0 and int(split.x.max()) < vocab
            assert bool(((split.x != 0).sum(dim=1) >= 3).all())  # no empty snippet
            assert int(split.y.max()) < task.info["classes"]
    bag = MeanBag(20, 4)
    x = torch.tensor([[3, 4, 0, 0], [5, 1, 2, 0]])
    reference = torch.nn.EmbeddingBag.from_pretrained(bag.embed.weight.detach(), mode="mean", padding_idx=0)
    assert torch.allclose(bag(x), reference(x), atol=1e-6)


def test_split_arrays_is_a_disjoint_partition():
    x = np.arange(50, dtype=np.float32).reshape(50, 1)
    y = np.arange(50, dtype=np.int64)
    train, val, test = split_arrays(x, y, np.random.default_rng(0))
    assert (len(train), len(val), len(test)) == (30, 10, 10)
    ids = [set(s.y.tolist()) for s in (train, val, test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert set().union(*ids) == set(range(50))
    assert train.y.dtype == torch.long and train.x.dtype == torch.float32
    assert torch.equal(train.x[:, 0].long(), train.y)  # rows stay paired


def test_sample_default_hparams_ranges_over_many_draws():
    seen = set()
    for i in range(300):
        opt, hp = sample_default_hparams(np.random.default_rng(i), n_train=50)
        seen.add(opt)
        assert opt in OPTIMIZERS
        if opt == "sgd":
            assert 1e-4 <= hp.lr <= 1.0
        else:
            assert 1e-5 <= hp.lr <= 0.1
        assert hp.batch_size in (16, 32, 50)  # 64 and 128 are capped at the 50 training examples
        assert 1e-5 <= hp.weight_decay <= 1e-2
        hp.validate()
    assert seen == set(OPTIMIZERS)


# --------------------------------------------------------------------------- groups and registry


def test_meta_train_and_held_out_groups_do_not_overlap():
    meta, held = set(FAMILY_GROUPS["meta_train"]), set(FAMILY_GROUPS["held_out"])
    assert meta and held
    assert not meta & held
    assert meta == set(META_TRAIN_FAMILIES) and held == set(HELD_OUT_FAMILIES)
    assert META_TRAIN_FAMILIES == ("synthetic_classification", "teacher_student", "noisy_quadratic", "digits_mlp") + META_BROAD
    assert meta | held == set(BUILTIN)
    assert set(FAMILY_GROUPS["all"]) >= set(BUILTIN)
    # held-out families say what is new about them; meta-training ones need not
    for name in held:
        assert FAMILIES[name].novelty


def test_resolve_families_expands_groups_and_deduplicates():
    assert resolve_families("meta_train") == list(META_TRAIN_FAMILIES)
    assert resolve_families(["held_out"]) == list(HELD_OUT_FAMILIES)
    assert resolve_families("tabular") == ["tabular"]
    assert resolve_families(["tabular", "held_out", "tabular"]) == ["tabular"] + [
        f for f in HELD_OUT_FAMILIES if f != "tabular"
    ]
    assert resolve_families(["dev", "final"]) == list(FAMILY_GROUPS["dev"]) + list(FAMILY_GROUPS["final"])
    assert resolve_families(["near"]) == ["digits_cnn", "tabular"]
    assert resolve_families(["meta_train", "held_out"]) == list(META_TRAIN_FAMILIES) + list(HELD_OUT_FAMILIES)
    assert set(resolve_families("all")) == set(FAMILIES)


def test_resolve_families_rejects_empty():
    with pytest.raises(TaskError, match="at least one"):
        resolve_families([])


@pytest.mark.parametrize("call", [make_family, resolve_families, lambda n: resolve_families(["tabular", n])])
def test_unknown_family_raises_listing_allowed_names(call):
    with pytest.raises(TaskError) as exc:
        call("no_such_family")
    msg = str(exc.value)
    assert "no_such_family" in msg
    for name in BUILTIN:
        assert name in msg
    for group in ("meta_train", "dev", "final", "near", "held_out", "all"):
        assert group in msg


def test_make_family_rejects_a_group_name():
    with pytest.raises(TaskError, match="group"):
        make_family("meta_train")


@pytest.mark.parametrize("scale", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_budget_scale_raises(scale):
    with pytest.raises(TaskError, match="budget_scale"):
        make_family("tabular", budget_scale=scale)


@pytest.mark.parametrize("bad", [object, int, "tabular", None, lambda: None])
def test_register_family_rejects_non_subclasses(bad):
    with pytest.raises(TaskError, match="TaskFamily subclass"):
        register_family(bad)


def test_register_family_rejects_an_instance():
    with pytest.raises(TaskError, match="TaskFamily subclass"):
        register_family(make_family("tabular"))  # type: ignore[arg-type]


def test_register_family_accepts_a_subclass_and_make_family_builds_it(monkeypatch):
    monkeypatch.setattr("rlhpo.tasks.FAMILIES", dict(FAMILIES))  # leave the real registry as it was
    from conftest import make_tiny_task  # the shared helper in tests/conftest.py

    import rlhpo.tasks as tasks_mod

    class Custom(TaskFamily):
        name = "unit_custom_family"

        def _sample(self, rng, seed):
            return make_tiny_task(seed=seed, budget=1000)

    assert register_family(Custom) is Custom  # usable as a decorator
    assert tasks_mod.FAMILIES["unit_custom_family"] is Custom
    assert "unit_custom_family" not in FAMILIES
    fam = tasks_mod.make_family("unit_custom_family", budget_scale=0.5)
    task = fam.sample(3)
    assert task.name == "tiny-3" and task.budget_examples == 500
    assert tasks_mod.resolve_families("unit_custom_family") == ["unit_custom_family"]


def test_base_task_family_sample_is_abstract():
    with pytest.raises(NotImplementedError):
        TaskFamily().sample(0)
