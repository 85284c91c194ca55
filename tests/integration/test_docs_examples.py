"""The examples of the documentation run as written, and its statements about the shipped policy
match the policy (issue 14.7). Each example is a fenced python block whose first line is
``# example: <name>``; every such block of every page under docs/ is run here, with assertions on
what it did, so the pages and the tests cannot drift. (tests/integration/test_docs.py runs the
untagged blocks, once each.)"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import pytest
import torch

from rlhpo.policy.artifact import load_artifact

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
USING = DOCS / "using.md"
MODEL_CARD = ROOT / "rlhpo" / "pretrained" / "default" / "MODEL_CARD.md"
TAGGED = re.compile(r"```python\n# example: ([\w-]+)\n(.*?)```", flags=re.S)

#: example name -> (page, code), over every page of the site
EXAMPLES = {name: (page.name, code) for page in sorted(DOCS.glob("*.md")) for name, code in TAGGED.findall(page.read_text())}


def run_example(name, tmp_path, monkeypatch) -> dict:
    monkeypatch.chdir(tmp_path)  # an example that writes (the Trainer's output_dir) writes here
    page, code = EXAMPLES[name]
    # the examples use full budgets; a smaller one keeps the test suite fast
    code = code.replace("total_examples=10_000", "total_examples=2_000").replace("budget_examples=8000", "budget_examples=1500")
    namespace: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(code, f"docs/{page}[example {name}]", "exec"), namespace)
    namespace["_warnings"] = [str(w.message) for w in caught]
    return namespace


def test_the_examples_are_there():
    assert set(EXAMPLES) >= {
        "scheduler", "plain-loop", "own-dataloader", "lightning", "huggingface",  # using.md
        "environment", "own-task", "own-family",  # environment.md
        "warm-start",  # warm-start.md
    }
    assert all(EXAMPLES[name][0] == "using.md" for name in ("plain-loop", "own-dataloader", "lightning", "huggingface"))


def test_scheduler_example(tmp_path, monkeypatch):
    ns = run_example("scheduler", tmp_path, monkeypatch)
    c, opt = ns["controller"], ns["opt"]
    assert c.done and c._finished and len([h for h in c.history if "action" in h]) == c.spec.n_intervals - 1
    assert 0 < opt.param_groups[0]["lr"] < 0.01 * c.history[-1]["level"]  # set every step: the end of the cosine
    assert {h["batch_size"] for h in c.history} == {32}  # counted from the model's inputs, the user's loader kept
    assert not ns["_warnings"], ns["_warnings"]  # the common case says nothing


def test_plain_loop_example(tmp_path, monkeypatch):
    ns = run_example("plain-loop", tmp_path, monkeypatch)
    c, opt = ns["controller"], ns["opt"]
    assert c.done and 2_000 <= c.examples_seen and len(c.history) == c.spec.n_intervals  # the start, then the decisions
    assert 0 < opt.param_groups[0]["lr"] < 0.01 * c.history[-1]["level"]
    assert ns["loader"].batch_sampler.batch_size == c.history[-1]["batch_size"]  # the loader follows its decisions


def test_own_dataloader_example(tmp_path, monkeypatch):
    ns = run_example("own-dataloader", tmp_path, monkeypatch)
    c = ns["controller"]
    assert c.done and c.examples_seen < 2_000 + 64 and {h["batch_size"] for h in c.history} == {64}
    assert not any("batch-size decisions" in w for w in ns["_warnings"])  # said up front: no warning


def test_lightning_example(tmp_path, monkeypatch):
    pytest.importorskip("lightning.pytorch")
    ns = run_example("lightning", tmp_path, monkeypatch)
    c = ns["callback"].controller
    assert c.done and c.history and c.sampler is not None


def test_huggingface_example(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    ns = run_example("huggingface", tmp_path, monkeypatch)
    c = ns["callback"].controller
    assert c.history and c.optimizer.param_groups[1]["weight_decay"] == 0.0  # the no-decay group
    assert any("Hugging Face Trainer owns its data loader" in w for w in ns["_warnings"])


def test_environment_example(tmp_path, monkeypatch):
    ns = run_example("environment", tmp_path, monkeypatch)
    env, info = ns["env"], ns["info"]
    assert env.spec.id == "rlhpo/HyperparamControl-v0"  # made through gymnasium's registry, as the page says
    assert env.observation_space.contains(ns["obs"]) and math.isfinite(ns["reward"])
    assert info["lr"] > 0 and info["batch_size"] >= 1 and math.isfinite(info["val_loss"])


def test_environment_page_s_gymnasium_id_works_in_a_fresh_interpreter(tmp_path):
    """Issue 32: ``import rlhpo`` no longer imports the env package (the lean runtime), so
    ``gymnasium.make("rlhpo/HyperparamControl-v0")`` after it was NamespaceNotFound. The page's
    imports, then the id, in a fresh interpreter (in this process the env package is long imported)."""
    import os
    import subprocess
    import sys

    from rlhpo.envs import ENV_ID

    page, code = EXAMPLES["environment"]
    imports = [line for line in code.splitlines() if line.startswith(("import ", "from "))]
    script = "\n".join([*imports, "import gymnasium", f"env = gymnasium.make({ENV_ID!r}, families=['noisy_quadratic'], n_intervals=2)",
                        "env.reset(seed=0)", "print(env.spec.id)"])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"docs/{page}'s imports do not register {ENV_ID}:\n{done.stderr[-2000:]}"
    assert done.stdout.strip().splitlines()[-1] == ENV_ID


def test_own_task_example(tmp_path, monkeypatch):
    ns = run_example("own-task", tmp_path, monkeypatch)
    results = ns["results"]
    assert set(results) == {"controller", "constant", "cosine", "calibrated"}
    assert all(math.isfinite(r.test_loss) for r in results.values())


def test_own_family_example(tmp_path, monkeypatch):
    from rlhpo.tasks import FAMILIES

    before = dict(FAMILIES)
    try:
        ns = run_example("own-family", tmp_path, monkeypatch)
        assert "my_blobs" in FAMILIES and ns["task"].family == "my_blobs"
        assert ns["info"]["task"].startswith("my_blobs-")  # the env sampled a task of the new family
        again = FAMILIES["my_blobs"]().sample(seed=0)  # a seed always gives the same task
        assert torch.equal(again.train.x, ns["task"].train.x) and again.default_hparams == ns["task"].default_hparams
    finally:
        FAMILIES.clear()
        FAMILIES.update(before)  # the registry as the other tests expect it


def test_warm_start_example(tmp_path, monkeypatch):
    ns = run_example("warm-start", tmp_path, monkeypatch)
    c, opt = ns["controller"], ns["opt"]
    assert ns["rec"].hparams.lr > 0 and c.history[0]["recommended"]
    r = c.recommendation  # the controller's own, for its model and data
    assert not r.fallback and opt.param_groups[0]["lr"] == pytest.approx(r.hparams.lr)  # the optimizer holds it


def test_what_the_policy_was_trained_on_matches_the_policy():
    spec = load_artifact("default").spec
    a = spec.action_config()
    using = USING.read_text()
    section = using[using.index("## What the shipped policy was trained on") :]
    assert f"decides {spec.n_intervals} times per run" in section
    assert f"lr [{a.lr.min:g}, {a.lr.max:g}]" in section
    assert f"batch size [{a.batch_size.min:g}, {a.batch_size.max:g}]" in section
    assert f"weight decay [{a.weight_decay.min:g}, {a.weight_decay.max:g}]" in section
    assert f"at most {a.lr.max_step_factor:g}x per interval" in section
    for family in spec.trained_on:
        assert family in section
    card = MODEL_CARD.read_text()
    assert f"({spec.n_intervals} per run)" in card and f"lr [{a.lr.min:g}, {a.lr.max:g}]" in card.replace("1e-6", "1e-06")


def test_using_page_names_the_checkpoint_the_model_card_ships():
    """Issue 32: using.md said the final checkpoint ships while the model card says `best/` does."""
    card = MODEL_CARD.read_text()
    shipped = re.search(r"The run's `(best|policy)/` ships", card)
    assert shipped, "the model card says which of the run's checkpoints ships"
    using = " ".join(USING.read_text().split())
    section = using[using.index("## Choosing a policy") :].split(" ## ")[0]
    assert f"The shipped policy is its run's `{shipped.group(1)}/`" in section, section
    assert "the shipped policy is the final one" not in section
