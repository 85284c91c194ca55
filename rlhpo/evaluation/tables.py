"""The markdown an evaluation reports, from runs.csv alone: the per-start tables, where the
controller loses, the summary with its explanation, the generated block of the documentation's
evaluation page (``docs/evaluation.md``) and the README's headline table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from rlhpo.evaluation.config import NO_TUNING, REPLAY_SEED_OFFSET, STARTS
from rlhpo.evaluation.frames import HEADROOM_MIN
from rlhpo.evaluation.stats import _main, _methods, _pairs, _quantiles, _ratio, compare, task_median, time_to_result_stats


def _fmt(x: Optional[float], digits: int = 3, inf: str = "never") -> str:
    """A number with ``digits`` decimals; inf is ``inf`` ("never": a target never reached; "inf":
    a ratio to a diverged run), NaN "n/a"."""
    if x is None or math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return inf if x > 0 else "-inf"
    return f"{x:.{digits}f}"


def _ci(t: tuple[float, float, float], digits: int = 2) -> str:
    return f"{_fmt(t[0], digits, 'inf')} [{_fmt(t[1], digits, 'inf')}, {_fmt(t[2], digits, 'inf')}]"


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def method_table(df: pd.DataFrame, start: str) -> str:
    """Every method against the best no-tuning baseline per task-seed, from ``start``."""
    d = _main(df, start)
    rows = []
    for m in _methods(d):
        x = d[d.method == m]
        c = compare(d, m, "best_no_tuning")
        rows.append([
            m,
            str(len(x)),
            _ci(c["ratio"]) if c["n"] else "n/a",
            _ci(c["win"]) if c["n"] else "n/a",
            _fmt(c.get("metric_win", float("nan")), 2),
            _fmt(float(x.wall_s.median()), 1),
            f"{int(x.steps.median()):,}",
            f"{int(x.compute_examples.sum()):,}",
            str(int(x.diverged.sum())),
        ])
    header = [
        "method", "runs", "test loss / best no-tuning: median [95% CI]", "win rate vs best no-tuning [95% CI]",
        "metric win rate", "median wall s", "median steps", "compute (examples)", "diverged",
    ]
    return _markdown(header, rows)


def controller_table(df: pd.DataFrame, start: str) -> str:
    """The controller against each baseline, and the time-to-target distribution."""
    d = _main(df, start)
    if "controller" not in set(d.method):
        return "The controller was not evaluated."
    rows = []
    refs = [m for m in _methods(d) if m not in ("controller", "replay")] + ["best_no_tuning", "oracle_no_tuning"]
    for ref in refs:
        c = compare(d, "controller", ref)
        if not c["n"]:
            continue
        if ref == "oracle_no_tuning":
            rows.append(["oracle: best no-tuning by test loss", f"{c['n_wins']}/{c['n']}", _ci(c["win"]), _ci(c["ratio"]), "", ""])
            continue
        if ref == "best_no_tuning":
            b = d[d.method.isin(NO_TUNING) & (d.method == d.best_no_tuning)]
        else:
            b = d[d.method == ref]
        ttt = b.to_controller_final_val.dropna()
        reach = float(np.isfinite(ttt).mean()) if len(ttt) else float("nan")
        q = _quantiles(ttt)
        rows.append([
            "best no-tuning (by val)" if ref == "best_no_tuning" else ref,
            f"{c['n_wins']}/{c['n']}",
            _ci(c["win"]),
            _ci(c["ratio"]),
            _fmt(reach, 2),
            " / ".join(_fmt(v, 2) for v in q),
        ])
    header = [
        "baseline", "controller wins", "controller win rate [95% CI]", "controller / baseline test loss: median [95% CI]",
        "baseline reaches controller's final val loss", "examples it needs / budget: 25% / 50% / 75%",
    ]
    return _markdown(header, rows)


def family_table(df: pd.DataFrame, start: str) -> str:
    """Per family: the controller against the best no-tuning baseline, and how far the start is
    from Optuna's optimum."""
    d = _main(df, start)
    rows = []
    for fam in sorted(set(d.family)):
        f = d[d.family == fam]
        c = compare(f, "controller", "best_no_tuning") if "controller" in set(f.method) else dict(n=0)
        dist = f[f.method == "constant"].start_lr_log10_vs_optuna.dropna()
        best = f[f.method.isin(NO_TUNING) & (f.method == f.best_no_tuning)].method.value_counts()
        rows.append([
            fam,
            str(f.task.nunique()),
            _fmt(float(c["ratio"][0]), 3, "inf") if c["n"] else "n/a",
            f"{c['n_wins']}/{c['n']}" if c["n"] else "n/a",
            _fmt(float(dist.median()) if len(dist) else float("nan"), 2),
            ", ".join(f"{m} {k}" for m, k in best.items()),
        ])
    header = [
        "family", "tasks", "controller / best no-tuning (median)", "controller wins",
        "median log10(start lr / Optuna lr)", "best no-tuning picked (runs)",
    ]
    return _markdown(header, rows)


