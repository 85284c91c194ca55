"""Hyperparameter-search baselines for the evaluation harness: Optuna TPE, Ray Tune PBT, and the
lr grid around the calibrated default (:func:`lr_grid_search`, the headroom row).

Both search over the controller's three hyperparameters (lr, batch size, weight decay; Optuna
also over the schedule: constant or warm-up + cosine), and neither uses the task's starting
values (a search has no start: one search per task and seed serves every start regime). They score
candidates on the VALIDATION loss only, and report one run's test loss. Their
``compute_examples`` counts every example any trial or population member trained on, so they
can be compared with single-run methods at equal (or stated) compute.

``optuna`` (extra ``search``) and ``ray[tune]`` (extra ``ray``) are imported only when used;
a missing one raises ``ImportError`` from the function that needs it.
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch

from rlhpo.distributed import start_ray
from rlhpo.evaluation.baselines import Calibrated, Constant, Cosine
from rlhpo.evaluation.runner import RunResult, log_history, run_task, train_interval
from rlhpo.tasks import Hyperparams, Task
from rlhpo.tasks.space import SearchSpace  # noqa: F401  (re-exported: the searches' space)
from rlhpo.training.session import TrainingSession

#: trials train on this offset of the evaluation seed, so the search never sees the seed it is
#: reported on (its model initialisation and batch order)
TRIAL_SEED_OFFSET = 10_000
#: the schedules Optuna chooses between (at the searched values)
OPTUNA_SCHEDULES: dict[str, Any] = {"constant": Constant, "cosine": Cosine}
#: what PBT sees for a diverged member: finite, so its quantile arithmetic stays well defined
_DIVERGED_SCORE = 1e30


def _finite_or_inf(x: float) -> float:
    return float(x) if math.isfinite(x) else float("inf")


# -- Optuna ----------------------------------------------------------------------------------


def optuna_search(
    task: Task,
    seed: int = 0,
    n_trials: int = 20,
    n_intervals: int = 20,
    device: str = "cpu",
    space: SearchSpace = SearchSpace(),
    writer: Any = None,
    schedules: Optional[dict[str, Any]] = None,
) -> RunResult:
    """Static hyperparameter search with Optuna's TPE sampler, then one run with the best values.

    Each trial is a full :func:`~rlhpo.evaluation.runner.run_task` with the trial's values held
    constant or under warm-up + cosine (the ``schedule`` searched too), on seed
    ``seed + TRIAL_SEED_OFFSET``, scored on its final validation loss (a diverged trial scores
    ``inf``). The best hyperparameters are then trained on ``seed`` and reported on test.

    :param task: the task to tune
    :param seed: the evaluation seed (also seeds the TPE sampler)
    :param n_trials: number of trials
    :param n_intervals: control intervals per run (only the recorded history depends on it)
    :param device: where to train
    :param space: the search ranges
    :param writer: a TensorBoard ``SummaryWriter`` for the final run
    :param schedules: the schedules searched between, by name (default :data:`OPTUNA_SCHEDULES`;
        the warm start's meta-dataset searches ``{"cosine": Cosine}`` only)
    :returns: the final run, with ``compute_examples`` = all trials' examples + the final run's
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = space.for_task(task)
    schedules = OPTUNA_SCHEDULES if schedules is None else schedules
    spent = 0

    def objective(trial: "optuna.Trial") -> float:
        nonlocal spent
        hp = Hyperparams(
            lr=trial.suggest_float("lr", *space.lr, log=True),
            batch_size=trial.suggest_int("batch_size", *space.batch_size, log=True),
            weight_decay=trial.suggest_float("weight_decay", *space.weight_decay, log=True),
        )
        schedule = schedules[trial.suggest_categorical("schedule", list(schedules))](hp)
        r = run_task(task, schedule, seed=seed + TRIAL_SEED_OFFSET, n_intervals=n_intervals, device=device)
        spent += r.compute_examples
        return _finite_or_inf(r.final_val_loss)

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=n_trials)
    p = study.best_params
    best = Hyperparams(float(p["lr"]), int(p["batch_size"]), float(p["weight_decay"]))
    schedule = schedules[p["schedule"]](best)
    result = run_task(task, schedule, seed=seed, n_intervals=n_intervals, device=device, writer=writer, method="optuna")
    result.compute_examples += spent
    result.info.update(tuned_lr=best.lr, tuned_batch_size=best.batch_size, tuned_weight_decay=best.weight_decay,
                       tuned_schedule=p["schedule"])
    return result


