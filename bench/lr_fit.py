"""Does the start of a run say which lr it should have had? (issue 33: the lr headroom)

The calibrated prior trains every task at one lr per optimizer kind; an lr grid around it (the
``lr_grid`` row, x1/8 .. x8) finds a few per cent on many held-out tasks, so a per-task correction
of the lr level is where the headroom is. This bench collects, per task-seed:

* the controller's observations (the policy's feature set) at each decision of the prior's run
  (``policy="rule"``: the calibrated default, every action zero);
* the final validation and test loss of the calibrated run at each lr of the grid (the label: the
  factor with the lowest final validation loss, as ``lr_grid`` picks).

    python -m bench.lr_fit collect --families meta_train --seeds 10 --out train.csv
    python -m bench.lr_fit collect --families dev --seeds 8 --out dev.csv

``python -m bench.lr_fit prodigy TRAIN.csv --out P.csv`` runs Prodigy (the ``prodigy`` baseline)
on each task-seed of a collect CSV and records its lr estimate ``d`` at fractions of the budget:
independent checks found its online estimate picks the right lr on many unseen tasks where the
calibrated one is wrong; ``report --prodigy-train P.csv`` scores it as a predictor (Adam tasks).

``python -m bench.lr_fit mini ... --fraction 0.1`` runs the grid again on a tenth of the budget
(each run a complete warm-up + cosine: a short proxy of the whole run), and ``python -m
bench.lr_fit report TRAIN.csv [DEV.csv] [--mini-train M --mini-dev M]`` scores each candidate
predictor of log2(best factor): ridge regressions on the policy's features at early decisions and
on the recommender's task meta-features (with its short lr sweep), fitted leave-one-family-out on
the training rows and, fitted on all of them, on the dev rows; and the proxy grid's own best. The
score: the test loss of the grid factor nearest the prediction against the calibrated run's (x1),
and the share of the grid's gain captured where it exceeds 3%. Design measurement (issue 33):
meta-training families and ``dev`` only.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import time
from dataclasses import replace
from multiprocessing import Pool
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from rlhpo.control.batch_rule import BatchRuleConfig
from rlhpo.control.prior import CALIBRATED
from rlhpo.control.probe import ProbeConfig
from rlhpo.evaluation.baselines import Calibrated, Prodigy
from rlhpo.evaluation.runner import ControllerSchedule, run_task
from rlhpo.evaluation.search import LR_GRID_FACTORS, grid_pick, scaled_defaults
from rlhpo.evaluation.worker import TaskSpec
from rlhpo.policy.artifact import load_artifact
from rlhpo.tasks import resolve_families

STARTS = ("sensible", "random")


class _Recording(ControllerSchedule):
    """The prior's run, recording the observation of every decision."""

    def start(self, session, n_intervals):
        super().start(session, n_intervals)
        driver, self.observations = self.controller.driver, []
        act = driver.act

        def recording(obs, deterministic=None):
            self.observations.append([float(v) for v in obs])
            return act(obs, deterministic)

        driver.act = recording


def collect_one(spec: TaskSpec) -> dict:
    torch.set_num_threads(1)
    task = spec.make()
    t0 = time.perf_counter()
    rule = _Recording(load_artifact("rule"))
    run_task(task, rule, seed=0)
    grid = {}
    for f in LR_GRID_FACTORS:
        r = run_task(task, Calibrated(scaled_defaults(CALIBRATED, f)), seed=0)
        grid[f"{f:g}"] = (r.final_val_loss, r.test_loss)
    return dict(family=spec.family, task=task.name, task_seed=spec.seed, start=spec.start, optimizer=task.optimizer,
                grid=json.dumps(grid), observations=json.dumps(rule.observations), seconds=round(time.perf_counter() - t0, 1))