def losses_list(df: pd.DataFrame) -> list[str]:
    """Where the controller loses, one plain line each: families and baselines, per start."""
    out: list[str] = []
    for start in [s for s in STARTS if s in set(df.start)]:
        d = _main(df, start)
        if "controller" not in set(d.method):
            continue
        for fam in sorted(set(d.family)):
            c = compare(d[d.family == fam], "controller", "best_no_tuning")
            if c["n"] and (c["ratio"][0] > 1 or c["n_wins"] * 2 < c["n"]):
                out.append(
                    f"- {start} start, {fam}: test loss {_fmt(c['ratio'][0], 2, 'inf')}x the best no-tuning baseline's "
                    f"(median); the controller wins {c['n_wins']} of {c['n']} task-seeds."
                )
        for ref in [m for m in _methods(d) if m not in ("controller", "replay")]:
            c = compare(d, "controller", ref)
            if c["n"] and c["n_wins"] * 2 < c["n"]:
                out.append(
                    f"- {start} start, against {ref}: the controller wins {c['n_wins']} of {c['n']} task-seeds "
                    f"(median test-loss ratio {_fmt(c['ratio'][0], 2, 'inf')})."
                )
        ctrl, const = d[d.method == "controller"], d[d.method == "constant"]
        if len(ctrl) and len(const) and const.wall_s.median() > 0:
            r = ctrl.wall_s.median() / const.wall_s.median()
            if r > 1.1:
                out.append(f"- {start} start, wall-clock: the controller's median run takes {r:.1f}x constant's "
                           "at the same example budget.")
        n_div = int(ctrl.diverged.sum())
        if n_div:
            out.append(f"- {start} start: {n_div} controller run(s) diverged.")
    return out or ["- nowhere in these runs."]


#: the bar per no-tuning baseline (issue 23): (least share of wins, largest median ratio, largest family median)
BARS: dict[str, tuple[float, float, float]] = {"calibrated": (0.60, 0.98, 1.03), "prodigy": (0.65, 0.97, 1.05)}
DEFAULT_BAR: tuple[float, float, float] = (0.60, 0.97, 1.05)


def targets_table(df: pd.DataFrame, start: str) -> str:
    """The controller against each no-tuning baseline, by the bar a user sets (:data:`BARS`;
    otherwise wins on at least 60% of task-seeds, median test-loss ratio at most 0.97, no family
    median above 1.05)."""
    d = _main(df, start)
    rows = []
    for ref in [m for m in NO_TUNING if m in set(d.method)]:
        c = compare(d, "controller", ref)
        if not c["n"]:
            continue
        share, ratio, family = BARS.get(ref, DEFAULT_BAR)
        fam = {f: compare(d[d.family == f], "controller", ref)["ratio"][0] for f in sorted(set(d.family))}
        worst = max(fam, key=lambda f: fam[f])
        ok = c["n_wins"] >= share * c["n"] and c["ratio"][0] <= ratio and fam[worst] <= family
        rows.append([ref, f"{c['n_wins']}/{c['n']} ({c['n_wins'] / c['n']:.0%})", _fmt(c["ratio"][0], 3),
                     f"{_fmt(fam[worst], 3)} ({worst})", f">= {share:.0%}, <= {ratio:g}, <= {family:g}", "met" if ok else "missed"])
    header = ["baseline", "controller wins", "median ratio", "worst family median", "bar (wins, median, worst family)", "target"]
    return _markdown(header, rows)


