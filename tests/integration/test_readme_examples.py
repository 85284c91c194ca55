"""The examples of README's "Using it" section run as written, and its statements about the
shipped policy match the policy (issue 14.7). Each example is a fenced python block whose first
line is ``# example: <name>``; every such block is run here, so README and tests cannot drift."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

from rlhpo.policy.artifact import load_artifact

README = Path(__file__).resolve().parents[2] / "README.md"
MODEL_CARD = Path(__file__).resolve().parents[2] / "rlhpo" / "pretrained" / "default" / "MODEL_CARD.md"


def using_it() -> str:
    text = README.read_text()
    return text[text.index("## Using it") : text.index("### Meta-train a controller")]


EXAMPLES = dict(re.findall(r"```python\n# example: ([\w-]+)\n(.*?)```", using_it(), flags=re.S))


def run_example(name, tmp_path, monkeypatch) -> dict:
    monkeypatch.chdir(tmp_path)  # an example that writes (the Trainer's output_dir) writes here
    namespace: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(EXAMPLES[name], f"README.md[example {name}]", "exec"), namespace)
    namespace["_warnings"] = [str(w.message) for w in caught]
    return namespace


def test_the_examples_are_there():
    assert set(EXAMPLES) == {"own-dataloader", "beside-a-scheduler", "lightning", "huggingface"}


def test_own_dataloader_example(tmp_path, monkeypatch):
    ns = run_example("own-dataloader", tmp_path, monkeypatch)
    c = ns["controller"]
    assert c.done and c.examples_seen < 2_000 + 64 and {h["batch_size"] for h in c.history} == {64}
    assert not any("batch-size decisions" in w for w in ns["_warnings"])  # said up front: no warning


def test_beside_a_scheduler_example(tmp_path, monkeypatch):
    ns = run_example("beside-a-scheduler", tmp_path, monkeypatch)
    c, opt = ns["controller"], ns["opt"]
    assert c.done and len(c.history) >= 10
    assert opt.param_groups[0]["lr"] == pytest.approx(c.history[-1]["lr"])  # the controller's, after the warm-up


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


def test_what_the_policy_was_trained_on_matches_the_policy():
    spec = load_artifact("default").spec
    a = spec.action_config()
    section = using_it()[using_it().index("### What the shipped policy was trained on") :]
    assert f"decides {spec.n_intervals} times per run" in section
    assert f"lr [{a.lr.min:g}, {a.lr.max:g}]" in section
    assert f"batch size [{a.batch_size.min:g}, {a.batch_size.max:g}]" in section
    assert f"weight decay [{a.weight_decay.min:g}, {a.weight_decay.max:g}]" in section
    assert f"at most {a.lr.max_step_factor:g}x per interval" in section
    for family in spec.trained_on:
        assert family in section
    card = MODEL_CARD.read_text()
    assert f"({spec.n_intervals} per run)" in card and f"lr [{a.lr.min:g}, {a.lr.max:g}]" in card.replace("1e-6", "1e-06")