def mini_one(args: tuple) -> dict:
    """The grid again on a fraction of the budget, each run a complete warm-up + cosine (a short
    proxy of the whole run: no short-horizon bias from a schedule cut short)."""
    spec, fraction = args
    torch.set_num_threads(1)
    task = spec.make()
    task = task.with_budget(max(1, int(task.budget_examples * fraction)))
    grid = {}
    for f in LR_GRID_FACTORS:
        r = run_task(task, Calibrated(scaled_defaults(CALIBRATED, f)), seed=0, test_split=False)
        grid[f"{f:g}"] = (r.final_val_loss, r.steps)
    return dict(family=spec.family, task_seed=spec.seed, start=spec.start, fraction=fraction, mini_grid=json.dumps(grid))


PRODIGY_AT: tuple[float, ...] = (0.02, 0.05, 0.1, 0.25, 0.5, 1.0)


class _ProdigyRecording(Prodigy):
    """The Prodigy baseline, recording its step-size estimate ``d`` (its Adam lr at schedule
    factor 1) the first time the run has seen each fraction of :data:`PRODIGY_AT` of its budget."""

    def start(self, session, n_intervals):
        super().start(session, n_intervals)
        self.d: dict[str, float] = {}

    def after_step(self, session):
        super().after_step(session)
        frac = session.examples_seen / session.budget
        for a in PRODIGY_AT:
            if frac >= a - 1e-9 and f"{a:g}" not in self.d:
                self.d[f"{a:g}"] = float(session.optimizer.param_groups[0]["d"])


def prodigy_one(spec: TaskSpec) -> dict:
    """One Prodigy run over the whole budget: its estimate at each fraction and its losses."""
    torch.set_num_threads(1)
    task = spec.make()
    sched = _ProdigyRecording()
    r = run_task(task, sched, seed=0)
    return dict(family=spec.family, task_seed=spec.seed, start=spec.start, d=json.dumps(sched.d),
                final_val_loss=r.final_val_loss, test_loss=r.test_loss)


#: the probes whose outcomes are recorded: the probe rule's branches, wider (x1/4 .. x4), after the
#: 2nd and 5th decisions, 1% of the budget each (8% of the budget on branches), never moving the level
PROBES = ProbeConfig(at=(2, 5), factors=(1.0, 0.25, 0.5, 2.0, 4.0), length=0.01, cooldown=0.5, margin=0.99)


def probes_one(spec: TaskSpec) -> dict:
    """The prior's run with :data:`PROBES`: each branch's score (validation loss at its end)."""
    torch.set_num_threads(1)
    task = spec.make()
    sched = ControllerSchedule(replace(load_artifact("rule"), probe=PROBES))
    run_task(task, sched, seed=0, test_split=False)
    outcomes = [dict(zip((f"{f:g}" for f in o.factors), o.scores)) for o in sched.controller.probe.outcomes]
    return dict(family=spec.family, task_seed=spec.seed, start=spec.start, probes=json.dumps(outcomes))


def noise_one(spec: TaskSpec) -> dict:
    """The prior's run measuring the gradient noise scale (the batch rule's measurement, the batch
    never grown): ``B_noise / B`` at each decision (NaN: nothing measured yet)."""
    torch.set_num_threads(1)
    task = spec.make()
    sched = ControllerSchedule(replace(load_artifact("batch"), batch_rule=BatchRuleConfig(max_factor=1)))
    run_task(task, sched, seed=0, test_split=False)
    ratios = [h.get("noise_scale", math.nan) / h["batch_size"] if h.get("batch_size") else math.nan
              for h in sched.controller.history if "action" in h]
    return dict(family=spec.family, task_seed=spec.seed, start=spec.start, noise=json.dumps(ratios))


def collect_noise(args) -> None:
    _write_all(noise_one, _specs_of(args.of), args)


def collect_probes(args) -> None:
    _write_all(probes_one, _specs_of(args.of), args)


def _specs_of(path: str) -> list[TaskSpec]:
    with _open(path) as fh:
        return [TaskSpec(r["family"], int(r["task_seed"]), 1.0, r["start"]) for r in csv.DictReader(fh)]


def collect_prodigy(args) -> None:
    _write_all(prodigy_one, _specs_of(args.of), args)


def _write_all(fn, items: list, args) -> None:
    with Pool(args.workers) as pool, open(args.out, "w", newline="") as out:
        w = None
        for row in pool.imap_unordered(fn, items):
            if w is None:
                w = csv.DictWriter(out, fieldnames=list(row))
                w.writeheader()
            w.writerow(row)
            out.flush()