def _has(df: pd.DataFrame, column: str) -> bool:
    """Whether ``df`` has ``column`` with a value (runs.csv before evaluation v3 has no time to result)."""
    return column in df.columns and bool(df[column].notna().any())


def _reach(t: dict) -> str:
    return f"{t['reached']}/{t['n']} ({t['reached'] / t['n']:.0%})" if t["n"] else "n/a"


def time_to_result_table(df: pd.DataFrame, start: str) -> str:
    """Per method: how many task-seeds reach the calibrated run's final validation loss, and the
    median speedup (the calibrated run's steps / the method's steps to that loss; 0 if never) in
    steps [95% CI], examples and seconds, and the median steps to the target."""
    d = _main(df, start)
    rows = []
    for m in _methods(d):
        t = time_to_result_stats(d, m)
        if not t["n"]:
            continue
        steps = d[(d.method == m) & d.speedup_steps.notna()].steps_to_target.astype(float)
        rows.append([m, _reach(t), _ci(t["steps"]), _fmt(t["examples"][0], 2, "inf"), _fmt(t["seconds"][0], 2, "inf"),
                     _fmt(float(np.quantile(steps, 0.5, method="lower")), 0)])
    header = ["method", "reach the target", "speedup in steps: median [95% CI]", "speedup in examples (median)",
              "speedup in seconds (median)", "steps to target (median)"]
    return _markdown(header, rows)


def family_speedup_table(df: pd.DataFrame, start: str) -> str:
    """Per method and family: the median speedup in steps [95% CI] (reached / task-seeds)."""
    d = _main(df, start)
    fams = sorted(set(d.family))
    rows = []
    for m in _methods(d):
        cells = []
        for fam in fams:
            t = time_to_result_stats(d[d.family == fam], m)
            cells.append(f"{_ci(t['steps'])} ({t['reached']}/{t['n']})" if t["n"] else "n/a")
        if any(c != "n/a" for c in cells):
            rows.append([m, *cells])
    return _markdown(["method", *fams], rows)


def headroom_lines(df: pd.DataFrame, start: str) -> list[str]:
    """The headroom row (``lr_grid`` against ``calibrated``) and every method's capture of it, on
    the task-seeds whose headroom exceeds :data:`~rlhpo.evaluation.frames.HEADROOM_MIN`."""
    d = _main(df, start)
    h = d[d.method == "lr_grid"].set_index(["task", "seed"]).headroom.astype(float).dropna()
    if not len(h):
        return []
    big = int((h > HEADROOM_MIN).sum())
    grid = d[d.method == "lr_grid"].lr_factor.astype(float).dropna()
    picks = ", ".join(f"x{f:g} {n}" for f, n in sorted(grid.value_counts().items()))
    lines = [
        f"Headroom = 1 - lr_grid / calibrated test loss, lr_grid being the calibrated default at the best of 7 lrs "
        f"(x 1/8 .. 8, picked by validation loss; 7x the compute): median {_ci(task_median(h), 3)} over {len(h)} "
        f"task-seeds; above {HEADROOM_MIN:.0%} on {big}. Factors picked: {picks}.",
        "",
    ]
    rows = []
    for m in _methods(d):
        if m in ("lr_grid", "calibrated", "replay"):
            continue
        c = d[d.method == m].set_index(["task", "seed"]).capture.astype(float).dropna()
        if len(c):
            rows.append([m, str(len(c)), _ci(task_median(c))])
    if rows:
        lines += [
            f"Capture = (calibrated - method) / (calibrated - lr_grid) test loss, on the task-seeds with headroom above "
            f"{HEADROOM_MIN:.0%} (1: all of the grid's gain; 0: none; below 0: worse than the calibrated default):",
            "",
            _markdown(["method", "task-seeds (headroom > 3%)", "capture: median [95% CI]"], rows),
            "",
        ]
    return lines


#: the references of the controller's bar lines (:func:`bar_lines`)
BAR_REFERENCES: tuple[str, ...] = ("prior_only", "calibrated")
#: whose bar lines: the shipped controller, and the learned policy kept by name when it is not the default
BAR_POLICIES: tuple[str, ...] = ("controller", "controller@v3", "controller@v4", "probe_rule", "batch_rule")


