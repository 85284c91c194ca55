"""The Controller under torch.distributed (gloo, 2 CPU processes): one decision for all ranks,
rollbacks together, examples counted globally, and a clear error on every rank for mismatched
budgets (and on the ranks that have one, for a Controller created on some ranks only). The plain
DDP loop of docs/distributed.md is run by tests/integration/test_distributed_docs.py."""

from __future__ import annotations

import json
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import rlhpo
from rlhpo.errors import ControllerError
from rlhpo.policy.driver import PolicyDriver

pytestmark = pytest.mark.slow  # two spawned processes that each import torch and rlhpo


def _end_rank() -> None:
    """Tear the group down and end the rank without Python's shutdown: DDP keeps gloo's worker
    threads alive past destroy_process_group, and one still releasing the last collective's tensors
    while the interpreter shuts down aborts the rank at random ("terminate called without an active
    exception"; docs/distributed.md does the same). The rank's results are written by then."""
    import os
    import sys

    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loop(rank: int, poison_step: int) -> tuple[rlhpo.Controller, torch.Tensor]:
    """A DDP loop; on rank 1 alone, one step reports a NaN loss (a divergence only rank 1 sees)."""
    torch.manual_seed(0)
    x = torch.randn(1024, 6) + rank  # the ranks' data differ: their own statistics differ too
    y = (x[:, 0] > rank).long()
    model = DDP(nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2)))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
    ctl = rlhpo.Controller.from_pretrained(optimizer=opt, total_examples=4096, model=model)
    ctl.driver = PolicyDriver.from_artifact(ctl.artifact, deterministic=False)  # sampled actions: rank 0's is everyone's
    loader = ctl.make_loader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    for step, (xb, yb) in enumerate(ctl.batches(loader)):
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ctl.step(torch.tensor(float("nan")) if (rank == 1 and step == poison_step) else loss.detach())
    return ctl, torch.cat([p.detach().flatten() for p in model.parameters()])


def _worker(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(100 + rank)  # deterministic=False: each rank's own sampling RNG differs
    ctl, params = _loop(rank, poison_step=40)
    result: dict = {"history": ctl.history, "params": params.tolist(), "examples": ctl.examples_seen,
                    "shard": ctl.sampler.n}
    try:
        opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
        rlhpo.Controller.from_pretrained(optimizer=opt, total_examples=1000 + rank, batch_size=8).begin()
        result["budget_error"] = None
    except ControllerError as e:
        result["budget_error"] = str(e)
    import rlhpo.control.distributed as sync

    sync.START_TIMEOUT = 3.0
    result["alone_error"] = None
    if rank == 0:  # rank 1 creates no controller: rank 0 says so instead of hanging in a collective
        try:
            opt = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
            rlhpo.Controller.from_pretrained(optimizer=opt, total_examples=1000, batch_size=8).begin()
        except ControllerError as e:
            result["alone_error"] = str(e)
    dist.barrier()
    with open(f"{out}.{rank}", "w") as f:
        json.dump(result, f)
    dist.barrier()  # every rank done with its collectives before any tears the group down
    _end_rank()


def test_ddp_ranks_decide_and_roll_back_together(tmp_path):
    out = str(tmp_path / "rank")
    mp.spawn(_worker, args=(2, free_port(), out), nprocs=2)
    r0, r1 = (json.load(open(f"{out}.{r}")) for r in (0, 1))
    assert r0["history"] == r1["history"] and len(r0["history"]) == 20  # the start + n_intervals - 1 decisions
    assert sum(bool(h.get("rolled_back")) for h in r0["history"]) >= 1  # rank 1's NaN rolled both back
    assert r0["params"] == r1["params"]
    assert r0["examples"] == r1["examples"] >= 4096  # counted over both ranks
    assert r0["shard"] == r1["shard"] == 512  # each rank trains on its half of the data
    for r in (r0, r1):
        assert r["budget_error"] is not None
        assert "the ranks disagree on total_examples (total_examples: rank 0 1000, rank 1 1001)" in r["budget_error"]
    assert "only 1 of 2 ranks started a Controller within 3 s; create it on every rank" in r0["alone_error"]


def _probe_worker(rank: int, world: int, port: int, out: str, policy: str = "probe") -> None:
    """Branching probes under DDP: each rank's training losses differ (its own data), so each rank
    alone would score the branches differently; the probe keeps the same branch on every rank.
    The batch rule (``policy="batch"``, labels 30% flipped: a noisy gradient): the ranks' noise
    statistics are averaged, so every rank grows its batch at the same decision."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    x = torch.randn(1024, 6) * (1 + 3 * rank)
    y = (x[:, 0] > 0).long()
    if policy == "batch":
        y = torch.where(torch.rand(1024) < 0.3, 1 - y, y)
    model = DDP(nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2)))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-3)
    if policy == "batch":  # a short run: without the rule's 500-step floor, so that it may grow
        from dataclasses import replace

        from rlhpo.control.batch_rule import BatchRuleConfig
        from rlhpo.policy.artifact import load_artifact

        policy = replace(load_artifact("batch"), batch_rule=BatchRuleConfig(min_steps=0))
    ctl = rlhpo.Controller(opt, total_examples=8192, model=model, policy=policy)
    loader = ctl.make_loader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    for xb, yb in ctl.batches(loader):
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ctl.step(loss.detach())
    probes = [h for h in ctl.history if h.get("probe")]
    params = torch.cat([p.detach().flatten() for p in model.parameters()]).tolist()
    dist.barrier()
    with open(f"{out}.{rank}", "w") as f:
        json.dump({"probes": probes, "params": params, "batch_sizes": [h["batch_size"] for h in ctl.history if not h.get("probe")]}, f)
    dist.barrier()
    _end_rank()


def test_ddp_ranks_keep_the_same_probe_branch(tmp_path):
    out = str(tmp_path / "rank")
    mp.spawn(_probe_worker, args=(2, free_port(), out), nprocs=2)
    r0, r1 = (json.load(open(f"{out}.{r}")) for r in (0, 1))
    assert len(r0["probes"]) == 2 and r0["probes"] == r1["probes"]  # the scores are the ranks' mean
    assert r0["params"] == r1["params"]  # the same branch's end state on both


def test_ddp_ranks_grow_the_batch_together(tmp_path):
    out = str(tmp_path / "rank")
    mp.spawn(_probe_worker, args=(2, free_port(), out, "batch"), nprocs=2)
    r0, r1 = (json.load(open(f"{out}.{r}")) for r in (0, 1))
    assert r0["batch_sizes"] == r1["batch_sizes"] and max(r0["batch_sizes"]) > 16  # grown, on both at once
    assert r0["params"] == r1["params"]