def collect_mini(args) -> None:
    _write_all(mini_one, [(s, args.fraction) for s in _specs_of(args.of)], args)


def collect(args) -> None:
    specs = [TaskSpec(f, s, 1.0, start) for f in resolve_families(args.families) for s in range(args.seeds) for start in STARTS]
    out = Path(args.out)
    done = set()
    if out.exists():
        with open(out) as fh:
            done = {(r["family"], int(r["task_seed"]), r["start"]) for r in csv.DictReader(fh)}
    todo = [s for s in specs if (s.family, s.seed, s.start) not in done]
    print(f"{len(todo)} task-seeds to run ({len(done)} done)", flush=True)
    with Pool(args.workers) as pool:
        for row in pool.imap_unordered(collect_one, todo):
            new = not out.exists()
            with open(out, "a", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=list(row))
                if new:
                    w.writeheader()
                w.writerow(row)
            print(row["task"], row["start"], row["seconds"], "s", flush=True)


def _open(path: str):
    """A collected CSV, plain or gzip-compressed (the committed copies are ``.csv.gz``)."""
    return gzip.open(path, "rt", newline="") if str(path).endswith(".gz") else open(path, newline="")


def _finite(x: float) -> float:
    return x if math.isfinite(x) else math.inf


def _pick(grid: dict, pred: float, clip: float) -> float:
    pred = float(np.clip(pred, -clip, clip))
    return min(grid, key=lambda f: abs(math.log2(f) - pred))


def score(rows: list[dict], preds: list[float], clip: float) -> dict:
    """Test loss of the grid factor nearest each prediction against the calibrated run's (x1):
    wins and losses by the difference; ratios (median, worst, geometric mean, inf capped at 10x)
    over the task-seeds whose losses are positive (a Gaussian NLL can go negative); the headroom
    and the capture relative to ``|x1's loss|``."""
    ratios, captures, wins, losses = [], [], 0, 0
    for r, p in zip(rows, preds):
        g = r["grid"]
        f = _pick(g, p, clip)
        base, got, best = g[1.0][1], g[f][1], g[r["best"]][1]
        wins += got < base
        losses += got > base
        if base > 0:
            ratios.append(got / base if math.isfinite(got) else math.inf)
        if (base - best) / abs(base) > 0.03:
            captures.append((base - got) / (base - best) if math.isfinite(got) else -math.inf)
    ratios_a = np.array(ratios)
    return dict(n=len(rows), wins=int(wins), losses=int(losses), median=float(np.median(ratios_a)), worst=float(np.max(ratios_a)),
                geomean=float(np.exp(np.mean(np.log(np.minimum(ratios_a[ratios_a > 0], 10.0))))),
                capture=float(np.median(captures)) if captures else float("nan"), n_headroom=len(captures))


def ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    w = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - y.mean()))
    return w, float(y.mean()), mu, sd


def predict(model, x: np.ndarray) -> np.ndarray:
    w, b, mu, sd = model
    return ((x - mu) / sd) @ w + b


# -- the candidates -------------------------------------------------------------------------


def load(path: str) -> list[dict]:
    """One row per task-seed whose calibrated run (x1) has a finite test loss; a start that trains
    the same runs as another (a workload's random start is its sensible one) counts once."""
    rows, seen = [], set()
    with _open(path) as fh:
        for r in csv.DictReader(fh):
            grid = {float(k): (_finite(v[0]), _finite(v[1])) for k, v in json.loads(r["grid"]).items()}
            if not math.isfinite(grid[1.0][1]) or (r["family"], r["task_seed"], r["grid"]) in seen:
                continue
            seen.add((r["family"], r["task_seed"], r["grid"]))
            best = grid_pick({f: v[0] for f, v in grid.items()})
            rows.append(dict(family=r["family"], task_seed=int(r["task_seed"]), start=r["start"], optimizer=r["optimizer"],
                             obs=json.loads(r["observations"]), grid=grid, best=best, y=math.log2(best)))
    return rows


