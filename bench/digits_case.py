"""The new user's case of issue 32, as a benchmark: does the Controller harm a healthy run?

A small CNN on scikit-learn's digits (8x8 images, 10 classes), AdamW lr 1e-3 / wd 1e-2, batch 64,
30 epochs of 18 steps (540 optimizer steps), in a plain PyTorch loop, three seeds; the Controller
without and with a validation source (``val_loss_fn``), beside what the user would otherwise run:
a constant lr, OneCycleLR, and the calibrated warm-up + cosine set every step (a ``LambdaLR`` on
:func:`rlhpo.control.decision.step_factor`). Every method draws the same batches (one generator
seed per run seed). Reported per method: the mean test loss and accuracy, the Controller's
rollbacks, and whether the end of the run replaced the final weights.

    python -m bench.digits_case [--seeds 3] [--out docs/results/digits_case.md]
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from rlhpo.control.decision import step_factor
from rlhpo.control.prior import CALIBRATED
from rlhpo.policy.artifact import DEFAULT_POLICY

EPOCHS, BATCH, N_TRAIN = 30, 64, 1152  # 18 steps an epoch, 540 in all
METHODS = ("constant", "onecycle", "calibrated", "controller", "controller+val", "probe", "probe+val")


def _data() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return {"train": (x[:N_TRAIN], y[:N_TRAIN]), "val": (x[N_TRAIN:1472], y[N_TRAIN:1472]), "test": (x[1472:], y[1472:])}


def _model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 10),
    )


@torch.no_grad()
def _loss(model: nn.Module, xy: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
    model.eval()
    out = model(xy[0])
    model.train()
    return float(nn.functional.cross_entropy(out, xy[1])), float((out.argmax(1) == xy[1]).float().mean())


def run(method: str, seed: int, data: dict) -> dict:
    """One run of ``method``; its test loss, accuracy, rollbacks and whether the final weights stayed."""
    from rlhpo.controller import Controller

    torch.manual_seed(seed)
    model = _model()
    total = EPOCHS * (N_TRAIN // BATCH)
    peak = CALIBRATED["adamw"]
    opt = torch.optim.AdamW(model.parameters(), lr=peak["lr"] if method == "calibrated" else 1e-3,
                            weight_decay=peak["weight_decay"] if method == "calibrated" else 1e-2)
    scheduler, controller = None, None
    if method == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=total)
    elif method == "calibrated":
        scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: step_factor("cosine", min(t, total - 1), 1, total))
    elif method.startswith(("controller", "probe")):  # the default policy (this loop keeps its batches: the rule), or probes
        val = (lambda: _loss(model, data["val"])[0]) if method.endswith("+val") else None
        controller = Controller(opt, total_steps=total, val_loss_fn=val, batch_size=BATCH, model=model,
                                policy="probe" if method.startswith("probe") else DEFAULT_POLICY)
    x, y = data["train"]
    g = torch.Generator().manual_seed(seed)
    replaced = False
    t0 = time.perf_counter()
    for _ in range(EPOCHS):
        perm = torch.randperm(N_TRAIN, generator=g)
        for i in range(0, N_TRAIN, BATCH):
            idx = perm[i : i + BATCH]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if scheduler is not None:
                scheduler.step()
            if controller is not None:
                if controller.examples_seen == total - 1:  # the last step: finish() follows inside step()
                    last = [p.detach().clone() for p in model.parameters()]
                    controller.step(loss.detach())
                    replaced = not all(torch.equal(a, b) for a, b in zip(last, model.parameters()))
                else:
                    controller.step(loss.detach())
    test_loss, acc = _loss(model, data["test"])
    rollbacks = sum(bool(h.get("rolled_back")) for h in controller.history) if controller is not None else 0
    return {"test_loss": test_loss, "accuracy": acc, "rollbacks": rollbacks, "replaced": replaced,
            "seconds": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--out", type=Path, default=None, help="also write the table here (markdown)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    logging.getLogger("rlhpo").setLevel(logging.WARNING)  # the per-run start lines; rollbacks are warnings and show
    data = _data()
    rows = {m: [run(m, s, data) for s in range(args.seeds)] for m in METHODS}
    lines = [
        f"python -m bench.digits_case --seeds {args.seeds}   (a small CNN on scikit-learn's digits, AdamW 1e-3 / wd 1e-2,"
        f" batch {BATCH}, {EPOCHS} epochs = {EPOCHS * (N_TRAIN // BATCH)} steps; 1 CPU thread)",
        "",
        "| method | test loss (mean of seeds) | per seed | test accuracy | rollbacks per seed | final weights replaced | s / run |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, rs in rows.items():
        per_seed = ", ".join(f"{r['test_loss']:.4f}" for r in rs)
        lines.append(
            f"| {m} | {statistics.fmean(r['test_loss'] for r in rs):.4f} | {per_seed} "
            f"| {statistics.fmean(r['accuracy'] for r in rs):.4f} | {', '.join(str(r['rollbacks']) for r in rs)} "
            f"| {sum(r['replaced'] for r in rs)} of {len(rs)} | {statistics.fmean(r['seconds'] for r in rs):.1f} |"
        )
    text = "\n".join(lines)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    assert all(math.isfinite(r["test_loss"]) for rs in rows.values() for r in rs)


if __name__ == "__main__":
    main()
