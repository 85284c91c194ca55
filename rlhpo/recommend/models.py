"""Meta-models: from a task's meta-features to its starting lr, batch size and weight decay.

Targets (what Optuna found on the meta-training tasks, :mod:`rlhpo.evaluation.meta_dataset`):

- ``lr``: log10(best lr / the optimizer's usual lr) (``rlhpo.tasks.SENSIBLE_STARTS``): SGD's and
  Adam's lr scales differ by ~50x, so the lr is learned relative to its optimizer's scale, and
  the optimizer kind is a feature too (and kNN only looks at tasks of the same kind);
- ``batch_size``: log2(best batch size); ``weight_decay``: log10(best weight decay).

Models (scikit-learn), each giving a mean and a standard deviation per target:

- ``knn``: metric-based: the k nearest meta-training tasks of the same optimizer kind in a
  standardised feature space, distance-weighted; the spread is the neighbours' spread, widened
  when the task is farther from them than meta-training tasks are from each other;
- ``gp``: a Gaussian process (Matern 3/2, one length scale, + white noise) per target; its predictive std;
- ``gbr``: gradient-boosted trees per target, the spread from 16% / 84% quantile models;
- ``prior``: the per-optimizer median (the reference any meta-model must beat).

``python -m rlhpo.recommend.select`` compares them by leave-one-family-out error on the shipped
meta-dataset and writes the table and the choice to ``data/selection.json``.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from rlhpo.recommend.meta_features import OPTIMIZER_KINDS, OUTPUT_KINDS
from rlhpo.tasks import SENSIBLE_STARTS

DATA_DIR = Path(__file__).resolve().parent / "data"
SELECTION = DATA_DIR / "selection.json"
STATIC_FEATURES: tuple[str, ...] = (
    "log_n_train", "log_input_size", "input_int", *(f"out_{k}" for k in OUTPUT_KINDS), "log_n_classes",
    "log_n_params", "depth", "layer_conv", "layer_recurrent", "layer_attention", "layer_norm", "layer_embedding",
    "layer_other", *(f"opt_{k}" for k in OPTIMIZER_KINDS), "log_budget_epochs",
)
PROBE_FEATURES: tuple[str, ...] = ("log_initial_loss", "log_grad_norm", "probe_sweep0", "probe_sweep1", "probe_sweep2")
FEATURE_SETS: dict[str, tuple[str, ...]] = {"static": STATIC_FEATURES, "probe": STATIC_FEATURES + PROBE_FEATURES}
MODEL_KINDS: tuple[str, ...] = ("knn", "gp", "gbr", "prior")


def _log(v: Any) -> float:
    return float(np.log10(max(float(v), 1e-12)))


def feature_row(row: dict, names: Sequence[str]) -> np.ndarray:
    """A meta-dataset row (or ``MetaFeatures.as_row()``) as a feature vector; NaN where missing."""
    derived = dict(
        log_n_train=_log(row["n_train"] or 1), log_input_size=_log(row["input_size"] or 1),
        input_int=float(row["input_kind"] == "int"), log_n_classes=_log(1 + row["n_classes"]),
        log_n_params=_log(1 + row["n_params"]), depth=float(row["depth"]),
        log_budget_epochs=_log(row["budget_epochs"]),
        **{f"out_{k}": float(row["output_kind"] == k) for k in OUTPUT_KINDS},
        **{f"opt_{k}": float(row["optimizer"] == k) for k in OPTIMIZER_KINDS},
    )
    if row.get("probe_initial_loss") is not None:
        derived.update(log_initial_loss=_log(abs(row["probe_initial_loss"])), log_grad_norm=_log(row["probe_grad_norm"]))
    vals = [derived.get(n, row.get(n)) for n in names]
    return np.array([float(v) if v is not None else np.nan for v in vals], dtype=float)


def target_row(row: dict) -> np.ndarray:
    base_lr = SENSIBLE_STARTS[row["optimizer"]][0]
    return np.array([_log(row["best_lr"] / base_lr), math.log2(row["best_batch_size"]), _log(row["best_weight_decay"])])


def to_hparams_values(optimizer: str, y: np.ndarray) -> tuple[float, float, float]:
    """Targets back to (lr, batch size, weight decay) (unrounded, unclipped)."""
    return SENSIBLE_STARTS[optimizer][0] * 10 ** y[0], 2 ** y[1], 10 ** y[2]


@dataclass
class MetaModel:
    """One meta-model, fitted on (features, targets, optimizer kinds)."""

    kind: str
    features: str = "static"
    k: int = 7
    #: multiplies the lr's sd so that +-1 sd holds 68% of held-out families' tasks (leave-one-family-out)
    sd_scale: float = 1.0

    def fit(self, X: np.ndarray, Y: np.ndarray, opts: Sequence[str]) -> "MetaModel":
        from sklearn.preprocessing import StandardScaler

        if self.kind not in MODEL_KINDS:
            raise ValueError(f"meta-model kind must be one of {MODEL_KINDS}, got {self.kind!r}")
        self.scaler = StandardScaler().fit(X)
        self.X, self.Y, self.opts = self.scaler.transform(X), np.asarray(Y, float), np.asarray(opts)
        self.X = np.nan_to_num(self.X)
        fit = {"knn": self._fit_knn, "gp": self._fit_gp, "gbr": self._fit_gbr, "prior": self._fit_prior}[self.kind]
        fit()
        return self

    def _z(self, X: np.ndarray) -> np.ndarray:
        return np.nan_to_num(self.scaler.transform(np.atleast_2d(X)))

    def predict(self, X: np.ndarray, opts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of every target, shape (n, 3) each."""
        Z = self._z(X)
        pred = {"knn": self._pred_knn, "gp": self._pred_gp, "gbr": self._pred_gbr, "prior": self._pred_prior}[self.kind]
        return pred(Z, np.asarray(opts))

    # -- prior ---------------------------------------------------------------------------------
    def _fit_prior(self) -> None:
        self.medians = {o: np.median(self.Y[self.opts == o], axis=0) for o in set(self.opts)}
        self.spread = {o: np.std(self.Y[self.opts == o], axis=0) for o in set(self.opts)}
        self.overall = np.median(self.Y, axis=0), np.std(self.Y, axis=0)

    def _pred_prior(self, Z: np.ndarray, opts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu = np.array([self.medians.get(o, self.overall[0]) for o in opts])
        sd = np.array([self.spread.get(o, self.overall[1]) for o in opts])
        return mu, sd

    # -- kNN -----------------------------------------------------------------------------------
    def _fit_knn(self) -> None:
        from sklearn.neighbors import NearestNeighbors

        self.pools: dict[str, tuple[np.ndarray, Any, float]] = {}
        for o in [*set(self.opts), "*"]:
            idx = np.flatnonzero(self.opts == o) if o != "*" else np.arange(len(self.opts))
            if len(idx) < 2:
                continue
            nn = NearestNeighbors(n_neighbors=min(self.k, len(idx))).fit(self.X[idx])
            d, _ = NearestNeighbors(n_neighbors=2).fit(self.X[idx]).kneighbors(self.X[idx])
            self.pools[o] = (idx, nn, float(np.median(d[:, 1])) or 1.0)  # typical nearest-neighbour distance

    def neighbours(self, z: np.ndarray, opt: str) -> tuple[np.ndarray, np.ndarray, float]:
        """Indices (into the fitted rows) and distances of the nearest tasks of optimizer ``opt``
        (of any kind when fewer than 2 of that kind), and the pool's typical distance."""
        idx, nn, typical = self.pools.get(opt, self.pools["*"])
        d, j = nn.kneighbors(z[None, :])
        return idx[j[0]], d[0], typical

    def _pred_knn(self, Z: np.ndarray, opts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mus, sds = [], []
        for z, o in zip(Z, opts):
            j, d, typical = self.neighbours(z, o)
            w = 1.0 / (d + 1e-3 * typical + 1e-9)
            w /= w.sum()
            mu = w @ self.Y[j]
            sd = np.sqrt(w @ (self.Y[j] - mu) ** 2) * max(1.0, float(d.mean()) / typical)
            mus.append(mu)
            sds.append(sd)
        return np.array(mus), np.array(sds)

    # -- Gaussian process ----------------------------------------------------------------------
    def _fit_gp(self) -> None:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

        self.gps = []
        for t in range(self.Y.shape[1]):
            # one length scale: per-feature (ARD) scales overfit ~100 tasks (0.77 vs 0.63 decades, LOFO)
            kernel = ConstantKernel(1.0) * Matern(3.0, (0.1, 1e3), nu=1.5) + WhiteKernel(0.3, (1e-3, 10.0))
            gp = GaussianProcessRegressor(kernel, normalize_y=True, random_state=0)
            with warnings.catch_warnings():  # a hyperparameter at its bound is no failure here
                warnings.simplefilter("ignore", ConvergenceWarning)
                self.gps.append(gp.fit(self.X, self.Y[:, t]))

    def _pred_gp(self, Z: np.ndarray, opts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = [gp.predict(Z, return_std=True) for gp in self.gps]
        return np.stack([m for m, _ in out], 1), np.stack([s for _, s in out], 1)

    # -- gradient boosting ---------------------------------------------------------------------
    def _fit_gbr(self) -> None:
        from sklearn.ensemble import GradientBoostingRegressor

        def make(**kw: Any) -> Any:
            return GradientBoostingRegressor(n_estimators=150, max_depth=2, learning_rate=0.05, subsample=0.8, random_state=0, **kw)

        self.gbrs = [
            tuple(make(**kw).fit(self.X, self.Y[:, t]) for kw in ({}, dict(loss="quantile", alpha=0.16), dict(loss="quantile", alpha=0.84)))
            for t in range(self.Y.shape[1])
        ]

    def _pred_gbr(self, Z: np.ndarray, opts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mu = np.stack([m.predict(Z) for m, _, _ in self.gbrs], 1)
        sd = np.stack([np.abs(hi.predict(Z) - lo.predict(Z)) / 2 for _, lo, hi in self.gbrs], 1)
        return mu, sd


# -- the meta-dataset and the leave-one-family-out comparison ----------------------------------


def dataset_arrays(rows: list[dict], features: str) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Features, targets, optimizer kinds and families of the rows that have every feature."""
    names = FEATURE_SETS[features]
    X = np.array([feature_row(r, names) for r in rows])
    keep = ~np.isnan(X).any(axis=1)
    rows = [r for r, k in zip(rows, keep) if k]
    Y = np.array([target_row(r) for r in rows])
    return X[keep], Y, [r["optimizer"] for r in rows], [r["family"] for r in rows]


def load_meta_dataset(path: Optional[Path] = None) -> list[dict]:
    """The shipped meta-dataset's rows (``data/meta_dataset.jsonl``); raises if it names a
    held-out family (it must never have been built on one)."""
    from rlhpo.tasks import HELD_OUT_FAMILIES

    path = Path(path) if path is not None else DATA_DIR / "meta_dataset.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no meta-dataset at {path}; build it with python -m rlhpo.evaluation.meta_dataset")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    held = sorted({r["family"] for r in rows} & set(HELD_OUT_FAMILIES))
    if held:
        raise ValueError(f"the meta-dataset {path} contains held-out families {held}; rebuild it on meta_train only")
    return rows
