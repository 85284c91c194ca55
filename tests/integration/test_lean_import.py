"""The lean runtime: importing rlhpo and applying the shipped policy in a training loop needs
torch and numpy only. Run in a fresh interpreter in which the training stack cannot be imported."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

#: what applying a controller must not need (the train / evaluate extras)
HEAVY = ("gymnasium", "stable_baselines3", "sb3_contrib", "hydra", "omegaconf", "pandas", "sklearn", "scipy",
         "matplotlib", "tensorboard", "ray", "lightning", "transformers")

SCRIPT = textwrap.dedent(
    """
    import sys
    HEAVY = {heavy!r}
    if {uninstalled!r}:  # as if not installed: importing them raises, importlib.util.find_spec says None
        sys.modules.update(dict.fromkeys(HEAVY))
    import torch
    from torch import nn
    import rlhpo
    from rlhpo import Controller

    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = (x[:, 0] > 0).long()
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-3)
    ctl = Controller.from_pretrained(optimizer=opt, total_examples=2048, model=model)
    loader = ctl.make_loader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    for xb, yb in ctl.batches(loader):
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad(); loss.backward(); opt.step()
        ctl.step(loss)
    assert len(ctl.history) == ctl.spec.n_intervals, len(ctl.history)  # the start, then one entry per decision
    assert type(ctl.artifact.model).__name__ == "LeanPolicy"
    print(sorted(m for m, v in sys.modules.items() if m.split(".")[0] in HEAVY and v is not None))
    """
)


@pytest.mark.parametrize("uninstalled", [False, True], ids=["installed", "uninstalled"])
def test_applying_the_shipped_policy_imports_no_training_stack(uninstalled):
    """Installed: none of the training stack is imported. Uninstalled: the loop runs without it."""
    script = SCRIPT.format(heavy=HEAVY, uninstalled=uninstalled)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
