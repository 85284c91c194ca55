"""The prior a controller starts from: the calibrated default for the optimizer kind.

Controller v3 does not start from the user's learning rate alone. Its null action (every action
zero) reproduces the best no-tuning schedule this project has: warm-up + cosine at one lr and
weight decay per optimizer kind, calibrated once on the meta-training families
(``python -m rlhpo.evaluation.calibrate``, the ``calibrated`` baseline of the evaluation). The
policy moves the lr level within a trust region around that prior (``max_lr_ratio`` of the
guard config), and the user's values stay an input:

* the batch size is the user's (the prior has none);
* the user's lr is a *bound*: the trust region reaches down to it when it is below the prior's
  (a user who trains at a lower lr never gets a controller that cannot go back there), never
  up beyond ``prior x max_lr_ratio``;
* an optimizer of another kind (not Adam, AdamW or SGD) has no calibrated default: the prior is
  the user's values (the ``user`` prior).

:data:`CALIBRATED` is the table of ``conf/evaluate/calibrated.yaml`` (a test keeps the two
equal); a policy artifact records the table it was meta-trained with, and deploys with it.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from rlhpo.types import Hyperparams

#: ``{optimizer kind: {"lr": ..., "weight_decay": ...}}``, as calibrated (conf/evaluate/calibrated.yaml)
CALIBRATED: dict[str, dict[str, float]] = {
    "adam": {"lr": 0.03, "weight_decay": 0.0},
    "adamw": {"lr": 0.03, "weight_decay": 0.1},
    "sgd": {"lr": 0.1, "weight_decay": 0.0005},
}

#: where a run's starting values come from: ``user`` (the user's values) or ``calibrated``
PRIORS: tuple[str, ...] = ("user", "calibrated")


def optimizer_kind(optimizer: Any) -> Optional[str]:
    """``adamw``, ``adam`` or ``sgd`` for a ``torch.optim`` optimizer of that class (or a
    subclass) or its name, else None. AdamW is tested first: in some torch releases it subclasses Adam."""
    if isinstance(optimizer, str):
        return optimizer.lower() if optimizer.lower() in CALIBRATED else None
    import torch

    if isinstance(optimizer, torch.optim.AdamW):
        return "adamw"
    if isinstance(optimizer, torch.optim.Adam):
        return "adam"
    if isinstance(optimizer, torch.optim.SGD):
        return "sgd"
    return None


def calibrated_hparams(
    kind: Optional[str], start: Hyperparams, table: Optional[Mapping[str, Mapping[str, float]]] = None
) -> Hyperparams:
    """The calibrated default's values for ``kind`` with ``start``'s batch size; ``start`` itself
    when ``kind`` has no calibrated default."""
    table = CALIBRATED if table is None else table
    if kind is None or kind not in table:
        return start
    d = table[kind]
    return Hyperparams(float(d["lr"]), start.batch_size, float(d["weight_decay"]))


def prior_start(
    prior: str, kind: Optional[str], start: Hyperparams, table: Optional[Mapping[str, Mapping[str, float]]] = None
) -> Hyperparams:
    """The values a run starts from under ``prior`` (see the module docstring; the decision spec
    validates ``prior``)."""
    return start if prior == "user" else calibrated_hparams(kind, start, table)
