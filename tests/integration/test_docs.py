"""The README and the documentation site (docs/, mkdocs.yml) say what the code and the committed
results say: generated tables are the generator's output verbatim, the architecture page names
only paths and modules that exist, the nav names only pages that exist, and every python block
runs as written.

The python blocks (every ```python fence of README.md and docs/*.md):

- every block runs as written, as a script in a fresh interpreter in an empty folder
  (:func:`test_python_block_runs_as_written`): what a reader who copies it gets, with nothing
  imported before it; the multi-process ones (and the slow ``torch.compile`` one) run as written
  in tests/integration/test_distributed_docs.py instead;
- a block whose first line is ``# example: <name>`` also runs, with assertions on what it did,
  in test_docs_examples.py or test_distributed_docs.py (``test_<name>_example``);
- a block whose first line is ``# not run: <why>`` is skipped, and ``<why>`` must say it needs a
  GPU or a cluster, or that it is a fragment (a piece of a larger program): ``grep -rn "# not run:"
  README.md docs`` lists them; keep them few."""

from __future__ import annotations

import csv
import importlib
import importlib.util
import re
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
RESULTS = DOCS / "results"
PAGES = sorted(DOCS.glob("*.md"))


#: a fenced python block at the start of a line: (info string, code)
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", flags=re.S | re.M)
#: why a block may be left unrun: it needs hardware or a cluster the tests do not have, or it is a fragment
NOT_RUN_REASONS = ("gpu", "cuda", "cluster", "fragment")
#: examples run as written by test_distributed_docs.py: the multi-process ones as 2-process scripts,
#: torch.compile (half a minute) in process
RUN_IN_DISTRIBUTED_DOCS = ("ddp", "lightning-ddp", "huggingface-ddp", "compile")


def _python_blocks() -> list[tuple[str, int, str]]:
    """(page, line of the fence, code) of every python block of the README and docs/*.md."""
    out = []
    for path in [README, *PAGES]:
        text = path.read_text()
        for m in FENCE.finditer(text):
            if m.group(1).strip() == "python":
                out.append((path.relative_to(ROOT).as_posix(), text.count("\n", 0, m.start()) + 1, m.group(2)))
    return out


BLOCKS = _python_blocks()


def _tag(code: str, marker: str) -> str | None:
    first = code.splitlines()[0] if code.strip() else ""
    return first[len(marker):].strip() if first.startswith(marker) else None


def test_readme_has_a_quick_start_block():
    text = README.read_text()
    section = text[text.index("## Quick start") :].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1 and "rlhpo" in blocks[0]
    assert any(path == "README.md" and code == blocks[0] for path, _, code in BLOCKS)  # so it runs below


def test_every_python_fence_is_found():
    """A fence the block pattern would miss (```py, ```python3, indented) would go unrun."""
    for path in [README, *PAGES]:
        for m in re.finditer(r"^[ \t]*```[ \t]*(py\w*)", path.read_text(), flags=re.M):
            assert m.group(0) == "```python", f"{path.name}: {m.group(0)!r}: fence python blocks as ```python at the line start"
    assert len(BLOCKS) >= 15


def test_every_python_block_is_run_or_says_why_not():
    """Every example has a test that runs it with assertions; a block left unrun says why, and the
    why is a GPU, a cluster or a fragment; there are few of them."""
    import test_distributed_docs
    import test_docs_examples

    tests = set(dir(test_docs_examples)) | set(dir(test_distributed_docs))
    not_run = []
    for path, line, code in BLOCKS:
        name, why = _tag(code, "# example:"), _tag(code, "# not run:")
        if name is not None:
            assert f"test_{name.replace('-', '_')}_example" in tests, f"{path}:{line}: example {name} has no test"
        if why is not None:
            assert any(r in why.lower() for r in NOT_RUN_REASONS), f"{path}:{line}: '# not run: {why}' (allowed: {NOT_RUN_REASONS})"
            not_run.append(f"{path}:{line}")
    assert len(not_run) <= 3, not_run
    assert set(RUN_IN_DISTRIBUTED_DOCS) <= set(test_distributed_docs.EXAMPLES)


def _as_written_params() -> list:
    params = []
    for path, line, code in BLOCKS:
        if _tag(code, "# example:") in RUN_IN_DISTRIBUTED_DOCS:
            continue
        why = _tag(code, "# not run:")
        marks = [pytest.mark.slow] + ([pytest.mark.skip(reason=f"{path}:{line}: {why}")] if why is not None else [])
        params.append(pytest.param(path, line, code, marks=marks, id=f"{path}:{line}"))
    return params