def _obs_at(decisions: tuple[int, ...]):
    def features(r: dict) -> Optional[np.ndarray]:
        obs = r["obs"]
        return np.concatenate([obs[d] for d in decisions]) if len(obs) > max(decisions) else None
    return features


def _meta(r: dict) -> np.ndarray:
    """The recommender's meta-features of the task (data, architecture, budget) and its short lr sweep."""
    from rlhpo.recommend.meta_features import task_meta_features

    m = task_meta_features(TaskSpec(r["family"], r["task_seed"], 1.0, r["start"]).make(), probe=True).as_row()
    x = [math.log10(m["n_train"]), math.log10(m["input_size"]), m["input_kind"] == "int", math.log10(m["n_params"]), m["depth"],
         m["optimizer"] == "sgd", math.log10(max(m["budget_epochs"], 1e-3)), math.log1p(m["n_classes"]),
         math.log10(max(m["probe_grad_norm"], 1e-8)), math.log(max(m["probe_initial_loss"], 1e-8))]
    x += [m[k] for k in sorted(m) if k.startswith("layer_")]
    x += [m[k] if math.isfinite(m[k]) else 5.0 for k in sorted(m) if k.startswith("probe_sweep")]
    return np.array(x, dtype=float)


def _attach_mini(rows: list[dict], path: Optional[str]) -> None:
    if not path:
        return
    minis = _by_task_seed(path, lambda r: {float(k): _finite(v[0]) for k, v in json.loads(r["mini_grid"]).items()})
    for r in rows:
        m = minis.get((r["family"], r["task_seed"], r["start"]))
        if m is not None:
            r["mini"] = math.log2(grid_pick(m))


def _by_task_seed(path: str, value) -> dict:
    """``{(family, task seed, start): value(row)}`` for the rows of a collected CSV."""
    with _open(path) as fh:
        return {(r["family"], int(r["task_seed"]), r["start"]): value(r) for r in csv.DictReader(fh)}


def _attach_prodigy(rows: list[dict], path: Optional[str]) -> None:
    """Prodigy's lr estimate over the calibrated lr, log2, at each recorded fraction of the budget
    (Adam and AdamW tasks: its estimate is an Adam lr), and its own run's test loss."""
    if not path:
        return
    runs = _by_task_seed(path, lambda r: r)
    for r in rows:
        p = runs.get((r["family"], r["task_seed"], r["start"]))
        if p is None:
            continue
        r["prodigy_test"] = _finite(float(p["test_loss"]))
        if r["optimizer"] in ("adam", "adamw"):
            lr = CALIBRATED[r["optimizer"]]["lr"]
            d = {float(a): v for a, v in json.loads(p["d"]).items()}
            r["prodigy"] = {a: math.log2(v / lr) for a, v in d.items()}
            # settled: it grew, and by at most 1.25x from a quarter to half of the run (known only afterwards)
            r["prodigy_settled"] = d.get(0.25, 0) > 1.01e-6 and d.get(0.5, math.inf) <= 1.25 * d[0.25]


def _prodigy_lines(train: list[dict], dev: list[dict], clip: float) -> list[str]:
    lines = []
    for a in (0.1, 1.0):
        tr, dv = [r for r in train if a in r.get("prodigy", {})], [r for r in dev if a in r.get("prodigy", {})]
        if tr or dv:
            lines.append(f"| Prodigy's lr estimate after {a:g} of its run / the calibrated lr (Adam, AdamW; no fit) | "
                         f"{_cells(tr, [r['prodigy'][a] for r in tr], clip)} | {_cells(dv, [r['prodigy'][a] for r in dv], clip)} |")
    tr, dv = [r for r in train if r.get("prodigy_settled")], [r for r in dev if r.get("prodigy_settled")]
    if tr or dv:
        lines.append("| the same after 0.25 of its run, where it had settled (grew at most 1.25x by 0.5; no fit) | "
                     f"{_cells(tr, [r['prodigy'][0.25] for r in tr], clip)} | {_cells(dv, [r['prodigy'][0.25] for r in dv], clip)} |")
    return lines


