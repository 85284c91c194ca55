"""The Controller's parts, each alone (no policy, no Controller)."""

from __future__ import annotations

import pytest
import torch

from rlhpo.controller.batches import Batches
from rlhpo.controller.budget import Budget
from rlhpo.controller.knobs import Knobs
from rlhpo.controller.watch import Validation, Watch
from rlhpo.errors import ControllerError
from rlhpo.training.monitor import IntervalStats
from rlhpo.training.sampler import MutableBatchSampler
from rlhpo.types import Hyperparams


def test_budget_counts_once_and_reports_a_short_run():
    b = Budget(100, "steps", 4)
    with pytest.raises(ControllerError, match="fewer than the policy's 4 decisions"):
        Budget(3, "steps", 4).check_first_step(1)
    b.advance(60, 2)
    assert b.seen == 60 and not b.done and b.interval == 25
    with pytest.warns(UserWarning, match=r"ended after 60 of its total_steps=100 \(60%; 2 of its 3 decisions\)"):
        b.report_end()
    b.report_end()  # once
    b.in_examples(32)
    assert (b.total, b.unit) == (3200, "examples")


def test_batches_count_what_each_step_trained():
    budget = Budget(1000, "examples", 10)
    own = Batches(budget, 16, None, None, enabled=True)
    assert own.take(None, None) == 16 and own.take(None, torch.zeros(5, 2)) == 5 and own.used == 16
    assert own.check() and not own.control  # its own loader: batch-size control falls away without a word
    sampler = MutableBatchSampler(100, 8)
    controlled = Batches(budget, None, sampler, None, enabled=True)
    controlled.count(8)
    assert controlled.take(None, None) == 8 and controlled.current == 8 and controlled.control
    with pytest.raises(ControllerError, match="batch_size must be None or an integer >= 1"):
        Batches(budget, 0, None, None, enabled=True)


def test_knobs_keep_the_group_ratios_and_see_a_foreign_lr():
    w = torch.nn.Parameter(torch.zeros(2))
    b = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([{"params": [w], "lr": 1e-3, "weight_decay": 1e-2}, {"params": [b], "lr": 2e-3, "weight_decay": 0.0}])
    knobs = Knobs(opt, Batches(Budget(100, "steps", 4), 4, None, False, enabled=False), weight_decay=True)
    assert knobs.write(Hyperparams(1e-2, 4, 5e-2)) == Hyperparams(1e-2, 4, 5e-2)
    assert opt.param_groups[1]["lr"] == pytest.approx(2e-2) and opt.param_groups[1]["weight_decay"] == 0.0
    opt.param_groups[0]["lr"] = 0.5
    assert knobs.foreign_lr
    knobs.write_lr(1e-3)
    assert not knobs.foreign_lr


def test_validation_and_watch():
    v = Validation()
    stats = IntervalStats(steps=3, loss_mean=0.7, loss_first_half=0.8, loss_second_half=0.6, loss_std=0.1,
                          grad_norm=1.0, update_ratio=0.01, update_cosine=0.0, nonfinite=False)
    assert v.loss(stats) == 0.7 and v.take_proxy() and not v.take_proxy()
    v.report(torch.tensor(0.5))
    assert v.loss(stats) == 0.5 and not v.take_proxy()
    watch = Watch()
    with pytest.warns(UserWarning, match=r"controller.step\(loss\) is called before optimizer.step\(\)"):
        for _ in range(3):
            watch.step_called(hooked=True, scaled=False)  # three calls, no optimizer step seen before them
    assert "order" in watch.said and watch.state_dict() == [0, 3, 3, 0]