@pytest.mark.parametrize("path, line, code", _as_written_params())
def test_python_block_runs_as_written(path, line, code, tmp_path):
    """The block as a script in a fresh interpreter, in an empty folder: nothing imported before it
    (an import the page forgot fails here), nothing shortened. The checkout's rlhpo is imported."""
    import os
    import subprocess
    import sys

    script = tmp_path / f"{Path(path).stem}_{line}.py"
    script.write_text(code)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{path}:{line} failed as written:\n{done.stderr[-3000:]}"


def test_evaluation_page_holds_the_tables_of_the_committed_csv():
    """docs/evaluation.md's result tables are regenerated from docs/results/evaluate_runs.csv and must
    be on the page verbatim: the tables and the results cannot drift apart. After a new evaluation,
    `python -m rlhpo.evaluation.report docs/results/evaluate_runs.csv --page docs/evaluation.md --readme README.md`."""
    from rlhpo.evaluation.report import readme_block

    assert readme_block(pd.read_csv(RESULTS / "evaluate_runs.csv")) in (DOCS / "evaluation.md").read_text()


def test_readme_headline_table_is_the_committed_csv_s():
    from rlhpo.evaluation.report import headline_block

    block = headline_block(pd.read_csv(RESULTS / "evaluate_runs.csv"))
    assert block in README.read_text()
    assert "| optuna |" in block and "| calibrated |" in block and "sensible start" in block and "random start" in block


def test_report_cli_writes_the_page_block_and_the_readme_headline(tmp_path):
    from rlhpo.evaluation.report import HEADLINE_BEGIN, HEADLINE_END, README_BEGIN, README_END, main

    page, readme = tmp_path / "evaluation.md", tmp_path / "README.md"
    page.write_text(f"# page\n\n{README_BEGIN}\nold\n{README_END}\n\ntext after\n")
    readme.write_text(f"# readme\n\n{HEADLINE_BEGIN}\nold\n{HEADLINE_END}\n\nmore\n")
    main([str(RESULTS / "evaluate_runs.csv"), "--page", str(page), "--readme", str(readme)])
    df = pd.read_csv(RESULTS / "evaluate_runs.csv")
    from rlhpo.evaluation.report import headline_block, readme_block

    assert page.read_text() == f"# page\n\n{readme_block(df)}\n\ntext after\n"
    assert readme.read_text() == f"# readme\n\n{headline_block(df)}\n\nmore\n"
    with pytest.raises(ValueError, match="has no generated block"):
        main([str(RESULTS / "evaluate_runs.csv"), "--readme", str(page)])


def test_ablation_table_is_the_committed_one():
    """The controller-v2 ablation table on the evaluation page is docs/results/ablations.md verbatim,
    and that file is the table `python -m rlhpo.metatrain.ablate` computes from the committed runs CSV."""
    from rlhpo.metatrain.ablate import table_text

    text = (RESULTS / "ablations.md").read_text()
    assert text in (DOCS / "evaluation.md").read_text()
    assert table_text(pd.read_csv(RESULTS / "ablations_runs.csv")) == text


def test_soak_table_is_what_the_committed_samples_give():
    """The soak table on the reliability page is what `python -m bench.soak` computes from the
    samples it wrote (docs/results/soak.csv), after its 5-minute warm-up."""
    from bench.soak import Sample, growth_after_warmup

    with open(RESULTS / "soak.csv", newline="") as f:
        samples = [Sample(**{k: (int(v) if k in ("n_procs", "checkpoint_step") else float(v)) for k, v in row.items()})
                   for row in csv.DictReader(f)]
    page = (DOCS / "reliability.md").read_text()
    for key in ("rss_mib", "uss_mib", "trainer_rss_mib"):
        g = growth_after_warmup(samples, 300.0, key)
        row = (f"| {g.warmup_rss_mib:.1f} MiB | {g.last_rss_mib:.1f} MiB | {g.growth_mib:+.1f} MiB ({g.growth_pct:+.1f}%) "
               f"| {g.slope_mib_per_hour:+.0f} MiB/hour |")
        assert row in page, row


