"""The ablation table's row (rlhpo.metatrain.ablate.row) on hand-made runs."""

from __future__ import annotations

import pandas as pd
import pytest

from rlhpo.metatrain.ablate import VARIANTS, main, row


def _run(method, start, seed, test, val=None, lr_last=1e-3, bs_last=32, wall=1.0, steps=100, diverged=False):
    return dict(
        task="t-1", start=start, seed=seed, method=method, test_loss=test, final_val_loss=test if val is None else val,
        lr_last=lr_last, start_lr=1e-3, batch_size_last=bs_last, start_batch_size=32, wall_s=wall, steps=steps,
        diverged=diverged,
    )


def test_row_compares_with_each_baseline_and_the_best_by_validation():
    base = pd.DataFrame(
        [_run("constant", s, k, 1.0) for s in ("sensible", "random") for k in (0, 1)]
        + [_run("cosine", s, k, 0.8) for s in ("sensible", "random") for k in (0, 1)]
        # calibrated has the best test loss but not the best validation loss: not "best no-tuning"
        + [_run("calibrated", s, k, 0.5, val=2.0) for s in ("sensible", "random") for k in (0, 1)]
    )
    runs = pd.DataFrame(
        [_run("controller", "sensible", 0, 0.7, lr_last=2e-3, bs_last=64, wall=1.5, steps=50),
         _run("controller", "sensible", 1, 0.9, lr_last=2e-3, bs_last=64, wall=1.5, steps=50),
         _run("controller", "random", 0, 0.4), _run("controller", "random", 1, 0.4),
         _run("replay", "sensible", 1000, 0.8), _run("replay", "sensible", 1001, 0.8),
         _run("replay", "random", 1000, 0.8), _run("replay", "random", 1001, 0.8)]
    )
    r = row("x", runs, base)
    assert r["vs constant (sensible)"] == "0.800 (2/2)"
    assert r["vs cosine (sensible)"] == "1.000 (1/2)"
    assert r["vs calibrated (sensible)"] == "1.600 (0/2)"
    assert r["vs best no-tuning (sensible)"] == "1.000 (1/2)"  # cosine: the lowest validation loss
    assert r["vs best no-tuning (random)"] == "0.500 (2/2)"
    assert r["closed vs replay"].endswith("(3/4)")
    assert r["final lr / start"] == "1.5" and r["final batch / start"] == "1.5"
    assert r["wall / constant"] == "1.25" and r["steps / constant"] == "0.75"
    assert r["diverged"] == 0


def test_variants_are_overrides_of_the_recipe_and_unknown_ones_are_refused(capsys):
    assert VARIANTS["v3"] == [] and all(isinstance(o, str) and "=" in o for v in VARIANTS.values() for o in v)
    with pytest.raises(SystemExit):
        main(["--variants", "nope"])
    assert "unknown variant(s) ['nope']" in capsys.readouterr().err
