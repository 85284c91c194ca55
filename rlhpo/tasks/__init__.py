"""Task families and the meta-training / held-out split.

The split is by dataset *and* architecture, never by seed alone. Held-out families come in three
groups: ``dev`` (for development decisions: model selection, ablations, tuning the controller),
``final`` (only for the evaluation's tables, docs/evaluation.md) and ``near`` (near transfer: they share data or the
architecture generator with meta-training, so they are no test of transfer to new problems).
Each family's ``data_source`` and ``architecture`` say what it is built from; a test checks that
no ``dev``/``final`` family shares either with a meta-training family.

========================  ==========  ========================================================
family                    group       what it is
========================  ==========  ========================================================
synthetic_classification  meta_train  make_classification data, MLPs
teacher_student           meta_train  regression onto a random MLP teacher, MLPs
noisy_quadratic           meta_train  ill-conditioned noisy quadratic
digits_mlp                meta_train  digits flattened, MLPs
seq_recurrent             meta_train  LSTM / tanh RNN on parity, majority and recall token sequences
set_attention             meta_train  nn.MultiheadAttention set network on generated 2-D point-set shapes
shapes_conv               meta_train  Conv2d + GroupNorm/BatchNorm2d (residual) CNN on generated pattern images
toy_lnresnet              meta_train  residual net + LayerNorm on lifted moons/circles/quantiles/blobs
categorical_fm            meta_train  DeepFM on generated categorical records, 20-50 classes
manifold_ae               meta_train  denoising autoencoder on swiss roll / S-curve / helix in 8-32 dims
robust_regression         meta_train  wide-and-deep net, Huber or L1 loss, make_regression with outliers
poisson_counts            meta_train  Fourier-feature log-link net, Poisson NLL on generated intensity counts
hetero_gaussian           meta_train  mean + variance net, heteroscedastic Gaussian NLL (goes negative)
algorithmic_seq           dev         tiny transformer on reverse/sort/cummax/count sequences
friedman_resmlp           dev         residual MLP + LayerNorm on make_friedman1/2/3 regression
count_poisson             dev         embedding + MLP log-link count model, Poisson loss
series_conv               final       dilated 1-D CNN + BatchNorm forecasting generated series
code_bow                  final       EmbeddingBag classifier of stdlib source snippets (words)
char_lm                   final       character-level GRU on stdlib source text
digits_cnn                near        new architecture (CNN) on digits_mlp's data
tabular                   near        new datasets (breast cancer, wine, diabetes), meta-train MLPs
========================  ==========  ========================================================

Workloads (:mod:`rlhpo.tasks.workloads`): families of the length users train (1,000-10,000
optimizer steps, 30 s to 5 min a run), in two groups of their own, ``workloads_dev`` (development
decisions) and ``workloads_final`` (reported only), ``workloads`` being both. They are in no
meta-training group and not in ``held_out``.

``held_out`` is ``dev`` + ``final`` + ``near``. Users add their own family with
:func:`register_family`, or pass a :class:`Task` directly.
"""

from __future__ import annotations

from typing import Sequence

from rlhpo.errors import TaskError
from rlhpo.tasks.algorithmic import AlgorithmicSequence
from rlhpo.tasks.base import (
    OPTIMIZERS,
    SENSIBLE_STARTS,
    START_REGIMES,
    Hyperparams,
    Split,
    Task,
    TaskFamily,
    accuracy,
    make_mlp,
    mse,
    r2_score,
)
from rlhpo.tasks.charlm import CharLM
from rlhpo.tasks.meta_regression import HeteroGaussian, PoissonCounts, RobustRegression
from rlhpo.tasks.meta_sequence import RecurrentSequence, SetAttention
from rlhpo.tasks.meta_tabular import CategoricalFM, ManifoldAutoencoder, ToyLNResNet
from rlhpo.tasks.meta_vision import ShapesConv
from rlhpo.tasks.regression import CountPoisson, FriedmanResMLP
from rlhpo.tasks.series import SeriesConv
from rlhpo.tasks.sklearn_data import DigitsCNN, DigitsMLP, Tabular
from rlhpo.tasks.synthetic import (
    NoisyQuadratic,
    SyntheticClassification,
    TeacherStudent,
)
from rlhpo.tasks.text import CodeBagOfWords
from rlhpo.tasks.workloads import WORKLOAD_FAMILIES, WORKLOADS_DEV, WORKLOADS_FINAL