def bar_lines(df: pd.DataFrame, start: str) -> list[str]:
    """The controller against ``prior_only`` (its decision path with every action zero: what the
    policy adds) and against the calibrated default, in final test loss and in time to result."""
    d = _main(df, start)
    out = []
    for who in [m for m in BAR_POLICIES if m in set(d.method)]:
        for ref in [r for r in BAR_REFERENCES if r in set(d.method)]:
            c = compare(d, who, ref)
            if not c["n"]:
                continue
            line = (f"- {who} vs {ref}: final test loss, {who} wins {c['n_wins']}/{c['n']} task-seeds, "
                    f"median ratio {_ci(c['ratio'], 3)}")
            a, b = _pairs(d[d.speedup_steps.notna()], who, ref, "steps_to_target")
            if len(a):
                faster = int((a.to_numpy(dtype=float) < b.to_numpy(dtype=float)).sum())
                ta, tb = time_to_result_stats(d, who), time_to_result_stats(d, ref)
                line += (f"; speedup in steps, {who} {_ci(ta['steps'])} against {_ci(tb['steps'])} "
                         f"(medians [95% CI]), first to the target on {faster}/{len(a)}")
            out.append(line + ".")
    return out


def time_to_result_lines(df: pd.DataFrame, start: str) -> list[str]:
    """The time-to-result part of :func:`readme_tables` (empty for runs without it)."""
    if not _has(df, "speedup_steps") or _main(df, start).speedup_steps.notna().sum() == 0:
        return []
    lines = [
        "Time to result: the optimizer steps, examples and training seconds each run needs to first reach the calibrated "
        "default's final validation loss on the same task-seed (checked at each of the run's validations), and the "
        "speedup = the calibrated run's steps (examples, seconds) / those (0: never reached):",
        "",
        time_to_result_table(df, start),
        "",
        "Speedup in steps per family, median [95% CI] (task-seeds that reach the target / task-seeds):",
        "",
        family_speedup_table(df, start),
        "",
    ]
    bars = bar_lines(df, start)
    if bars:
        lines += ["The controller's bar lines, in final loss and in time to result:", "", *bars, ""]
    return lines


def _replay_line(df: pd.DataFrame, start: str) -> str:
    rep = df[(df.group == "replay") & (df.start == start)]
    ctrl = rep[rep.method == "controller"].set_index(["task", "seed"]).test_loss
    replay = rep[rep.method == "replay"].set_index(["task", "seed"]).test_loss
    both = ctrl.index.intersection(replay.index)
    if not len(both):
        return ""
    ratio = pd.Series(_ratio(replay[both], ctrl[both]))
    wins = int((ctrl[both] < replay[both]).sum())
    return (
        f"Schedule-replay ablation ({start} start): the controller's per-interval hyperparameters replayed open-loop on "
        f"fresh seeds (seed + {REPLAY_SEED_OFFSET}): median test-loss ratio replay / closed-loop controller "
        f"{_fmt(float(ratio.median()) if ratio.notna().any() else float('nan'), 3, 'inf')}; the closed loop is better on {wins} of "
        f"{len(both)} task-seeds."
    )


EXPLANATION = (
    "Scoring: every method is scored on its FINAL weights (no method keeps its best-validation "
    "weights), test split read once after training. \"Best no-tuning\" = per task-seed, whichever of "
    + ", ".join(NO_TUNING)
    + " has the lowest final VALIDATION loss (never chosen by test). Ratios are test loss / the reference's "
    "(below 1: better); medians are over tasks of each task's median over seeds; win rate = fraction of "
    "task-seeds with a lower test loss; metric win rate = the same on the task's metric (accuracy, R², "
    "higher is better). 95% intervals: bootstrap over tasks (2000 resamples, seed 0). Optuna and PBT "
    "search their own values and ignore the start: one search per task-seed, listed under both starts; "
    "their wall time and compute include every trial. \"examples it needs / budget\": examples the baseline "
    "needed to first reach the controller's final validation loss, over the budget (quantiles over task-seeds; "
    "never = not within the budget)."
)


