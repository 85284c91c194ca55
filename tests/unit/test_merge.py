"""Merging a new evaluation's runs with an earlier one's searches (rlhpo.evaluation.merge)."""

import numpy as np
import pandas as pd
import pytest

from rlhpo.evaluation.merge import merge


def _runs(methods, loss):
    rows = []
    for m in methods:
        for seed in (0, 1):
            rows.append(dict(task="t", family="f", start="sensible", group="main", seed=seed, method=m, test_loss=loss[m],
                             final_val_loss=loss[m], diverged=False, start_lr=1e-3, tuned_lr=np.nan, to_controller_final_val=0.5))
    return pd.DataFrame(rows)


def test_new_runs_replace_old_and_kept_searches_are_compared_again():
    base = _runs(["constant", "calibrated", "controller", "optuna"], {"constant": 2.0, "calibrated": 1.0, "controller": 1.5, "optuna": 0.8})
    new = _runs(["constant", "calibrated", "controller"], {"constant": 2.0, "calibrated": 1.0, "controller": 0.9})
    out = merge(base, new, ["optuna"])
    assert sorted(set(out.method)) == ["calibrated", "constant", "controller", "optuna"] and len(out) == 8
    assert (out[out.method == "controller"].test_loss == 0.9).all()  # the new controller, not the old
    opt = out[out.method == "optuna"]
    assert np.allclose(opt.norm_test_loss, 0.4) and opt.to_controller_final_val.isna().all()
    assert (out[out.method == "controller"].best_no_tuning == "calibrated").all()


def test_merge_refuses_what_it_cannot_do():
    base = _runs(["constant", "optuna"], {"constant": 2.0, "optuna": 0.8})
    with pytest.raises(SystemExit, match="not in the base runs"):
        merge(base, base, ["pbt"])
    with pytest.raises(SystemExit, match="have them already"):
        merge(base, base, ["optuna"])
    other = _runs(["constant"], {"constant": 2.0}).assign(task="u")
    with pytest.raises(SystemExit, match="different tasks"):
        merge(base, other, ["optuna"])


def test_rename_keeps_the_previous_policys_runs_as_their_own_row():
    base = _runs(["constant", "controller"], {"constant": 2.0, "controller": 1.5})
    base = pd.concat([base, _runs(["controller"], {"controller": 1.4}).assign(group="replay")], ignore_index=True)
    new = _runs(["constant", "controller"], {"constant": 2.0, "controller": 0.9})
    out = merge(base, new, ["controller@v2"], {"controller": "controller@v2"})
    v2 = out[out.method == "controller@v2"]
    assert len(v2) == 2 and (v2.group == "main").all() and np.allclose(v2.test_loss, 1.5)
    with pytest.raises(SystemExit, match="not in the base runs"):
        merge(base, new, ["x"], {"nope": "x"})


def test_kept_runs_time_to_result_is_blanked_unless_their_calibrated_run_is_kept_too():
    ttr = dict(steps_to_target=50.0, examples_to_target=500.0, seconds_to_target=1.0, speedup_steps=2.0,
               speedup_examples=2.0, speedup_seconds=2.0)
    base = _runs(["constant", "calibrated", "lr_grid", "optuna"],
                 {"constant": 2.0, "calibrated": 1.0, "lr_grid": 0.8, "optuna": 0.9}).assign(**ttr)
    new = _runs(["constant", "calibrated"], {"constant": 2.0, "calibrated": 1.1}).assign(**ttr)
    out = merge(base, new, ["optuna", "lr_grid"])
    kept = out[out.method.isin(["optuna", "lr_grid"])]
    assert kept.speedup_steps.isna().all() and kept.steps_to_target.isna().all()  # measured against BASE's calibrated run
    assert (out[out.method == "constant"].speedup_steps == 2.0).all()
    # headroom and capture are recomputed over the merged runs: the new calibrated run is the reference
    assert np.allclose(out[out.method == "lr_grid"].headroom, 1 - 0.8 / 1.1)
    assert np.allclose(out[out.method == "optuna"].capture, (1.1 - 0.9) / (1.1 - 0.8))
    both = merge(base, new.drop(columns=list(ttr))[new.method == "constant"], ["calibrated", "lr_grid"])
    assert (both[both.method == "lr_grid"].speedup_steps == 2.0).all()


def test_the_cli_drops_new_runs_so_that_the_base_ones_are_kept(tmp_path):
    from rlhpo.evaluation.merge import main

    ttr = dict(steps_to_target=50.0, examples_to_target=500.0, seconds_to_target=1.0, speedup_steps=2.0,
               speedup_examples=2.0, speedup_seconds=2.0)
    base = _runs(["constant", "calibrated", "lr_grid"], {"constant": 2.0, "calibrated": 1.0, "lr_grid": 0.8}).assign(**ttr)
    new = _runs(["calibrated", "controller"], {"calibrated": 1.0, "controller": 0.9}).assign(**ttr)
    base.to_csv(tmp_path / "base.csv", index=False)
    new.to_csv(tmp_path / "new.csv", index=False)
    main([str(tmp_path / "base.csv"), str(tmp_path / "new.csv"), "--keep", "constant", "calibrated", "lr_grid",
          "--drop-new", "calibrated", "--out", str(tmp_path / "out.csv")])
    out = pd.read_csv(tmp_path / "out.csv")
    assert sorted(set(out.method)) == ["calibrated", "constant", "controller", "lr_grid"]
    assert (out[out.method == "lr_grid"].speedup_steps == 2.0).all()  # its calibrated run is kept with it
    with pytest.raises(SystemExit):
        main([str(tmp_path / "base.csv"), str(tmp_path / "new.csv"), "--drop-new", "pbt", "--out", str(tmp_path / "x.csv")])


def test_histories_merge_as_the_runs_do(tmp_path):
    """--histories: the new histories edited as the new runs are (dropped, renamed, copied), the
    base's of the kept methods renamed as the base runs are."""
    from rlhpo.evaluation.merge import main

    def runs(methods):
        return _runs(methods, {m: 1.0 for m in methods})

    def hist(methods):
        return pd.DataFrame([dict(task="t", seed=seed, start="sensible", group="main", method=m, interval=k, val_loss=float(k))
                             for m in methods for seed in (0, 1) for k in range(2)])

    for name, df in (("base", runs(["calibrated", "controller", "prodigy"])), ("new", runs(["calibrated", "controller"])),
                     ("base_h", hist(["calibrated", "controller", "prodigy"])), ("new_h", hist(["calibrated", "controller"]))):
        df.to_csv(tmp_path / f"{name}.csv", index=False)
    main([str(tmp_path / "base.csv"), str(tmp_path / "new.csv"), "--rename", "controller=controller@rule", "--drop-new", "calibrated",
          "--copy-new", "controller=prior_only", "--keep", "calibrated", "controller@rule", "prodigy", "--out", str(tmp_path / "out.csv"),
          "--histories", str(tmp_path / "base_h.csv"), str(tmp_path / "new_h.csv"), str(tmp_path / "out_h.csv")])
    h = pd.read_csv(tmp_path / "out_h.csv")
    assert sorted(set(h.method)) == sorted(set(pd.read_csv(tmp_path / "out.csv").method))
    assert h.groupby("method").size().to_dict() == {m: 4 for m in ["calibrated", "controller", "controller@rule", "prior_only", "prodigy"]}
