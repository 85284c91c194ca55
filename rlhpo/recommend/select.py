"""Choose the warm start's meta-model: ``python -m rlhpo.recommend.select`` compares every
meta-model (:mod:`rlhpo.recommend.models`) on both feature sets by leave-one-family-out error on
the shipped meta-dataset (fit on all meta-training families but one, predict that one's tasks),
prints the table and writes it, with the choice, to ``rlhpo/recommend/data/selection.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from rlhpo.recommend.models import MODEL_KINDS, SELECTION, MetaModel, dataset_arrays, load_meta_dataset


def leave_one_family_out(
    rows: list[dict], kinds: Sequence[str] = MODEL_KINDS, feature_sets: Sequence[str] = ("static", "probe")
) -> list[dict]:
    """Per (model, feature set): absolute errors on each held-out family's tasks, fitted on the
    other families: the median (over all tasks) per target, in decades for lr and weight decay
    and in factors of 2 for the batch size; also the coverage of the lr's +-1 sd interval and
    ``lr_sd_scale``, the factor that makes it hold 68% of the held-out tasks (the recommendation's
    lr range is the model's sd times it)."""
    table = []
    for fs in feature_sets:
        X, Y, opts, fams = dataset_arrays(rows, fs)
        fams_a, opts_a = np.asarray(fams), np.asarray(opts)
        for kind in kinds:
            if kind == "prior" and fs != "static":
                continue
            err, cover, z = np.zeros_like(Y), np.zeros(len(Y), bool), np.zeros(len(Y))
            for fam in sorted(set(fams)):
                test = fams_a == fam
                m = MetaModel(kind, fs).fit(X[~test], Y[~test], opts_a[~test])
                mu, sd = m.predict(X[test], opts_a[test])
                err[test] = np.abs(mu - Y[test])
                cover[test] = err[test][:, 0] <= sd[:, 0]
                z[test] = err[test][:, 0] / np.maximum(sd[:, 0], 1e-3)
            per_family = {f: round(float(np.median(err[fams_a == f, 0])), 3) for f in sorted(set(fams))}
            table.append(dict(model=kind, features=fs, n=len(Y), lr_decades=round(float(np.median(err[:, 0])), 3),
                              batch_log2=round(float(np.median(err[:, 1])), 3), wd_decades=round(float(np.median(err[:, 2])), 3),
                              lr_sd_coverage=round(float(cover.mean()), 2), lr_sd_scale=round(float(np.quantile(z, 0.68)), 3),
                              lr_decades_by_family=per_family))
    return table


def select(table: list[dict]) -> dict:
    """The entry with the lowest median lr error (ties: batch size + weight decay errors);
    ``prior`` is the reference and is chosen only if nothing beats it."""
    return min(table, key=lambda r: (r["lr_decades"], r["batch_log2"] + r["wd_decades"]))


def format_table(table: list[dict]) -> str:
    fams = sorted(table[0]["lr_decades_by_family"]) if table else []
    head = "| model | features | lr err (decades) | batch err (log2) | wd err (decades) | lr +-1sd coverage | " + " | ".join(fams) + " |"
    lines = [head, "|" + "---|" * (6 + len(fams))]
    for r in table:
        by = " | ".join(f"{r['lr_decades_by_family'][f]:.2f}" for f in fams)
        lines.append(f"| {r['model']} | {r['features']} | {r['lr_decades']:.2f} | {r['batch_log2']:.2f} | {r['wd_decades']:.2f} | "
                     f"{r['lr_sd_coverage']:.2f} | {by} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Compare the meta-models by leave-one-family-out error; write data/selection.json")
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--out", type=Path, default=SELECTION)
    a = p.parse_args(argv)
    rows = load_meta_dataset(a.data)
    table = leave_one_family_out(rows)
    best = select(table)
    out = dict(command="python -m rlhpo.recommend.select", rows=len(rows), families=sorted({r["family"] for r in rows}),
               chosen=dict(model=best["model"], features=best["features"]), table=table,
               note="median absolute leave-one-family-out error over tasks; lr in decades relative to the optimizer's usual lr")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    print(format_table(table))
    print(f"chosen: {best['model']} on {best['features']} features ({len(rows)} meta-training tasks)")


if __name__ == "__main__":
    main()
