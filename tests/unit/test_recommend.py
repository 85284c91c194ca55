"""rlhpo.recommend: meta-features of known models, bad inputs, the meta-models on a synthetic
meta-dataset with a known relation, the shipped meta-dataset, the LR range test's pick."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from rlhpo.evaluation.warm import _suggest
from rlhpo.recommend import RecommendWarning, meta_features
from rlhpo.recommend.meta_features import model_features, output_kind
from rlhpo.recommend.models import DATA_DIR, MetaModel, dataset_arrays, load_meta_dataset
from rlhpo.recommend.select import leave_one_family_out
from rlhpo.tasks import HELD_OUT_FAMILIES, META_TRAIN_FAMILIES, SENSIBLE_STARTS


class Unknown(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(3))

    def forward(self, x):
        return x[:, :3] * self.theta


def test_model_features_counts_and_flags():
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    n, depth, flags, unknown = model_features(cnn)
    assert n == (1 * 4 * 9 + 4) + (4 + 4) + (144 * 10 + 10)
    assert depth == 3 and flags["conv"] and flags["norm"] and not flags["recurrent"] and not unknown
    rnn = nn.ModuleDict(dict(emb=nn.Embedding(20, 8), gru=nn.GRU(8, 8, num_layers=2), out=nn.Linear(8, 20)))
    n, depth, flags, _ = model_features(rnn)
    assert depth == 4 and flags["recurrent"] and flags["embedding"] and not flags["conv"]
    att = nn.TransformerEncoderLayer(8, 2, 16)
    _, _, flags, _ = model_features(att)
    assert flags["attention"] and flags["norm"]


def test_meta_features_of_tensors():
    x, y = torch.randn(200, 10), torch.randint(0, 3, (200,))
    f = meta_features(nn.Linear(10, 3), (x, y), "sgd", total_examples=2000)
    assert (f.n_train, f.input_shape, f.input_kind, f.output_kind, f.n_classes) == (200, (10,), "float", "classification", 3)
    assert f.n_params == 33 and f.depth == 1 and f.optimizer == "sgd" and f.budget_epochs == pytest.approx(10.0)
    assert output_kind(torch.randn(5)) == ("regression", 0)
    assert output_kind(torch.randint(0, 7, (5, 4)))[0] == "sequence"
    model, data = nn.Linear(10, 3), torch.utils.data.TensorDataset(x, y)
    f = meta_features(model, data, torch.optim.AdamW(nn.Linear(1, 1).parameters()), 400, probe=True)
    assert f.optimizer == "adamw" and f.probe is not None and f.probe.examples > 0 and len(f.probe.sweep) == 3


def test_bad_inputs_warn_and_fall_back():
    x, y = torch.randn(10, 4), torch.randn(10)
    with pytest.warns(RecommendWarning, match="too few for a probe"):
        f = meta_features(nn.Linear(4, 1), (x, y), "adam", 100, probe=True)
    assert f.probe is None
    with pytest.warns(RecommendWarning, match="no parameters"):
        f = meta_features(nn.ReLU(), (x, y), "adam", 100)
    assert f.n_params == 0
    with pytest.warns(RecommendWarning, match="unsupported layer kind"):
        f = meta_features(Unknown(), (x, y), "adam", 100)
    assert f.layers["other"]
    with pytest.warns(RecommendWarning, match="not sgd/adam/adamw"):
        f = meta_features(nn.Linear(4, 1), (x, y), torch.optim.RMSprop(nn.Linear(1, 1).parameters()), None)
    assert f.optimizer == "adam" and f.budget_epochs == pytest.approx(10.0)
    with pytest.warns(RecommendWarning, match="could not read"):
        f = meta_features(nn.Linear(4, 1), ["not", "tensors"], "adam", 100)
    assert f.output_kind == "other"


def _synthetic_rows(n: int = 120, seed: int = 0) -> list[dict]:
    """A meta-dataset where log10(best lr / usual lr) = 1.5 - 0.5 * log10(n_train) (exactly), and
    the batch size and weight decay are noise: a kNN must recover the lr from n_train."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        opt = ["sgd", "adam", "adamw"][i % 3]
        n_train = int(10 ** rng.uniform(2, 4))
        rows.append(dict(
            family=f"fam{i % 4}", task=f"t{i}", optimizer=opt, n_train=n_train, input_size=int(rng.integers(2, 50)),
            input_kind="float", output_kind="regression", n_classes=0, n_params=int(rng.integers(50, 5000)), depth=2,
            budget_epochs=10.0, **{f"layer_{k}": 0 for k in ("conv", "recurrent", "attention", "norm", "embedding", "other")},
            best_lr=SENSIBLE_STARTS[opt][0] * 10 ** (1.5 - 0.5 * np.log10(n_train)),
            best_batch_size=int(rng.integers(8, 128)), best_weight_decay=float(10 ** rng.uniform(-5, -2)),
        ))
    return rows


