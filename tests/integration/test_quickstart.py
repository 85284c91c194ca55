"""README's quick start runs exactly as printed, in at most 12 lines, and needs nothing else (issue 25)."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def quick_start() -> str:
    text = README.read_text()
    section = text[text.index("## Quick start") :]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_quick_start_is_at_most_12_lines():
    assert len(quick_start().strip().splitlines()) <= 12


def test_quick_start_runs_as_printed_without_a_word():
    namespace: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the common case says nothing
        exec(compile(quick_start(), "README.md[quick start]", "exec"), namespace)
    c, opt = namespace["controller"], namespace["opt"]
    assert c.done and c._finished and len(c.history) == c.spec.n_intervals  # the start, then one entry per decision
    assert not c.control_batch_size  # the user's own loader keeps its batch size
    # the controller's lr, set every step: the end of the cosine on the last level, not the user's 1e-3
    assert opt.param_groups[0]["lr"] < 0.01 * c.history[-1]["level"] and opt.param_groups[0]["lr"] != 1e-3
