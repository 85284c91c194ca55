"""Task families and the meta-training / held-out split.

The split is by dataset *and* architecture, never by seed alone:

============================  ===========  ===================================================
family                        split        what it is
============================  ===========  ===================================================
synthetic_classification      meta-train   make_classification data, MLPs
teacher_student               meta-train   regression onto a random MLP teacher, MLPs
noisy_quadratic               meta-train   ill-conditioned noisy quadratic
digits_mlp                    meta-train   digits flattened, MLPs
digits_cnn                    held-out     new architecture: CNN
tabular                       held-out     new datasets: breast cancer, wine, diabetes
char_lm                       held-out     new data and architecture: GRU on text
============================  ===========  ===================================================

Users add their own family with :func:`register_family`, or pass a :class:`Task` directly.
"""

from __future__ import annotations

from typing import Sequence

from rlhpo.errors import TaskError
from rlhpo.tasks.base import (
    OPTIMIZERS,
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
from rlhpo.tasks.sklearn_data import DigitsCNN, DigitsMLP, Tabular
from rlhpo.tasks.synthetic import (
    NoisyQuadratic,
    SyntheticClassification,
    TeacherStudent,
)

FAMILIES: dict[str, type[TaskFamily]] = {
    cls.name: cls
    for cls in (
        SyntheticClassification,
        TeacherStudent,
        NoisyQuadratic,
        DigitsMLP,
        DigitsCNN,
        Tabular,
        CharLM,
    )
}
META_TRAIN_FAMILIES: tuple[str, ...] = ("synthetic_classification", "teacher_student", "noisy_quadratic", "digits_mlp")
HELD_OUT_FAMILIES: tuple[str, ...] = ("digits_cnn", "tabular", "char_lm")
#: names that expand to a list of families
FAMILY_GROUPS: dict[str, tuple[str, ...]] = {
    "meta_train": META_TRAIN_FAMILIES,
    "held_out": HELD_OUT_FAMILIES,
    "all": tuple(FAMILIES),
}


def register_family(cls: type[TaskFamily]) -> type[TaskFamily]:
    """Register a user's :class:`TaskFamily` subclass by its ``name`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, TaskFamily)):
        raise TaskError(f"register_family takes a TaskFamily subclass, got {cls!r}")
    FAMILIES[cls.name] = cls
    return cls


def resolve_families(names: str | Sequence[str]) -> list[str]:
    """Expand group names ("meta_train", "held_out", "all") and check every name is known."""
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
    if name not in FAMILIES:
        resolve_families(name)  # raises, naming the allowed families, for an unknown name
        raise TaskError(f"{name!r} is a group of families, not one family; pick one of {sorted(FAMILIES)}")
    return FAMILIES[name](budget_scale=budget_scale)


__all__ = [
    "FAMILIES",
    "FAMILY_GROUPS",
    "HELD_OUT_FAMILIES",
    "META_TRAIN_FAMILIES",
    "OPTIMIZERS",
    "Hyperparams",
    "Split",
    "Task",
    "TaskError",
    "TaskFamily",
    "accuracy",
    "make_family",
    "make_mlp",
    "mse",
    "r2_score",
    "register_family",
    "resolve_families",
]