def readme_tables(df: pd.DataFrame) -> str:
    """The README's result tables, generated from runs.csv alone (a test checks the README holds
    exactly this text): sensible start first, then random start, per family, where the
    controller loses."""
    text: list[str] = []
    n_tasks = df[df.group == "main"].task.nunique()
    n_seeds = df[df.group == "main"].seed.nunique()
    fams = ", ".join(sorted(set(df.family)))
    for i, start in enumerate([s for s in STARTS if s in set(df.start)]):
        title = "Sensible start (each optimizer's usual default)" if start == "sensible" else "Random start (the families' sampled start)"
        text += [
            f"#### {'Headline: ' if i == 0 else ''}{title}: {n_tasks} tasks ({fams}) x {n_seeds} seeds",
            "",
            method_table(df, start),
            "",
            "The controller against each baseline:",
            "",
            controller_table(df, start),
            "",
            "Against each no-tuning baseline, the bar: against the calibrated default at least 60% wins, median "
            "ratio at most 0.98, no family median above 1.03; against Prodigy 65%, 0.97; against the others 60%, 0.97, 1.05:",
            "",
            targets_table(df, start),
            "",
            "Per family:",
            "",
            family_table(df, start),
            "",
        ]
        text += time_to_result_lines(df, start)
        if _has(df, "headroom"):
            text += headroom_lines(df, start)
        line = _replay_line(df, start)
        if line:
            text += [line, ""]
    text += ["#### Where the controller loses", ""] + losses_list(df)
    return "\n".join(text) + "\n"


def summarize(df: pd.DataFrame, skipped: Optional[dict[str, str]] = None) -> str:
    """The markdown summary: the README's tables (:func:`readme_tables`) with their explanation."""
    if df.empty:
        return "# Evaluation summary\n\nNo runs.\n"
    text = ["# Evaluation summary", "", EXPLANATION, "", readme_tables(df)]
    if skipped:
        text += ["", "Skipped methods:", ""] + [f"- {m}: {why}" for m, why in skipped.items()]
    return "\n".join(text) + "\n"


#: the generated block of the evaluation page (docs/evaluation.md) lies between these lines
README_BEGIN = (
    "<!-- evaluate tables: generated by python -m rlhpo.evaluation.report docs/results/evaluate_runs.csv --page docs/evaluation.md -->"
)
README_END = "<!-- end of evaluate tables -->"
#: the README's headline table lies between these lines
HEADLINE_BEGIN = (
    "<!-- headline table: generated by python -m rlhpo.evaluation.report docs/results/evaluate_runs.csv --readme README.md -->"
)
HEADLINE_END = "<!-- end of headline table -->"
#: the rows of the headline table: what a user would run instead of the controller
HEADLINE_BASELINES = ("constant", "cosine", "calibrated", "schedulefree", "prodigy", "seesaw", "hypergradient", "optuna", "pbt", "lr_grid",
                      "controller@v3", "controller@v4", "controller@rule", "probe_rule", "batch_rule")


def headline_table(df: pd.DataFrame) -> str:
    """The README's one table: the controller against each baseline a user would run instead,
    from both starts: the task-seeds it wins, and the median test-loss ratio controller / baseline
    (below 1: the controller is better) with its 95% interval; with time to result in the runs,
    each method's median speedup in optimizer steps to the calibrated default's final validation
    loss (the controller's own in its row), and under the table the headroom line (``lr_grid``)."""
    starts = [s for s in STARTS if s in set(df.start)]
    ttr = _has(df, "speedup_steps")
    rows = []
    refs = [m for m in HEADLINE_BASELINES if m in set(df.method)] + ["best_no_tuning"]
    for ref in (["controller"] if ttr else []) + refs:
        row = ["best no-tuning (by val)" if ref == "best_no_tuning" else ref]
        for start in starts:
            d = _main(df, start)
            if ref == "controller":
                row += ["-", "-"]
            else:
                c = compare(d, "controller", ref)
                row += [f"{c['n_wins']}/{c['n']}", _ci(c["ratio"])] if c["n"] else ["n/a", "n/a"]
            if ttr:
                t = time_to_result_stats(d, ref) if ref != "best_no_tuning" else {"n": 0}
                row += [f"{_ci(t['steps'])} ({t['reached']}/{t['n']})" if t["n"] else "n/a"]
        rows.append(row)
    header = ["method"]
    for start in starts:
        header += [f"{start} start: controller wins", f"{start} start: test-loss ratio [95% CI]"]
        if ttr:
            header += [f"{start} start: speedup in steps to the calibrated result [95% CI] (reached)"]
    lines = [_markdown(header, rows)]
    for start in starts:
        d = _main(df, start)
        h = d[d.method == "lr_grid"].set_index(["task", "seed"]).headroom.astype(float).dropna() if _has(df, "headroom") else []
        if len(h):
            c = d[d.method == "controller"].set_index(["task", "seed"]).capture.astype(float).dropna()
            lines.append(
                f"\nHeadroom ({start} start): the calibrated default at the best of 7 lrs (x1/8 .. x8, picked by validation, "
                f"7x the compute) beats it by a median {_ci(task_median(h), 3)} of its test loss; above {HEADROOM_MIN:.0%} on "
                f"{int((h > HEADROOM_MIN).sum())} of {len(h)} task-seeds, where the controller captures a median "
                f"{_ci(task_median(c)) if len(c) else 'n/a'} of that gain."
            )
    return "\n".join(lines)