# -- the lr grid around the calibrated default ---------------------------------------------------

#: the lr multipliers of :func:`lr_grid_search`
LR_GRID_FACTORS: tuple[float, ...] = (1 / 8, 1 / 4, 1 / 2, 1.0, 2.0, 4.0, 8.0)


def grid_pick(val_losses: dict[float, float]) -> float:
    """The factor the lr grid picks from ``{factor: final validation loss}``: the lowest loss (a
    diverged or non-finite run scores inf), ties to the factor nearest 1."""
    return min(val_losses, key=lambda f: (_finite_or_inf(val_losses[f]), abs(math.log(f))))


def scaled_defaults(defaults: dict, factor: float) -> dict:
    """The calibrated defaults ``{optimizer kind: {lr, weight_decay}}`` with every lr times ``factor``."""
    return {kind: {**d, "lr": float(d["lr"]) * factor} for kind, d in defaults.items()}


def lr_grid_search(
    task: Task,
    calibrated: dict,
    seed: int = 0,
    n_intervals: int = 20,
    device: str = "cpu",
    writer: Any = None,
    factors: tuple[float, ...] = LR_GRID_FACTORS,
) -> RunResult:
    """The calibrated baseline (:class:`~rlhpo.evaluation.baselines.Calibrated`: warm-up + cosine,
    the calibrated weight decay, the start's batch size) at its lr times each of ``factors``, on
    ``seed``; the run with the lowest final VALIDATION loss is reported (a diverged run scores inf;
    ties go to the factor nearest 1). What a 7-point lr search could have gained over the
    calibrated default: the headroom row.

    :param calibrated: ``{optimizer kind: {lr, weight_decay}}``, as for ``Calibrated``
    :returns: the picked run, with ``compute_examples`` = every grid run's examples and
        ``info``: ``lr_factor``, ``tuned_lr`` and the grid's final validation losses
    """
    if not factors or any(not (f > 0 and math.isfinite(f)) for f in factors):
        raise ValueError(f"lr_grid: factors must be finite numbers > 0, got {factors!r}")
    runs = [
        run_task(task, Calibrated(scaled_defaults(calibrated, f)), seed=seed, n_intervals=n_intervals, device=device,
                 method="lr_grid")
        for f in factors
    ]
    best = factors.index(grid_pick({f: r.final_val_loss for f, r in zip(factors, runs)}))
    result = runs[best]
    result.compute_examples = sum(r.compute_examples for r in runs)
    lr = float(calibrated[task.optimizer]["lr"]) * factors[best]
    result.info.update(lr_factor=factors[best], tuned_lr=lr, grid_val_losses={f"{f:g}": r.final_val_loss for f, r in zip(factors, runs)})
    log_history(writer, "lr_grid", result.history)  # the picked run's scalars, as run_task logs a single run
    return result


# -- Ray Tune PBT ----------------------------------------------------------------------------


def ensure_ray(num_cpus: Optional[int] = None) -> bool:
    """Start a local Ray instance unless one is running, or join the cluster at ``RAY_ADDRESS``
    (whose size is its own: ``num_cpus`` is then ignored); returns whether this call connected."""
    return start_ray(None, num_cpus)


def _save_member(directory: str, session: TrainingSession, meta: dict) -> None:
    torch.save(session.state_dict(), Path(directory) / "session.pt")
    (Path(directory) / "meta.json").write_text(json.dumps(meta))