FAMILIES: dict[str, type[TaskFamily]] = {
    cls.name: cls
    for cls in (
        SyntheticClassification,
        TeacherStudent,
        NoisyQuadratic,
        DigitsMLP,
        RecurrentSequence,
        SetAttention,
        ShapesConv,
        ToyLNResNet,
        CategoricalFM,
        ManifoldAutoencoder,
        RobustRegression,
        PoissonCounts,
        HeteroGaussian,
        DigitsCNN,
        Tabular,
        CharLM,
        AlgorithmicSequence,
        FriedmanResMLP,
        CountPoisson,
        SeriesConv,
        CodeBagOfWords,
        *WORKLOAD_FAMILIES,
    )
}
META_TRAIN_FAMILIES: tuple[str, ...] = (
    "synthetic_classification",
    "teacher_student",
    "noisy_quadratic",
    "digits_mlp",
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
#: clean held-out families for development decisions (share neither data nor architecture with meta-training)
DEV_FAMILIES: tuple[str, ...] = ("algorithmic_seq", "friedman_resmlp", "count_poisson")
#: clean held-out families reserved for the evaluation's tables (docs/evaluation.md): never for development decisions
FINAL_FAMILIES: tuple[str, ...] = ("series_conv", "code_bow", "char_lm")
#: near transfer: new architecture on meta-training data (digits_cnn), or new data with the
#: meta-training MLP sampler (tabular)
NEAR_FAMILIES: tuple[str, ...] = ("digits_cnn", "tabular")
HELD_OUT_FAMILIES: tuple[str, ...] = DEV_FAMILIES + FINAL_FAMILIES + NEAR_FAMILIES
#: names that expand to a list of families
FAMILY_GROUPS: dict[str, tuple[str, ...]] = {
    "meta_train": META_TRAIN_FAMILIES,
    "dev": DEV_FAMILIES,
    "final": FINAL_FAMILIES,
    "near": NEAR_FAMILIES,
    "held_out": HELD_OUT_FAMILIES,
    "workloads_dev": WORKLOADS_DEV,
    "workloads_final": WORKLOADS_FINAL,
    "workloads": WORKLOADS_DEV + WORKLOADS_FINAL,
    "all": tuple(FAMILIES),
}


def register_family(cls: type[TaskFamily]) -> type[TaskFamily]:
    """Register a user's :class:`TaskFamily` subclass by its ``name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, TaskFamily)):
        raise TaskError(f"register_family takes a TaskFamily subclass, got {cls!r}")
    FAMILIES[cls.name] = cls
    return cls


def resolve_families(names: str | Sequence[str]) -> list[str]:
    """Expand group names ("meta_train", "dev", "final", "near", "held_out", "workloads_dev",
    "workloads_final", "workloads", "all") and check
    every name is known."""
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for name in names:
        if name in FAMILY_GROUPS:
            out.extend(FAMILY_GROUPS[name])
        elif name in FAMILIES:
            out.append(name)
        else:
            raise TaskError(
                f"unknown task family {name!r}; allowed: {sorted(FAMILIES)} or a group {sorted(FAMILY_GROUPS)}"
            )
    if not out:
        raise TaskError("families must name at least one task family")
    return list(dict.fromkeys(out))


def make_family(name: str, budget_scale: float = 1.0) -> TaskFamily:
    """A family by name (workloads at their ``default`` size: construct the class with ``size=``
    for another)."""
    if name not in FAMILIES:
        resolve_families(name)  # raises, naming the allowed families, for an unknown name
        raise TaskError(f"{name!r} is a group of families, not one family; pick one of {sorted(FAMILIES)}")
    return FAMILIES[name](budget_scale=budget_scale)


__all__ = [
    "FAMILIES",
    "DEV_FAMILIES",
    "FAMILY_GROUPS",
    "FINAL_FAMILIES",
    "HELD_OUT_FAMILIES",
    "META_TRAIN_FAMILIES",
    "NEAR_FAMILIES",
    "OPTIMIZERS",
    "SENSIBLE_STARTS",
    "START_REGIMES",
    "Hyperparams",
    "Split",
    "Task",
    "TaskError",
    "TaskFamily",
    "WORKLOADS_DEV",
    "WORKLOADS_FINAL",
    "accuracy",
    "make_family",
    "make_mlp",
    "mse",
    "r2_score",
    "register_family",
    "resolve_families",
]
