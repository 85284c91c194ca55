"""Time to result (issue 31): how soon a run first reaches a target validation loss, and how much
sooner than a reference run, in optimizer steps, training examples and wall-clock seconds.

The evaluation's target is the ``calibrated`` run's final validation loss on the same task, start
and seed; its reference totals are that run's steps, examples and training seconds at the end.
Every function here reads plain history rows (:func:`~rlhpo.evaluation.runner.train_interval`'s
records: ``val_loss`` with ``steps``, ``examples`` and ``seconds`` so far, ``seconds`` being the
training loop's wall-clock, validation excluded), so it is tested on synthetic curves.

Conventions: a run that never reaches the target has ``*_to_target`` = inf and speedup 0 (the
worst: it counts in a median and lowers it); a target that does not exist (no reference run, a
diverged one) gives NaN everywhere; a unit a history does not hold (rows written before it was
recorded) gives NaN in that unit.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Optional

#: the units time to result is measured in, as history keys
UNITS: tuple[str, ...] = ("steps", "examples", "seconds")
#: the runs.csv columns of :func:`time_to_result`
COLUMNS: tuple[str, ...] = tuple(f"{u}_to_target" for u in UNITS) + tuple(f"speedup_{u}" for u in UNITS)


def first_reach(rows: Iterable[Mapping], target: float) -> Optional[Mapping]:
    """The first history row whose validation loss is finite and at most ``target`` (None: none)."""
    for row in rows:
        v = row.get("val_loss", math.nan)
        if v is not None and math.isfinite(v) and v <= target:
            return row
    return None


def _unit(row: Optional[Mapping], unit: str) -> float:
    v = None if row is None else row.get(unit)
    return float(v) if v is not None else math.nan


def time_to_target(rows: Iterable[Mapping], target: float) -> dict[str, float]:
    """``{unit: steps / examples / seconds so far}`` at the first row that reaches ``target``; inf
    in every unit if none does; NaN in every unit if ``target`` is not a finite number."""
    if target is None or not math.isfinite(target):
        return {u: math.nan for u in UNITS}
    row = first_reach(rows, target)
    return {u: math.inf if row is None else _unit(row, u) for u in UNITS}


def speedup(reference_total: float, to_target: float) -> float:
    """``reference_total / to_target``: 0 when the target is never reached (inf), inf when it is
    reached before any cost (0), NaN when either is unknown."""
    if math.isnan(reference_total) or math.isnan(to_target):
        return math.nan
    if math.isinf(to_target):
        return 0.0
    return math.inf if to_target <= 0 else reference_total / to_target


def time_to_result(rows: Iterable[Mapping], target: float, reference_totals: Mapping[str, float]) -> dict[str, float]:
    """The runs.csv columns (:data:`COLUMNS`): ``<unit>_to_target`` of ``rows`` and
    ``speedup_<unit>`` = ``reference_totals[unit]`` / that."""
    to = time_to_target(rows, target)
    out = {f"{u}_to_target": to[u] for u in UNITS}
    out.update({f"speedup_{u}": speedup(float(reference_totals.get(u, math.nan)), to[u]) for u in UNITS})
    return out


def run_totals(rows: list[Mapping]) -> dict[str, float]:
    """A run's steps, examples and seconds at its end (its last history row; NaN without one)."""
    last = rows[-1] if rows else None
    return {u: _unit(last, u) for u in UNITS}


def unreachable() -> dict[str, float]:
    """:data:`COLUMNS` all NaN: no target to reach."""
    return {c: math.nan for c in COLUMNS}