def _pbt_member(
    config: dict,
    task: Task,
    seed: int,
    n_intervals: int,
    checkpoint_every: int,
    device: str,
    space: SearchSpace,
) -> None:
    """One PBT population member (a Ray Tune function trainable), one report per control interval.

    It checkpoints the training session every ``checkpoint_every`` intervals and at the end; when
    PBT exploits, Ray restarts it from a better member's checkpoint with perturbed ``config``, and
    the member continues from that member's weights, optimizer state, batch order and history.
    """
    from ray import tune

    torch.set_num_threads(1)  # one core (or a share of one) per member
    hp = space.clip(Hyperparams(float(config["lr"]), int(config["batch_size"]), float(config["weight_decay"])))
    session = TrainingSession(task, hparams=hp, device=device, seed=seed)
    history: list[dict] = []
    start, diverged = 0, False
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / "session.pt", weights_only=True)
            meta = json.loads((Path(d) / "meta.json").read_text())
        session.load_state_dict(state)
        session.set_hparams(hp)  # the better member's weights, this member's (explored) hyperparameters
        history, start, diverged = meta["history"], int(meta["interval"]), bool(meta["diverged"])
    seen = session.examples_seen  # compute is counted per process: what this member trained itself
    val_loss = float("inf")
    for k in range(start, n_intervals):
        if not diverged:  # a diverged member only reports, waiting to be replaced by exploitation
            reference = next((h["val_loss"] for h in history if math.isfinite(h["val_loss"])), None)
            record, _, diverged = train_interval(session, k, n_intervals, reference=reference)
            val_loss = record["val_loss"]
            history.append(record)
        last = k == n_intervals - 1
        metrics = {
            "val_loss": _DIVERGED_SCORE if diverged else val_loss,
            "examples_delta": session.examples_seen - seen,
            "interval": k + 1,
        }
        seen = session.examples_seen
        if (k + 1) % checkpoint_every and not last:
            tune.report(metrics)
            continue
        meta = dict(history=history, interval=k + 1, diverged=diverged, examples=session.examples_seen, steps=session.steps)
        if last:  # the test split is read once, after training, for the report only
            test = (float("inf"), float("nan")) if diverged else session.evaluate("test")
            meta.update(test_loss=test[0], test_metric=test[1])
        with tempfile.TemporaryDirectory() as d:
            _save_member(d, session, meta)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def pbt_search(
    task: Task,
    seed: int = 0,
    population: int = 4,
    perturbation_interval: int = 4,
    n_intervals: int = 20,
    device: str = "cpu",
    space: SearchSpace = SearchSpace(),
    num_cpus: Optional[int] = None,
    writer: Any = None,
) -> RunResult:
    """Population Based Training (Ray Tune's ``PopulationBasedTraining``) over lr, batch size and
    weight decay.

    Every member trains ``task`` on ``seed`` for its full budget, reporting the validation loss
    each control interval; every ``perturbation_interval`` intervals the bottom quantile copies a
    top member's checkpoint and perturbs its hyperparameters. The member with the lowest final
    validation loss is reported, with its test loss.

    :param task: the task to train
    :param seed: the evaluation seed (model initialisation and batch order of every member)
    :param population: number of members
    :param perturbation_interval: control intervals between exploit/explore steps
    :param n_intervals: control intervals per run
    :param device: where to train
    :param space: the search ranges (initial values are sampled from it; perturbed values are
        clipped into it)
    :param num_cpus: CPUs for a Ray instance started here (all if None); an already running
        instance is used as it is
    :param writer: a TensorBoard ``SummaryWriter`` for the reported member's trajectory
    :returns: the best member's run, with ``compute_examples`` = examples trained by all members
    """
    if population < 2:
        raise ValueError(f"PBT needs a population of at least 2, got {population}")
    ensure_ray(num_cpus)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0
    counter = _ComputeCounter()
    # PBT's explore step draws from Python's global random module: seed it, restore it after
    random_state = random.getstate()
    random.seed(seed)
    with tempfile.TemporaryDirectory(prefix="rlhpo_pbt_") as storage:
        tuner = _pbt_tuner(task, seed, population, perturbation_interval, n_intervals, device, space, num_cpus, storage, counter)
        try:
            results = tuner.fit()
        finally:
            random.setstate(random_state)
        if results.errors:
            raise RuntimeError(f"PBT on {task.name!r} seed {seed}: a member failed: {results.errors[0]}")
        best = results.get_best_result(metric="val_loss", mode="min", scope="last")
        if best.checkpoint is None:
            raise RuntimeError(f"PBT on {task.name!r} seed {seed}: the best member left no checkpoint")
        with best.checkpoint.as_directory() as d:
            meta = json.loads((Path(d) / "meta.json").read_text())
    return _pbt_result(task, seed, meta, counter.examples, writer)