def test_meta_training_page_points_at_the_throughput_page():
    """The throughput tables live in vec_envs.md (tied to their CSV by test_vec_throughput_doc.py)."""
    assert "(vec_envs.md)" in (DOCS / "meta-training.md").read_text()


def test_model_card_is_included_from_the_shipped_policy():
    assert '--8<-- "rlhpo/pretrained/default/MODEL_CARD.md"' in (DOCS / "model-card.md").read_text()
    assert (ROOT / "rlhpo" / "pretrained" / "default" / "MODEL_CARD.md").is_file()


def test_every_committed_figure_is_shown_by_a_page():
    """A figure under docs/ that no page (nor the README) shows is stale or lost (issue 32: two
    controller-v2 figures lay in docs/results unreferenced)."""
    text = "\n".join(p.read_text() for p in [README, *PAGES, ROOT / "rlhpo" / "pretrained" / "default" / "MODEL_CARD.md"])
    figures = sorted(DOCS.rglob("*.png")) + sorted(DOCS.rglob("*.svg"))
    assert figures
    unshown = [f.relative_to(DOCS).as_posix() for f in figures if f.relative_to(DOCS).as_posix() not in text and f.name not in text]
    assert not unshown, f"figures no page shows: {unshown}"


def test_make_demo_banner_is_one_line_that_says_each_thing_once():
    """Issue 32: the banner named the calibrated default twice and ran over two screen lines."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile[makefile.index("\ndemo:") :].split("\n\n")[0]
    banners = [line for line in recipe.splitlines() if line.strip().startswith("@echo")]
    assert len(banners) == 1 and len(banners[0].strip()) <= 140, banners
    words = re.findall(r"[\w$()-]+", banners[0].lower())
    trigrams = [" ".join(words[i : i + 3]) for i in range(len(words) - 2)]
    assert len(trigrams) == len(set(trigrams)), sorted({t for t in trigrams if trigrams.count(t) > 1})


def test_nav_names_only_pages_that_exist():
    mkdocs = (ROOT / "mkdocs.yml").read_text()
    nav = mkdocs[mkdocs.index("\nnav:") : mkdocs.index("\nnot_in_nav:")]
    pages = re.findall(r":\s*(\S+\.md)\s*$", nav, flags=re.M)
    assert len(pages) >= 10
    for page in pages:
        assert (DOCS / page).is_file(), page


# --- the architecture page ------------------------------------------------------------------

ARCHITECTURE = (DOCS / "architecture.md").read_text()
PATH = re.compile(r"(?<![\w./-])((?:rlhpo|tests|conf|envs|docs)/[\w./*{},<>-]*|pyproject\.toml|mkdocs\.yml|Makefile)")
MODULE = re.compile(r"(?<![\w./-])(rlhpo(?:\.\w+)+)")
BARE_FILE = re.compile(r"(?<![\w./-])(\w+\.(?:py|yaml|txt|md|toml|json|jsonl))\b")


def _names(pattern: re.Pattern, text: str) -> set[str]:
    return {m.rstrip(".,") for m in pattern.findall(text)}


def _exists(name: str) -> bool:
    """A dotted name: a module, or an attribute of the longest importable module before it."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        try:
            spec = importlib.util.find_spec(module)
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            continue
        obj = importlib.import_module(module)
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_architecture_page_names_only_paths_that_exist():
    paths = _names(PATH, ARCHITECTURE)
    assert len(paths) > 30  # the page does name them
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"the architecture page names paths that do not exist: {missing}"


def test_architecture_page_names_only_modules_that_exist():
    modules = _names(MODULE, ARCHITECTURE)
    assert len(modules) > 25
    missing = sorted(m for m in modules if not _exists(m))
    assert not missing, f"the architecture page names modules or attributes that do not exist: {missing}"


def test_architecture_tree_files_exist_under_their_folder():
    """In the tree of the packages, a bare file name (``session.py``) exists under the folder that
    starts its entry (``rlhpo/training/``)."""
    tree = ARCHITECTURE[ARCHITECTURE.index("## The packages and modules") :].split("```")[1]
    folder, missing, checked = ROOT, [], 0
    for line in tree.splitlines():
        head = line.split()[0] if line.strip() and not line.startswith(" ") else None
        if head is not None:
            folder = ROOT / head.rstrip(",") if head.rstrip(",").endswith("/") else ROOT
        for name in BARE_FILE.findall(line):
            checked += 1
            if not any(folder.rglob(name)):
                missing.append(f"{name} (under {folder.relative_to(ROOT)})")
    assert checked > 40 and not missing, missing