def readme_block(df: pd.DataFrame) -> str:
    """The evaluation page's generated block (every table), markers included."""
    return f"{README_BEGIN}\n\n{readme_tables(df)}\n{README_END}"


#: a page's test-loss table (:func:`loss_block`) lies between these lines
LOSSES_BEGIN = "<!-- test losses: generated by python -m rlhpo.evaluation.report <runs.csv> --page <page> --losses -->"
LOSSES_END = "<!-- end of test losses -->"


def loss_table(df: pd.DataFrame, start: str) -> str:
    """Each task's test loss under every method (median over seeds; the lowest in bold, a
    diverged run "diverged"), and the constant run's wall-clock and optimizer steps."""
    d = _main(df, start)
    methods = _methods(d)
    rows = []
    for task in sorted(set(d.task)):
        t = d[d.task == task]
        losses = {m: float(t[t.method == m].test_loss.median()) for m in methods if m in set(t.method)}
        best = min((v for v in losses.values() if math.isfinite(v)), default=math.nan)
        cells = [f"**{_fmt(losses[m])}**" if losses.get(m) == best else _fmt(losses.get(m, math.nan), 3, "diverged") for m in methods]
        const = t[t.method == "constant"]
        timing = [_fmt(float(const.wall_s.median()), 1), f"{int(const.steps.median()):,}"] if len(const) else ["n/a", "n/a"]
        rows.append([task, *timing, *cells])
    return _markdown(["task", "constant wall s", "steps", *methods], rows)


def loss_block(df: pd.DataFrame) -> str:
    """:func:`loss_table` per start, markers included."""
    parts = [f"Test loss, {start} start:\n\n{loss_table(df, start)}\n" for start in STARTS if start in set(df.start)]
    return f"{LOSSES_BEGIN}\n\n" + "\n".join(parts) + f"\n{LOSSES_END}"


def headline_block(df: pd.DataFrame) -> str:
    """The README's headline table, markers included."""
    return f"{HEADLINE_BEGIN}\n\n{headline_table(df)}\n\n{HEADLINE_END}"


def _replace_block(path: Path, begin: str, end: str, block: str) -> None:
    text = path.read_text()
    if begin not in text or end not in text:
        raise ValueError(f"{path} has no generated block ({begin!r} ... {end!r})")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(head + block + tail)


def update_readme(csv: Path, page: Path, losses: bool = False) -> None:
    """Replace the generated block of the documentation page ``page`` with the tables from ``csv``;
    with ``losses``, its per-task test-loss block (:func:`loss_block`) too."""
    df = pd.read_csv(csv)
    _replace_block(page, README_BEGIN, README_END, readme_block(df))
    if losses:
        _replace_block(page, LOSSES_BEGIN, LOSSES_END, loss_block(df))


def update_headline(csv: Path, readme: Path) -> None:
    """Replace the README's headline table with the one from ``csv``."""
    _replace_block(readme, HEADLINE_BEGIN, HEADLINE_END, headline_block(pd.read_csv(csv)))
