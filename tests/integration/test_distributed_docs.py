"""Every example of docs/distributed.md runs as written: the multi-process ones as scripts with
2 CPU processes (gloo), asserting one history on every rank and the same parameters at the end."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "distributed.md"
EXAMPLES = dict(re.findall(r"```python\n# example: ([\w-]+)\n(.*?)```", DOC.read_text(), flags=re.S))


def run_in_process(name: str, tmp_path, monkeypatch) -> dict:
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__main__"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(EXAMPLES[name], f"docs/distributed.md[example {name}]", "exec"), namespace)
    return namespace


def run_ranks(name: str, tmp_path, *launcher: str) -> list[dict]:
    """Run the example as a script (under ``launcher``, e.g. torchrun); read each rank's result."""
    script = tmp_path / f"{name}.py"
    script.write_text(EXAMPLES[name])
    out = tmp_path / "rank"
    cmd = [sys.executable, *launcher, str(script), str(out)]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    if name == "ddp":  # rank 0 gathered every rank's result
        return [dict(zip(("history", "params", "examples"), r)) for r in json.loads(out.read_text())]
    return [json.loads(Path(f"{out}.{r}").read_text()) for r in (0, 1)]


def assert_one_run(ranks: list[dict], budget: int) -> None:
    first = ranks[0]
    assert len(first["history"]) == 20  # the start, then the policy's 20 intervals: 19 decisions inside the run
    assert len({f["lr"] for f in first["history"]}) > 1  # the controller did set the lr
    for other in ranks[1:]:
        assert other["history"] == first["history"]
        assert other["params"] == first["params"]
    assert all(budget <= r["examples"] < budget + 256 for r in ranks)  # counted over both ranks


def test_the_examples_are_there():
    assert set(EXAMPLES) == {"ddp", "lightning-ddp", "huggingface-ddp", "amp", "accumulation", "compile"}


@pytest.mark.slow
def test_ddp_example(tmp_path):
    assert_one_run(run_ranks("ddp", tmp_path), 8192)


@pytest.mark.slow
def test_lightning_ddp_example(tmp_path):
    pytest.importorskip("lightning.pytorch")
    assert_one_run(run_ranks("lightning-ddp", tmp_path), 4096)


@pytest.mark.slow
def test_huggingface_ddp_example(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ranks = run_ranks("huggingface-ddp", tmp_path, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                      "--master_addr", "127.0.0.1", "--master_port", str(port))
    assert all(r["world"] == 2 for r in ranks)
    first = ranks[0]
    assert first["history"] and all(r["history"] == first["history"] and r["params"] == first["params"] for r in ranks)
    assert all(r["examples"] == 40 * 16 * 2 for r in ranks)  # max_steps x per-device batch x 2 ranks


def test_amp_example(tmp_path, monkeypatch):
    ns = run_in_process("amp", tmp_path, monkeypatch)
    c = ns["controller"]
    assert ns["skipped"] > 20  # the scaler skipped many steps, by design
    assert c.done and len(c.history) == 20 and not any(h.get("diverged") for h in c.history)  # the start + 19 decisions
    assert c.decision.guard.target.scaler is ns["scaler"]  # the guard snapshots the scaler


def test_accumulation_example(tmp_path, monkeypatch):
    ns = run_in_process("accumulation", tmp_path, monkeypatch)
    c = ns["controller"]
    assert c.done and len(c.history) == 20  # the start + 19 decisions
    # examples counted per optimizer step: 4 micro-batches each, never one
    assert c.examples_seen >= 8192 and ns["steps"] * 4 * 4 <= c.examples_seen <= ns["steps"] * 4 * 1024


@pytest.mark.slow
def test_compile_example(tmp_path, monkeypatch):
    import torch

    ns = run_in_process("compile", tmp_path, monkeypatch)
    assert isinstance(ns["model"], torch._dynamo.eval_frame.OptimizedModule)
    assert ns["controller"].done and len(ns["controller"].history) == 20
