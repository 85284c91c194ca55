"""Warm start (issue 17): recommend starting hyperparameters for a new task from the
meta-training tasks it resembles.

    rec = rlhpo.recommend(model, train_dataset, optimizer="adamw", total_examples=50_000)
    rec.hparams        # Hyperparams(lr=..., batch_size=..., weight_decay=...)
    rec.nearest        # the meta-training tasks it resembles
    rec.confidence     # 1 / (1 + sd of log10 lr); rec.lr_range widens with the uncertainty

Modules: :mod:`~rlhpo.recommend.meta_features` (what a task looks like before training),
:mod:`~rlhpo.recommend.models` (kNN, Gaussian process, boosted trees; leave-one-family-out
selection, ``python -m rlhpo.recommend.select``), :mod:`~rlhpo.recommend.api` (:func:`recommend`),
``python -m rlhpo.recommend task=<family>:<seed>`` (the CLI). The meta-dataset is built by
searches of the evaluation (``python -m rlhpo.evaluation.meta_dataset``): this package imports no
evaluation, so the evaluation and the Controller's warm start can import it.

The package itself is callable, so ``rlhpo.recommend(...)`` is :func:`recommend` while
``rlhpo.recommend.models`` stays importable as a module.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from rlhpo.recommend.api import Recommendation, recommend, recommend_task
from rlhpo.recommend.meta_features import MetaFeatures, RecommendWarning, meta_features, task_meta_features


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Recommendation:
        return recommend(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["MetaFeatures", "Recommendation", "RecommendWarning", "meta_features", "recommend", "recommend_task", "task_meta_features"]