def _ComputeCounter() -> Any:
    """A Tune callback that sums the examples every member reports having trained."""
    from ray import tune

    class ComputeCounter(tune.Callback):
        def __init__(self) -> None:
            self.examples = 0

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            self.examples += int(result.get("examples_delta", 0))

    return ComputeCounter()


def _pbt_tuner(
    task: Task, seed: int, population: int, perturbation_interval: int, n_intervals: int, device: str,
    space: SearchSpace, num_cpus: Optional[int], storage: str, counter: Any,) -> Any:
    """The ``tune.Tuner`` of :func:`pbt_search`."""
    import ray
    from ray import tune
    from ray.tune.schedulers import PopulationBasedTraining
    from ray.tune.search.basic_variant import BasicVariantGenerator

    space = space.for_task(task)
    domains = {
        "lr": tune.loguniform(*space.lr),
        "batch_size": tune.lograndint(space.batch_size[0], space.batch_size[1] + 1),
        "weight_decay": tune.loguniform(*space.weight_decay),
    }

    # A fractional CPU per member lets the whole population run at once (PBT compares members
    # at similar progress); one torch thread each keeps the machine from oversubscribing.
    cpus = float(ray.available_resources().get("CPU", 1.0) if num_cpus is None else num_cpus)
    per_member = max(0.01, min(1.0, cpus / population))
    trainable = tune.with_resources(
        tune.with_parameters(
            _pbt_member,
            task=task,
            seed=seed,
            n_intervals=n_intervals,
            checkpoint_every=perturbation_interval,
            device=device,
            space=space,
        ),
        {"cpu": per_member},
    )
    scheduler = PopulationBasedTraining(
        time_attr="training_iteration",
        perturbation_interval=perturbation_interval,
        hyperparam_mutations=domains,
    )
    return tune.Tuner(
        trainable,
        param_space=domains,
        tune_config=tune.TuneConfig(
            metric="val_loss",
            mode="min",
            scheduler=scheduler,
            num_samples=population,
            search_alg=BasicVariantGenerator(random_state=seed),
            reuse_actors=True,  # an exploited member restarts in its process: no new worker
        ),
        run_config=tune.RunConfig(
            name=f"pbt_{task.name}_seed{seed}",
            storage_path=storage,
            verbose=0,
            callbacks=[counter],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=None),  # PBT may clone any recent one
        ),
    )


def _pbt_result(task: Task, seed: int, meta: dict, compute_examples: int, writer: Any) -> RunResult:
    """The reported member's run, from the metadata its last checkpoint holds."""
    result = RunResult(task.name, task.family, "pbt", seed, history=meta["history"])
    finite = [h["val_loss"] for h in result.history if math.isfinite(h["val_loss"])]
    result.best_val_loss = min(finite, default=float("inf"))
    result.diverged = bool(meta["diverged"])
    result.final_val_loss = float("inf") if result.diverged else float(result.history[-1]["val_loss"])
    result.test_loss, result.test_metric = float(meta["test_loss"]), float(meta["test_metric"])
    result.examples = int(meta["examples"])
    result.steps = int(meta.get("steps", 0))
    result.compute_examples = compute_examples
    log_history(writer, "pbt", result.history)  # the scalars run_task logs, for the reported member's lineage
    return result