def _attach_probes(rows: list[dict], path: Optional[str]) -> None:
    """The probes' outcomes (:data:`PROBES`): per probe and challenger factor, its score's relative
    difference from the level's own branch (``(s_f - s_1) / |s_1|``, within [-1, 1]; a failed branch 1),
    and each probe's greedy pick (log2 of the factor with the lowest score)."""
    if not path:
        return
    runs = _by_task_seed(path, lambda r: json.loads(r["probes"]))
    for r in rows:
        outcomes = runs.get((r["family"], r["task_seed"], r["start"]))
        if outcomes is None or len(outcomes) < len(PROBES.at):
            continue
        x, picks = [], []
        for o in outcomes:
            scores = {float(f): _finite(v) for f, v in o.items()}
            one = scores[1.0]
            for f in PROBES.factors[1:]:
                d = (scores[f] - one) / max(abs(one), 1e-12) if math.isfinite(one) and math.isfinite(scores[f]) else 1.0
                x.append(float(np.clip(d, -1.0, 1.0)))
            picks.append(math.log2(grid_pick(scores)))  # the lowest score, ties to the factor nearest 1
        r["probes"], r["probe_picks"] = np.array(x), picks


def _attach_noise(rows: list[dict], path: Optional[str]) -> None:
    """log2 of the gradient noise scale over the batch at decisions 1-5 (0 where not measured)."""
    if not path:
        return
    runs = _by_task_seed(path, lambda r: json.loads(r["noise"]))
    for r in rows:
        ratios = runs.get((r["family"], r["task_seed"], r["start"]))
        if ratios is None or len(ratios) < 5:
            continue
        r["noise"] = np.array([math.log2(v) if isinstance(v, float) and math.isfinite(v) and v > 0 else 0.0 for v in ratios[:5]])


def _noise_lines(train: list[dict], dev: list[dict], clip: float) -> list[str]:
    tr, dv = [r for r in train if "noise" in r], [r for r in dev if "noise" in r]
    if len({r["family"] for r in tr}) < 3:
        return []
    a, b, c, d = _fitted(tr, dv, lambda r: r["noise"], 10.0)
    return [f"| gradient noise scale / batch at decisions 1-5 (the batch rule's measurement), ridge | {_cells(a, b, clip)} | "
            f"{_cells(c, d, clip)} |"]


def _probe_lines(train: list[dict], dev: list[dict], clip: float) -> list[str]:
    tr, dv = [r for r in train if "probes" in r], [r for r in dev if "probes" in r]
    if not (tr or dv):
        return []
    lines = []
    for k, at in enumerate(PROBES.at):
        lines.append(f"| the probe after decision {at}: its branch with the lowest score (no fit) | "
                     f"{_cells(tr, [r['probe_picks'][k] for r in tr], clip)} | {_cells(dv, [r['probe_picks'][k] for r in dv], clip)} |")
    if len({r["family"] for r in tr}) >= 3:
        a, b, c, d = _fitted(tr, dv, lambda r: r["probes"], 10.0)
        lines.append(f"| both probes' scores, ridge (a learned correction of their short-horizon bias) | {_cells(a, b, clip)} | "
                     f"{_cells(c, d, clip)} |")
    return lines


def _prodigy_note(rows: list[dict], name: str) -> str:
    runs = [r for r in rows if "prodigy_test" in r]
    if not runs:
        return ""
    wins = sum(r["prodigy_test"] < r["grid"][1.0][1] for r in runs)
    ratios = [r["prodigy_test"] / r["grid"][1.0][1] for r in runs if r["grid"][1.0][1] > 0]
    est = [v[1.0] for r in runs if 1.0 in (v := r.get("prodigy", {}))]
    return (f" Prodigy's own run ({name}): better than the calibrated run on {wins}/{len(runs)}, median test / x1 "
            f"{np.median(ratios):.3f}; its final estimate is a median x{2 ** np.median(est):.3g} of the calibrated lr.")


