"""The README's Python examples run as written (with the shipped policy)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index):
    code = BLOCKS[index]
    # the examples use full budgets; a smaller one keeps the test suite fast
    code = code.replace("total_examples=10_000", "total_examples=2_000").replace("budget_examples=8000", "budget_examples=1500")
    exec(compile(code, f"README.md[python block {index}]", "exec"), {})


def test_readme_has_the_examples():
    assert len(BLOCKS) >= 3
    assert any("Controller.from_pretrained" in b for b in BLOCKS)
    assert any("Task(" in b for b in BLOCKS)


def test_readme_results_tables_are_the_committed_csv_s():
    """The README's result tables are regenerated from docs/results/evaluate_runs.csv and must be
    in the README verbatim: the tables and the results cannot drift apart. After a new evaluation,
    `python -m rlhpo.evaluation.report docs/results/evaluate_runs.csv --readme README.md`."""
    import pandas as pd

    from rlhpo.evaluation.report import readme_block

    csv = README.parent / "docs" / "results" / "evaluate_runs.csv"
    assert readme_block(pd.read_csv(csv)) in README.read_text()


def test_readme_ablation_table_is_the_committed_one():
    """The controller-v2 ablation table in README is docs/results/ablations.md verbatim, and that
    file is the table `python -m rlhpo.metatrain.ablate` computes from the committed runs CSV."""
    import pandas as pd

    from rlhpo.metatrain.ablate import table_text

    results = README.parent / "docs" / "results"
    text = (results / "ablations.md").read_text()
    assert text in README.read_text()
    assert table_text(pd.read_csv(results / "ablations_runs.csv")) == text