@pytest.mark.parametrize("kind", ["knn", "gp", "gbr"])
def test_meta_models_recover_a_known_relation(kind):
    rows = _synthetic_rows()
    X, Y, opts, _ = dataset_arrays(rows, "static")
    train = np.arange(len(Y)) < 90
    m = MetaModel(kind).fit(X[train], Y[train], np.array(opts)[train])
    mu, sd = m.predict(X[~train], np.array(opts)[~train])
    err = np.abs(mu[:, 0] - Y[~train, 0])
    assert np.median(err) < 0.12, f"{kind}: median lr error {np.median(err):.3f} decades"
    prior = MetaModel("prior").fit(X[train], Y[train], np.array(opts)[train]).predict(X[~train], np.array(opts)[~train])[0]
    assert np.median(np.abs(prior[:, 0] - Y[~train, 0])) > 2 * np.median(err)  # the relation is learned, not the mean
    assert sd.shape == mu.shape and (sd >= 0).all()


def test_leave_one_family_out_table():
    table = leave_one_family_out(_synthetic_rows(60), kinds=("knn", "prior"), feature_sets=("static",))
    by = {r["model"]: r for r in table}
    assert set(by) == {"knn", "prior"} and by["knn"]["lr_decades"] < by["prior"]["lr_decades"]
    assert set(by["knn"]["lr_decades_by_family"]) == {"fam0", "fam1", "fam2", "fam3"}


def test_shipped_meta_dataset_is_meta_training_only():
    rows = load_meta_dataset()
    families = {r["family"] for r in rows}
    assert len(rows) >= 40 and families.isdisjoint(HELD_OUT_FAMILIES)
    assert set(META_TRAIN_FAMILIES) <= families or families <= set(META_TRAIN_FAMILIES) | families - set(HELD_OUT_FAMILIES)
    recipe = json.loads((DATA_DIR / "meta_dataset.recipe.json").read_text())
    assert recipe["command"].startswith("python -m rlhpo.evaluation.meta_dataset") and recipe["rows"] == len(rows)
    selection = json.loads((DATA_DIR / "selection.json").read_text())
    assert selection["rows"] == len(rows) and selection["chosen"]["model"] in ("knn", "gp", "gbr", "prior")


def test_held_out_rows_are_refused(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(dict(family=HELD_OUT_FAMILIES[0])) + "\n")
    with pytest.raises(ValueError, match="held-out"):
        load_meta_dataset(path)


def test_lr_range_pick_is_the_steepest_descent():
    lrs = np.geomspace(1e-6, 1, 80)
    rng = np.random.default_rng(0)
    # flat and noisy at small lrs (a noise minimum there must not win), steepest at 1e-3, blows up past 1e-1
    loss = 2.0 - np.tanh((np.log10(lrs) + 3) * 2) + 0.01 * rng.standard_normal(80) + np.where(lrs > 0.1, 50 * lrs, 0)
    lr, info = _suggest(lrs, loss)
    assert 5e-4 < info["range_steepest_lr"] < 2e-3 and lr == pytest.approx(info["range_steepest_lr"])
    rising = np.linspace(1, 2, 80)  # never descends: a tenth of the minimum's lr
    assert _suggest(lrs, rising)[1]["range_rule"] == "min/10"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _suggest(lrs[:2], loss[:2])[1]["range_note"]


def test_targets_ratios_pair_runs_of_the_same_task_seed():
    import pandas as pd

    from rlhpo.recommend.targets import ratio, report, table

    rows = [dict(task=t, family="f", start=s, seed=0, group="main", method=m, test_loss=v, examples=100, compute_examples=100)
            for t in ("a", "b") for s in ("sensible", "random")
            for m, v in (("constant", 2.0), ("controller", 1.0), ("recommend_controller", 0.5), ("optuna", 0.4),
                         ("recommend_cosine", 1.0), ("lr_range_cosine", 4.0))]
    piv = table(pd.DataFrame(rows))
    assert ratio(piv, "recommend_controller", "controller", "sensible").r.tolist() == [0.5, 0.5]
    text = report(pd.DataFrame(rows))
    assert "T1 random: recommend_controller / optuna: median 1.250" in text
    assert "T3 recommend_cosine / lr_range_cosine: median 0.250" in text