def _fitted(train: list[dict], dev: list[dict], features, alpha: float) -> tuple[list, list, list, list]:
    """Leave-one-family-out predictions on ``train`` and, fitted on all of it, on ``dev``."""
    tr = [(r, x) for r in train if (x := features(r)) is not None]
    dv = [(r, x) for r in dev if (x := features(r)) is not None]
    X, y = np.stack([x for _, x in tr]), np.array([r["y"] for r, _ in tr])
    fam = np.array([r["family"] for r, _ in tr])
    pred = np.zeros(len(y))
    for f in np.unique(fam):
        m = fam != f
        pred[~m] = predict(ridge(X[m], y[m], alpha), X[~m])
    dpred = list(predict(ridge(X, y, alpha), np.stack([x for _, x in dv]))) if dv else []
    return [r for r, _ in tr], list(pred), [r for r, _ in dv], dpred


def _cells(rows: list[dict], preds: list[float], clip: float) -> str:
    if len(rows) < 2:  # no correlation without two rows
        return "n/a | n/a | n/a | n/a"
    y, p = np.array([r["y"] for r in rows]), np.array(preds, dtype=float)
    corr = np.corrcoef(p, y)[0, 1] if p.std() > 0 else float("nan")
    s = score(rows, list(p), clip)
    return (f"{corr:.2f} | {s['wins']}/{s['n']} (worse {s['losses']}) | "
            f"{s['geomean']:.3f} (median {s['median']:.3f}, worst {s['worst']:.2f}) | "
            f"{s['capture']:.2f} of {s['n_headroom']}")