def test_architecture_page_covers_every_package():
    packages = {p.parent.relative_to(ROOT).as_posix() + "/" for p in (ROOT / "rlhpo").glob("*/__init__.py")}
    assert packages, "no packages found"
    absent = sorted(p for p in packages if p not in ARCHITECTURE)
    assert not absent, f"packages the architecture page does not mention: {absent}"


@pytest.mark.parametrize(
    "page, result",
    [
        ("evaluation.md", "env_overhead.txt"),
        ("evaluation.md", "controller_overhead.txt"),
        ("reliability.md", "guard_overhead.txt"),
        ("reliability.md", "divergence_rule.txt"),
        ("reliability.md", "do_no_harm.txt"),
        ("reliability.md", "lr_cap.txt"),
    ],
)
def test_measured_tables_are_the_committed_output_of_their_command(page, result):
    """The tables (and the controller-overhead lines) on a page are what the benchmark wrote to
    docs/results/, verbatim: a re-measurement that is committed without its page fails here."""
    text = (DOCS / page).read_text()
    lines = [line for line in (RESULTS / result).read_text().splitlines() if line.startswith(("|", "  ", "task "))]
    assert len(lines) >= 4
    if f'--8<-- "docs/results/{result}"' in text:  # included whole at build time (mkdocs snippets, check_paths)
        return
    missing = [line for line in lines if line not in text]
    assert not missing, f"docs/{page} lacks these lines of docs/results/{result}: {missing[:3]}"


def test_warm_start_model_table_is_the_committed_selection():
    """The meta-model table on the warm-start page is rlhpo/recommend/data/selection.json, which
    `python -m rlhpo.recommend.select` wrote: same rows, in order, each number to its 2 decimals."""
    import json

    selection = json.loads((ROOT / "rlhpo" / "recommend" / "data" / "selection.json").read_text())
    page = (DOCS / "warm-start.md").read_text()
    table = page[page.index("| model | features | lr (decades)") :].split("\n\n")[0].splitlines()[2:]
    assert len(table) == len(selection["table"])
    for line, row in zip(table, selection["table"]):
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        assert cells[1] == {"static": "static", "probe": "static + probe"}[row["features"]], line
        numbers = [float(c) for c in cells[2:6]]
        expected = [row["lr_decades"], row["batch_log2"], row["wd_decades"], row["lr_sd_coverage"]]
        assert numbers == pytest.approx(expected, abs=0.0051), line
        assert ("(chosen)" in line) == (row["model"] == selection["chosen"]["model"] and row["features"] == selection["chosen"]["features"])
    chosen = next(r for r in selection["table"] if (r["model"], r["features"]) == tuple(selection["chosen"].values()))
    assert f"widens it {chosen['lr_sd_scale']:.2f}x" in page


def test_warm_start_dev_table_is_what_the_committed_runs_give():
    """The dev table on the warm-start page is `python -m rlhpo.recommend.targets
    docs/results/warm_start_dev_runs.csv`'s first block, to 2 decimals."""
    from rlhpo.recommend.targets import report

    printed = report(pd.read_csv(RESULTS / "warm_start_dev_runs.csv"))
    values = {m: (float(s), float(r)) for m, s, r in re.findall(r"^  (\w+)\s+sensible ([\d.]+)\s+random ([\d.]+)$", printed, flags=re.M)}
    page = (DOCS / "warm-start.md").read_text()
    table = page[page.index("| method | sensible start | random start |") :].split("\n\n")[0].splitlines()[2:]
    assert len(table) >= 7
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        method = cells[0].split()[0]
        assert [float(c) for c in cells[1:3]] == pytest.approx(values[method], abs=0.0051), line


def test_every_page_names_only_repository_paths_that_exist():
    """Any page (and the README) that names a file of the repository (rlhpo/, tests/, conf/, envs/,
    docs/) names one that exists; patterns (``soak.{csv,log}``, ``step_*``, ``<run dir>``) are skipped."""
    from rlhpo import ENV_ID

    missing = []
    for page in [README, *PAGES]:
        for name in _names(PATH, page.read_text()):
            name = name.rstrip(",")
            if name == ENV_ID or any(c in name for c in "{*<"):
                continue
            if not (ROOT / name).exists():
                missing.append(f"{page.name}: {name}")
    assert not missing, missing
