"""The one training loop and its mutable batch sampler."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_tiny_task
from torch.utils.data import DataLoader, TensorDataset

from rlhpo.tasks import Hyperparams, TaskError
from rlhpo.training.sampler import MutableBatchSampler
from rlhpo.training.session import TrainingSession


def test_mutable_batch_sampler_with_dataloader():
    data = TensorDataset(torch.arange(100.0))
    sampler = MutableBatchSampler(100, 10, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(data, batch_sampler=sampler)
    sizes = []
    for i, (batch,) in enumerate(loader):
        sizes.append(len(batch))
        if i == 1:
            sampler.batch_size = 25
    assert sizes[:2] == [10, 10] and sizes[2] == 25
    assert sum(sizes) == 100  # one epoch, every example once


def test_mutable_batch_sampler_shards_like_distributed_sampler():
    shards = [MutableBatchSampler(101, 8, generator=torch.Generator().manual_seed(3), num_replicas=3, rank=r) for r in range(3)]
    for epoch in range(2):
        batches = [list(iter(s)) for s in shards]
        assert len({len(b) for b in batches}) == 1  # every rank has as many batches (DDP needs it)
        seen = [torch.cat(b).tolist() for b in batches]
        assert all(len(x) == 33 for x in seen)  # 101 // 3: the tail that does not divide is left out
        assert len(set(seen[0]) | set(seen[1]) | set(seen[2])) == 99  # disjoint shards
    with pytest.raises(ValueError, match=r"rank must be in \[0, num_replicas\), got rank=2, num_replicas=2"):
        MutableBatchSampler(10, 2, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="at least one example per rank, got n=1 for 2 ranks"):
        MutableBatchSampler(1, 2, num_replicas=2, rank=0)


def test_mutable_batch_sampler_rejects_bad_size():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        MutableBatchSampler(10, 0)


def test_session_is_reproducible_and_respects_budget():
    def run(seed):
        s = TrainingSession(make_tiny_task(), seed=seed)
        s.train(300)
        s.set_hparams(Hyperparams(lr=3e-3, batch_size=7, weight_decay=0.0))
        stats = s.train(10_000)  # capped at the budget
        return s, stats

    a, sa = run(3)
    b, sb = run(3)
    assert a.examples_seen == b.examples_seen == 640
    assert sa.loss_mean == sb.loss_mean
    assert a.evaluate("val") == b.evaluate("val")
    assert a.hparams == Hyperparams(lr=3e-3, batch_size=7, weight_decay=0.0)
    c, sc = run(4)
    assert sc.loss_mean != sa.loss_mean


def test_session_state_dict_round_trip():
    s = TrainingSession(make_tiny_task(), seed=0)
    s.train(200)
    state = copy.deepcopy(s.state_dict())  # like torch modules, state_dict() shares tensors
    s.train(200)
    after = s.evaluate("val")
    t = TrainingSession(make_tiny_task(), seed=0)
    t.load_state_dict(state)
    t.train(200)
    assert t.evaluate("val") == pytest.approx(after)
    # the training clock (time to result's seconds) comes back with the state, and only training adds to it
    assert 0 < state["train_seconds"] < s.train_seconds and t.train_seconds > state["train_seconds"]
    before = s.train_seconds
    s.evaluate("val")
    assert s.train_seconds == before
    del state["train_seconds"]  # a checkpoint from before the clock existed
    t.load_state_dict(state)
    assert t.train_seconds == 0.0


def test_loss_that_is_not_a_scalar_is_named():
    task = make_tiny_task()
    task.loss_fn = lambda out, y: torch.nn.functional.cross_entropy(out, y, reduction="none")
    with pytest.raises(TaskError, match="task 'tiny-0': loss_fn must return a scalar float tensor"):
        TrainingSession(task).train(32)


def test_model_fn_of_wrong_type_is_named():
    task = make_tiny_task()
    task.model_fn = lambda: "not a model"
    with pytest.raises(TaskError, match="task 'tiny-0': model_fn must return a torch.nn.Module, got str"):
        TrainingSession(task)


def test_evaluate_rejects_unknown_split():
    with pytest.raises(ValueError, match="split must be 'train', 'val' or 'test'"):
        TrainingSession(make_tiny_task()).evaluate("holdout")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_session_on_gpu_matches_cpu_closely():
    cpu = TrainingSession(make_tiny_task(), seed=0)
    gpu = TrainingSession(make_tiny_task(), seed=0, device="cuda")
    cpu.train(320)
    gpu.train(320)
    assert gpu.evaluate("val")[0] == pytest.approx(cpu.evaluate("val")[0], rel=1e-3)


def test_model_that_does_not_fit_the_data_is_named():
    task = make_tiny_task()
    task.model_fn = lambda: torch.nn.Linear(7, 2)  # the data has 4 features
    with pytest.raises(TaskError, match=r"task 'tiny-0': the model and loss cannot run on a training batch of inputs \(16, 4\)"):
        TrainingSession(task).train(32)


def test_empty_and_mismatched_splits_are_named():
    from rlhpo.tasks import Split

    task = make_tiny_task()
    task.val = Split(task.val.x[:0], task.val.y[:0])
    with pytest.raises(TaskError, match="task 'tiny-0': the val split is empty"):
        task.validate()
    task = make_tiny_task()
    task.train = Split(task.train.x, task.train.y[:5])
    with pytest.raises(TaskError, match="task 'tiny-0': train.x has 32 rows but train.y has 5"):
        task.validate()


def test_a_snapshot_restored_twice_is_the_same_state_both_times():
    """torch's Optimizer.load_state_dict keeps the given tensors: restoring a snapshot must not
    let the training that follows update the snapshot in place (found by a probe's third branch,
    restored from the same snapshot as its second; a guard's second rollback had the same bug)."""
    import torch

    from rlhpo.training.snapshot import LoopState

    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)

    def step():
        opt.zero_grad()
        model(torch.randn(4, 2)).sum().backward()
        opt.step()

    step()
    state = LoopState(opt, model)
    snap = state.capture()
    kept = {k: v.clone() for k, v in snap["optimizer"]["state"][0].items()}
    for _ in range(2):
        state.restore(snap)
        step()
        step()
    for k, v in kept.items():
        assert torch.equal(v, snap["optimizer"]["state"][0][k]), k