def report(args) -> None:
    t0 = time.perf_counter()
    torch.set_num_threads(1)  # the meta-features build each task's model: one thread, as the collection did
    train, dev = load(args.train), load(args.dev) if args.dev else []
    _attach_mini(train, args.mini_train)
    _attach_mini(dev, args.mini_dev)
    _attach_prodigy(train, args.prodigy_train)
    _attach_prodigy(dev, args.prodigy_dev)
    _attach_probes(train, args.probes_train)
    _attach_probes(dev, args.probes_dev)
    _attach_noise(train, args.noise_train)
    _attach_noise(dev, args.noise_dev)
    lines = [
        "| candidate | train (leave one family out): corr | wins vs x1 | test / x1: geometric mean | capture: median | "
        "dev (fitted on train): corr | wins vs x1 | test / x1 | capture |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    cands: list = []
    if len({r["family"] for r in train}) >= 3:  # a leave-one-family-out fit needs families to leave out
        cands = [(f"policy features at decision {d}, ridge", _obs_at((d,)), 10.0) for d in (1, 2, 4)]
        cands += [("policy features at decisions 0-4, ridge", _obs_at((0, 1, 2, 3, 4)), 100.0)]
        meta = {id(r): _meta(r) for r in train + dev}
        cands += [("task meta-features + short lr sweep (the recommender's), ridge", lambda r: meta[id(r)], 10.0)]
    for name, features, alpha in cands:
        tr, tp, dv, dp = _fitted(train, dev, features, alpha)
        lines.append(f"| {name} | {_cells(tr, tp, args.clip)} | {_cells(dv, dp, args.clip)} |")
    mini_tr, mini_dv = [r for r in train if "mini" in r], [r for r in dev if "mini" in r]
    if mini_tr or mini_dv:
        lines.append(f"| best of the same grid on {args.mini_fraction} of the budget (no fit) | "
                     f"{_cells(mini_tr, [r['mini'] for r in mini_tr], args.clip)} | "
                     f"{_cells(mini_dv, [r['mini'] for r in mini_dv], args.clip)} |")
    lines += _prodigy_lines(train, dev, args.clip)
    lines += _probe_lines(train, dev, args.clip)
    lines += _noise_lines(train, dev, args.clip)
    lines.append(f"| the grid's own best (oracle, clipped) | {_cells(train, [r['y'] for r in train], args.clip)} | "
                 f"{_cells(dev, [r['y'] for r in dev], args.clip)} |")
    counts = {f: sum(r["best"] == f for r in train) for f in sorted({r["best"] for r in train})}
    head = (f"lr fit audit, `python -m bench.lr_fit report {' '.join(a for a in (args.train, args.dev) if a)}"
            f"{' --mini-train ' + args.mini_train if args.mini_train else ''}{' --mini-dev ' + args.mini_dev if args.mini_dev else ''}"
            f"{f' --mini-fraction {args.mini_fraction:g}' if args.mini_fraction != 0.1 else ''}"
            f"{' --prodigy-train ' + args.prodigy_train if args.prodigy_train else ''}"
            f"{' --prodigy-dev ' + args.prodigy_dev if args.prodigy_dev else ''}"
            f"{' --probes-train ' + args.probes_train if args.probes_train else ''}"
            f"{' --probes-dev ' + args.probes_dev if args.probes_dev else ''}"
            f"{' --noise-train ' + args.noise_train if args.noise_train else ''}"
            f"{' --noise-dev ' + args.noise_dev if args.noise_dev else ''}`"
            f" ({time.perf_counter() - t0:.0f} s): {len(train)} train task-seeds ({len({r['family'] for r in train})} families), "
            f"{len(dev)} dev. The label: log2 of the grid factor (x1/8 .. x8 of the calibrated lr) with the lowest final "
            f"validation loss; test / x1 is the test loss at the predicted factor over the calibrated run's (x1), "
            f"capture (calibrated - predicted) / (calibrated - grid's best) where the headroom exceeds 3%; "
            f"predictions are clipped to +-{args.clip:g} octaves and rounded to the grid. Train's best factors: "
            + ", ".join(f"x{f:g} {n}" for f, n in counts.items()) + "."
            + _prodigy_note(train, "train") + _prodigy_note(dev, "dev") + "\n\n")
    text = head + "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="the prior's observations and the full-length lr grid, per task-seed")
    c.add_argument("--families", default="meta_train")
    c.add_argument("--seeds", type=int, default=4)
    c.add_argument("--workers", type=int, default=2)
    c.add_argument("--out", required=True)
    m = sub.add_parser("mini", help="the grid on a fraction of the budget, for the task-seeds of a collect CSV")
    m.add_argument("of")
    m.add_argument("--fraction", type=float, default=0.1)
    m.add_argument("--workers", type=int, default=2)
    m.add_argument("--out", required=True)
    pr = sub.add_parser("prodigy", help="Prodigy over the whole budget, its lr estimate at fractions of it, per task-seed of a collect CSV")
    pr.add_argument("of")
    pr.add_argument("--workers", type=int, default=2)
    pr.add_argument("--out", required=True)
    pb = sub.add_parser("probes", help="the prior's run with wide branching probes, their scores, per task-seed of a collect CSV")
    pb.add_argument("of")
    pb.add_argument("--workers", type=int, default=2)
    pb.add_argument("--out", required=True)
    nz = sub.add_parser("noise", help="the prior's run measuring the gradient noise scale, per task-seed of a collect "
                        "CSV")
    nz.add_argument("of")
    nz.add_argument("--workers", type=int, default=2)
    nz.add_argument("--out", required=True)
    r = sub.add_parser("report", help="score every candidate predictor of the best lr factor")
    r.add_argument("train")
    r.add_argument("dev", nargs="?")
    r.add_argument("--mini-train")
    r.add_argument("--mini-dev")
    r.add_argument("--mini-fraction", type=float, default=0.1)
    r.add_argument("--prodigy-train", help="a `prodigy` CSV of the train task-seeds")
    r.add_argument("--prodigy-dev", help="a `prodigy` CSV of the dev task-seeds")
    r.add_argument("--probes-train", help="a `probes` CSV of the train task-seeds")
    r.add_argument("--probes-dev", help="a `probes` CSV of the dev task-seeds")
    r.add_argument("--noise-train", help="a `noise` CSV of the train task-seeds")
    r.add_argument("--noise-dev", help="a `noise` CSV of the dev task-seeds")
    r.add_argument("--clip", type=float, default=2.0, help="largest |log2 factor| a prediction may take (the trust region: 4x)")
    r.add_argument("--out")
    args = p.parse_args()
    commands = {"collect": collect, "mini": collect_mini, "prodigy": collect_prodigy, "probes": collect_probes,
                "noise": collect_noise, "report": report}
    commands[args.cmd](args)


if __name__ == "__main__":
    main()
