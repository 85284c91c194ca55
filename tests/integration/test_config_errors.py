"""Bad configuration raises a clear error naming the field and what is allowed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_tiny_task

import rlhpo
from rlhpo.control.guard import GuardConfig
from rlhpo.envs import EnvConfig
from rlhpo.errors import ConfigError
from rlhpo.tasks import TaskError


@pytest.mark.parametrize(
    "overrides, pattern",
    [
        (dict(budget_examples=-5), r"env\.budget_examples must be null or an integer > 0"),
        (dict(budget_scale=0.0), r"env\.budget_scale must be a finite number > 0"),
        (dict(families=["imagenet"]), r"unknown task family 'imagenet'; allowed: .*digits_mlp"),
        (dict(n_intervals=0), r"env\.n_intervals must be an integer >= 1"),
        (dict(device="tpu"), r"env\.device must be 'cpu', 'cuda'"),
        (dict(guard=GuardConfig(factor=0.5)), r"env\.guard\.factor must be a finite number > 1"),
    ],
)
def test_bad_env_config(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        rlhpo.make_env(**overrides)


def test_inverted_bounds():
    cfg = EnvConfig()
    cfg.actions.lr.min, cfg.actions.lr.max = 1.0, 1e-3
    with pytest.raises(ConfigError, match=r"env\.actions\.lr: min \(1\.0\) must be below max \(0\.001\)"):
        rlhpo.make_env(cfg)


def test_all_controls_off():
    cfg = EnvConfig()
    for c in (cfg.actions.lr, cfg.actions.batch_size, cfg.actions.weight_decay):
        c.enabled = False
    with pytest.raises(ConfigError, match="at least one of lr, batch_size, weight_decay"):
        rlhpo.make_env(cfg)


def test_unknown_override_field():
    with pytest.raises(TypeError, match="unknown EnvConfig field 'budjet'"):
        rlhpo.make_env(budjet=3)


def test_bad_task_is_named():
    task = make_tiny_task(budget=-1)
    with pytest.raises(TaskError, match="task 'tiny-0': budget_examples must be an integer > 0"):
        task.validate()
    task = make_tiny_task(lr=-1.0)
    with pytest.raises(TaskError, match=r"lr must be a finite number > 0"):
        task.validate()


# -- every field of every entry point's configuration ------------------------------------------

import dataclasses  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

from conftest import tiny_train_config  # noqa: E402

from rlhpo.apply import ApplyConfig  # noqa: E402
from rlhpo.evaluate import EvaluateConfig  # noqa: E402
from rlhpo.metatrain.config import TrainConfig  # noqa: E402
from rlhpo.train import run as train  # noqa: E402

NAN, INF = float("nan"), float("inf")

#: (field, bad value, what the error must say): every field of TrainConfig and its groups
TRAIN_ROWS = [
    ("seed", -1, r"seed must be an integer in \[0, 2\*\*32\), got -1"),
    ("seed", 1.5, r"seed must be an integer in \[0, 2\*\*32\), got 1.5"),
    ("total_timesteps", 0, r"total_timesteps must be an integer >= 1, got 0"),
    ("total_timesteps", "many", r"total_timesteps must be an integer >= 1, got 'many'"),
    ("checkpoint_every", 0, r"checkpoint_every must be an integer >= 1"),
    ("keep_checkpoints", True, r"keep_checkpoints must be an integer >= 1, got True"),
    ("eval_every", -1, r"eval_every must be an integer >= 0, got -1"),
    ("resume", 5, r"resume must be null or the path of a run directory, got 5"),
    ("torch_threads", 0, r"torch_threads must be an integer >= 1"),
    ("progress_bar", "yes", r"progress_bar must be true or false, got 'yes'"),
    ("tasks.train_families", ["mnist"], r"tasks.train_families: unknown task family 'mnist'; allowed: \[.*'digits_mlp'"),
    ("tasks.train_families", [], r"tasks.train_families: families must name at least one task family"),
    ("tasks.eval_families", [3], r"tasks.eval_families must be a list of task family names, got \[3\]"),
    ("tasks.budget_scale", 0.0, r"tasks.budget_scale must be a finite number > 0, got 0.0"),
    ("tasks.budget_scale", NAN, r"tasks.budget_scale must be a finite number > 0, got nan"),
    ("tasks.eval_task_seeds", [], r"tasks.eval_task_seeds must list at least one seed"),
    ("tasks.eval_task_seeds", [1, -1], r"tasks.eval_task_seeds must be a list of integers >= 0, got -1"),
    ("env.families", ["digits_cnn"], r"env.families=\['digits_cnn'\] is set from tasks.train_families .* set tasks.train_families"),
    ("env.budget_scale", 0.5, r"env.budget_scale=0.5 is set from tasks.budget_scale .* set tasks.budget_scale"),
    ("env.n_intervals", 0, r"env.n_intervals must be an integer >= 1, got 0"),
    ("env.budget_examples", 0, r"env.budget_examples must be null or an integer > 0, got 0"),
    ("env.budget_examples", 1.5, r"env.budget_examples must be null or an integer > 0, got 1.5"),
    ("env.divergence_penalty", -1.0, r"env.divergence_penalty must be a finite number >= 0"),
    ("env.guard.factor", 1.0, r"env.guard.factor must be a finite number > 1, got 1.0"),
    ("env.guard.lr_cut", 2.0, r"env.guard.lr_cut must be a number in \(0, 1\), got 2.0"),
    ("env.guard.enabled", "on", r"env.guard.enabled must be true or false, got 'on'"),
    ("env.guard.restore_best", 1, r"env.guard.restore_best must be true or false, got 1"),
    ("env.guard.freeze_after", 0, r"env.guard.freeze_after must be an integer >= 1, got 0"),
    ("env.guard.max_lr_ratio", 1.0, r"env.guard.max_lr_ratio must be null or a number > 1, got 1.0"),
    ("env.guard.jump", 0, r"env.guard.jump must be null \(off\) or a number > 0, got 0"),
    ("env.guard.jump_min", -0.1, r"env.guard.jump_min must be a number >= 0, got -0.1"),
    ("env.guard.jump_window", 1, r"env.guard.jump_window must be an integer >= 2, got 1"),
    ("env.guard.min_lost", 1.0, r"env.guard.min_lost must be a number in \[0, 1\), got 1.0"),
    ("env.guard.proxy_factor", 1.0, r"env.guard.proxy_factor must be a finite number > 1, got 1.0"),
    ("env.reward_clip", INF, r"env.reward_clip must be a finite number >= 0, got inf"),
    ("env.ttr_weight", -0.1, r"env.ttr_weight must be a finite number >= 0, got -0.1"),
    ("env.snapshot_fraction", 1.5, r"env.snapshot_fraction must be a number in \[0, 1\], got 1.5"),
    ("env.snapshot_budget_scale", 0.5, r"env.snapshot_budget_scale must be a finite number >= 1, got 0.5"),
    ("env.snapshot_at", [1.0], r"env.snapshot_at must be a non-empty list of fractions in \(0, 1\), got \[1.0\]"),
    ("env.task_seeds", [1, -2], r"env.task_seeds must be a list of integers >= 0, got -2 in \[1, -2\]"),
    ("env.device", "tpu", r"env.device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    ("env.device", "cudax", r"env.device must be 'cpu', 'cuda' or 'cuda:N', got 'cudax'"),
    ("env.actions.lr.enabled", "yes", r"env.actions.lr.enabled must be true or false, got 'yes'"),
    ("env.actions.lr.min", -1e-3, r"env.actions.lr.min must be a finite number > 0, got -0.001"),
    ("env.actions.lr.max", INF, r"env.actions.lr.max must be a finite number > 0, got inf"),
    ("env.actions.lr.max_step_factor", 1.0, r"env.actions.lr.max_step_factor must be > 1, got 1.0"),
    ("env.actions.batch_size.enabled", 1, r"env.actions.batch_size.enabled must be true or false, got 1"),
    ("env.actions.batch_size.min", 0.5, r"env.actions.batch_size.min must be >= 1, got 0.5"),
    ("env.actions.batch_size.max", 2, r"env.actions.batch_size: min \(4\) must be below max \(2\)"),
    ("env.actions.batch_size.max_step_factor", "x", r"env.actions.batch_size.max_step_factor must be a finite number > 0"),
    ("env.actions.weight_decay.enabled", None, r"env.actions.weight_decay.enabled must be true or false, got None"),
    ("env.actions.weight_decay.min", 0.0, r"env.actions.weight_decay.min must be a finite number > 0, got 0.0"),
    ("env.actions.weight_decay.max", 1e-7, r"env.actions.weight_decay: min \(1e-06\) must be below max \(1e-07\)"),
    ("env.actions.weight_decay.max_step_factor", 0.5, r"env.actions.weight_decay.max_step_factor must be > 1"),
    ("env.actions.lr.min_start_ratio", 0.0, r"env.actions.lr.min_start_ratio must be null or a finite number > 0, got 0.0"),
    ("env.actions.batch_size.min_start_ratio", -1.0, r"env.actions.batch_size.min_start_ratio must be null or a finite number > 0"),
    ("env.actions.weight_decay.min_start_ratio", "x", r"env.actions.weight_decay.min_start_ratio must be null or a finite number > 0"),
    ("env.feature_names", ["progress"], r"env.feature_names \(1 features\) is no feature set this rlhpo computes; allowed: "),
    ("env.base_schedule", "linear", r"env.base_schedule must be one of \['none', 'cosine'\], got 'linear'"),
    ("env.reward", "loss", r"env.reward must be one of \['delta', 'reference', 'time_to_result'\], got 'loss'"),
    ("env.prior", "best", r"env.prior must be one of \['user', 'calibrated'\], got 'best'"),
    ("env.prior_table", {"adam": {"lr": -1.0, "weight_decay": 0.0}},
     r"env.prior_table must map optimizer kinds to \{lr: > 0, weight_decay: >= 0\}"),
    ("env.reference_cache", "", r"env.reference_cache must be null or a directory path, got ''"),
    ("env.sensible_fraction", 1.5, r"env.sensible_fraction must be a number in \[0, 1\], got 1.5"),
    ("env.sensible_lr_jitter", [], r"env.sensible_lr_jitter must be a non-empty list of numbers > 0, got \[\]"),
    ("ppo.learning_rate", 0.0, r"ppo.learning_rate must be a finite number > 0, got 0.0"),
    ("ppo.n_steps", 0, r"ppo.n_steps must be an integer >= 1, got 0"),
    ("ppo.batch_size", 1, r"ppo.batch_size must be an integer >= 2, got 1"),
    ("ppo.batch_size", 7, r"ppo.n_steps \* vec_env.n_envs \(32 \* 2 = 64\) must be divisible by ppo.batch_size \(7\)"),
    ("ppo.n_epochs", 0, r"ppo.n_epochs must be an integer >= 1"),
    ("ppo.gamma", 1.5, r"ppo.gamma must be a number in \(0, 1\], got 1.5"),
    ("ppo.gamma", "high", r"ppo.gamma must be a number in \(0, 1\], got 'high'"),
    ("ppo.gae_lambda", 0.0, r"ppo.gae_lambda must be a number in \(0, 1\], got 0.0"),
    ("ppo.clip_range", -0.1, r"ppo.clip_range must be a finite number > 0"),
    ("ppo.ent_coef", -0.01, r"ppo.ent_coef must be a finite number >= 0, got -0.01"),
    ("ppo.vf_coef", NAN, r"ppo.vf_coef must be a finite number >= 0, got nan"),
    ("ppo.max_grad_norm", 0, r"ppo.max_grad_norm must be a finite number > 0"),
    ("ppo.target_kl", 0.0, r"ppo.target_kl must be null or a finite number > 0, got 0.0"),
    ("ppo.normalize_obs", "yes", r"ppo.normalize_obs must be true or false"),
    ("ppo.normalize_reward", 1, r"ppo.normalize_reward must be true or false, got 1"),
    ("policy.name", "transformer", r"policy.name must be 'mlp' or 'recurrent', got 'transformer'"),
    ("policy.net_arch", [64, 0], r"policy.net_arch must be a non-empty list of positive integers, got \[64, 0\]"),
    ("policy.net_arch", [], r"policy.net_arch must be a non-empty list of positive integers"),
    ("policy.lstm_hidden_size", 0, r"policy.lstm_hidden_size must be an integer >= 1, got 0"),
    ("vec_env.kind", "gpu", r"vec_env.kind must be one of \['dummy', 'subproc', 'batched', 'ray'\], got 'gpu'"),
    ("vec_env.n_envs", 0, r"vec_env.n_envs must be an integer >= 1, got 0"),
    ("vec_env.start_method", "thread", r"vec_env.start_method must be one of \[.*'spawn'\] on this platform, got 'thread'"),
    ("vec_env.max_restarts", -1, r"vec_env.max_restarts must be an integer >= 0, got -1"),
    ("vec_env.group_size", 2, r"vec_env.group_size is only used with vec_env.kind=batched, not 'dummy'"),
    ("vec_env.address", "10.0.0.1:6379", r"vec_env.address is only used with vec_env.kind=ray"),
    ("vec_env.num_cpus_per_env", 2.0, r"vec_env.num_cpus_per_env is only used with vec_env.kind=ray"),
    ("vec_env.num_gpus_per_env", 0.5, r"vec_env.num_gpus_per_env is only used with vec_env.kind=ray"),
    ("vec_env.start_timeout_s", 10.0, r"vec_env.start_timeout_s is only used with vec_env.kind=ray"),
]

APPLY_ROWS = [
    ("task", 5, r"task must be a family name \(\[.*\]\), a factory's dotted path or a node with _target_, got 5"),
    ("task_seed", -1, r"task_seed must be an integer >= 0, got -1"),
    ("seed", 1.5, r"seed must be an integer >= 0, got 1.5"),
    ("policy", "", r"policy must be a pretrained name \('default'\) or an artifact folder"),
    ("compare", "yes", r"compare must be true or false"),
    ("n_intervals", 0, r"n_intervals must be null \(the policy's own\) or an integer >= 1, got 0"),
    ("budget_scale", -1.0, r"budget_scale must be a finite number > 0, got -1.0"),
    ("device", "tpu", r"device must be 'cpu', 'cuda' or 'cuda:N', got 'tpu'"),
    ("deterministic", 1, r"deterministic must be true or false, got 1"),
    ("torch_threads", 0, r"torch_threads must be an integer >= 1, got 0"),
]

EVALUATE_ROWS = [
    ("starts", ["good"], r"starts: unknown start regime\(s\) \['good'\]"),
    ("search_seeds", 0, r"search_seeds must be an integer >= 1 or null"),
    ("calibrated", {"adam": {"lr": 1e-3, "weight_decay": 0.0}}, r"calibrated: no default for optimizer\(s\)"),
    ("methods", ["constant", "bayesopt"], r"methods: unknown method\(s\) \['bayesopt'\]; allowed:"),
    ("families", ["imagenet"], r"families: unknown task family 'imagenet'; allowed:"),
    ("n_tasks", 0, r"n_tasks must be an integer >= 1, got 0"),
    ("task_seed_start", -1, r"task_seed_start must be an integer >= 0, got -1"),
    ("seeds", True, r"seeds must be an integer >= 1, got True"),
    ("budget_scale", INF, r"budget_scale must be a finite number > 0, got inf"),
    ("n_intervals", 0, r"n_intervals must be an integer >= 1, got 0"),
    ("policy", "", r"policy must be a pretrained name or an artifact folder"),
    ("optuna_trials", 0, r"optuna_trials must be an integer >= 1, got 0"),
    ("pbt_population", 1, r"pbt_population must be an integer >= 2, got 1"),
    ("pbt_interval", 0, r"pbt_interval must be an integer >= 1, got 0"),
    ("hypergradient_beta", 0.0, r"hypergradient_beta must be a number in \(0, 1\)"),
    ("n_jobs", -2, r"n_jobs must be an integer >= 1, or -1 for one per CPU, got -2"),
    ("launcher", "dask", r"launcher must be one of \['joblib', 'ray'\], got 'dask'"),
    ("device", "cuda:x", r"device must be 'cpu', 'cuda' or 'cuda:N', got 'cuda:x'"),
]


def _leaves(cls, prefix=""):
    """Dotted names of every leaf field of a (nested) config dataclass."""
    out = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            out += _leaves(type(default), f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


@pytest.mark.parametrize("schema, rows", [(TrainConfig, TRAIN_ROWS), (ApplyConfig, APPLY_ROWS), (EvaluateConfig, EVALUATE_ROWS)])
def test_every_field_has_a_bad_input_row(schema, rows):
    missing = sorted(set(_leaves(schema)) - {r[0] for r in rows})
    assert not missing, f"fields of {schema.__name__} without a bad-input row: {missing}"


def _set(obj, dotted, value):
    *path, last = dotted.split(".")
    for name in path:
        obj = getattr(obj, name)
    setattr(obj, last, value)


@pytest.mark.parametrize("field, value, pattern", TRAIN_ROWS, ids=[f"{r[0]}={r[1]!r}" for r in TRAIN_ROWS])
def test_bad_train_field_fails_before_training(field, value, pattern, tmp_path):
    cfg = tiny_train_config()
    _set(cfg, field, value)
    with pytest.raises(ConfigError, match=pattern):
        train(cfg, tmp_path)
    assert not (tmp_path / "tb").exists() and not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("field, value, pattern", APPLY_ROWS, ids=[f"{r[0]}={r[1]!r}" for r in APPLY_ROWS])
def test_bad_apply_field(field, value, pattern):
    cfg = ApplyConfig()
    setattr(cfg, field, value)
    with pytest.raises(ConfigError, match=pattern):
        cfg.validate()


def test_bad_apply_arguments_fail_before_training(tmp_path):
    from rlhpo.apply import apply

    for kwargs, pattern in [
        (dict(n_intervals=0), r"n_intervals must be null \(the policy's own\) or an integer >= 1"),
        (dict(device="tpu"), r"device must be 'cpu', 'cuda' or 'cuda:N'"),
        (dict(seed=-1), r"seed must be an integer >= 0"),
    ]:
        with pytest.raises(ConfigError, match=pattern):
            apply(make_tiny_task(), "default", tb_dir=tmp_path / "tb", **kwargs)
    assert not (tmp_path / "tb").exists()


@pytest.mark.parametrize("field, value, pattern", EVALUATE_ROWS, ids=[f"{r[0]}={r[1]!r}" for r in EVALUATE_ROWS])
def test_bad_evaluate_field_fails_before_any_run(field, value, pattern, tmp_path):
    from rlhpo.evaluate import run as evaluate

    cfg = EvaluateConfig()
    setattr(cfg, field, value)
    with pytest.raises(ConfigError, match=pattern):
        evaluate(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- the same from the command line: one line naming the field and what is allowed, exit code 1,
# no traceback, nothing trained

CLI_ROWS = [
    ("rlhpo.train", "seed=-1", "[rlhpo] error: seed must be an integer in [0, 2**32), got -1"),
    ("rlhpo.train", "ppo.batch_size=1", "[rlhpo] error: ppo.batch_size must be an integer >= 2, got 1"),
    ("rlhpo.train", "env.actions.lr.max_step_factor=1.0", "[rlhpo] error: env.actions.lr.max_step_factor must be > 1, got 1.0"),
    ("rlhpo.train", "vec_env.max_restarts=-1", "[rlhpo] error: vec_env.max_restarts must be an integer >= 0, got -1"),
    # a wrong type is caught by the schema, in Hydra's words: the value, the type and the field
    ("rlhpo.train", "keep_checkpoints=three",
     "Value 'three' of type 'str' could not be converted to Integer\n    full_key: keep_checkpoints"),
    ("rlhpo.apply", "n_intervals=0", "[rlhpo] error: n_intervals must be null (the policy's own) or an integer >= 1, got 0"),
    ("rlhpo.evaluate", "launcher=dask", "[rlhpo] error: launcher must be one of ['joblib', 'ray'], got 'dask'"),
    # a key Hydra's + adds is refused when the schema has no such field (issue 32: it ran silently)
    ("rlhpo.apply", "+comparre=true", "[rlhpo] error: unknown config key comparre (did you mean compare?); allowed keys: task, "),
    ("rlhpo.recommend", "+probbe=true", "[rlhpo] error: unknown config key probbe (did you mean probe?); allowed keys: task, "),
]


@pytest.mark.slow
@pytest.mark.parametrize("module, override, message", CLI_ROWS, ids=[f"{r[0]} {r[1]}" for r in CLI_ROWS])
def test_bad_value_on_the_command_line(module, override, message, tmp_path):
    extra = ["+experiment=smoke"] if module == "rlhpo.train" else []
    proc = subprocess.run(
        [sys.executable, "-m", module, *extra, override, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"},
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert message in proc.stderr, proc.stderr[-2000:]
    if message.startswith("[rlhpo] error:"):
        assert "Traceback" not in proc.stderr
    run_dir = tmp_path / "run"
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "tb").exists()


#: (CLI module, its config package and name, a +key= typo, the one line it must give): issue 32
TYPO_ROWS = [
    ("rlhpo.apply", "rlhpo.conf.apply", "apply", ["+comparre=true"],
     "unknown config key comparre (did you mean compare?); allowed keys: task, task_seed, seed, policy, compare, "),
    ("rlhpo.train", "rlhpo.conf", "train", ["+experiment=smoke", "+seeed=1"],
     "unknown config key seeed (did you mean seed?); allowed keys: seed, total_timesteps, "),
    ("rlhpo.train", "rlhpo.conf", "train", ["+env.n_intervalls=3"],
     "unknown config key env.n_intervalls (did you mean env.n_intervals?); allowed keys of env: actions, n_intervals, guard, "),
    ("rlhpo.evaluate", "rlhpo.conf.evaluate", "evaluate", ["+experiment=workloads", "+mthods=[constant]"],
     "unknown config key mthods (did you mean methods?); allowed keys: methods, families, "),
    ("rlhpo.recommend.__main__", "rlhpo.conf.recommend", "recommend", ["+probbe=true"],
     "unknown config key probbe (did you mean probe?); allowed keys: task, budget_scale, probe, meta_model"),
]


@pytest.mark.parametrize("module, package, name, overrides, message", TYPO_ROWS, ids=[" ".join(r[3]) for r in TYPO_ROWS])
def test_a_plus_key_typo_is_refused_with_the_allowed_keys(module, package, name, overrides, message):
    """Hydra's ``+key=`` adds any key, even to a typed config: every CLI's config goes through
    rlhpo.cli.to_dataclass, which refuses a key its schema lacks, in one line."""
    import importlib

    from hydra import compose, initialize_config_module

    from rlhpo.cli import to_dataclass

    importlib.import_module(module)  # registers the schemas
    with initialize_config_module(package, version_base="1.3"):
        cfg = compose(name, overrides=overrides)
    schema = type(cfg._metadata.object_type())
    with pytest.raises(ConfigError) as err:
        to_dataclass(cfg, schema)
    assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)
    with initialize_config_module(package, version_base="1.3"):  # the same config without the typo is fine
        assert isinstance(to_dataclass(compose(name, overrides=[o for o in overrides if "experiment" in o]), schema), schema)


# -- user task factories and tasks -------------------------------------------------------------


def _tiny(**changes):
    task = make_tiny_task()
    for k, v in changes.items():
        setattr(task, k, v)
    return task


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda: _tiny(train=rlhpo.tasks.Split(make_tiny_task().train.x.numpy(), make_tiny_task().train.y)),
         r"task 'tiny-0': train.x must be a torch.Tensor, got ndarray \(convert with torch.as_tensor\)"),
        (lambda: _tiny(val=rlhpo.tasks.Split(make_tiny_task().val.x[:, :3], make_tiny_task().val.y)),
         r"task 'tiny-0': val.x has examples of shape \(3,\) but train.x has \(4,\)"),
        (lambda: _tiny(test=rlhpo.tasks.Split(make_tiny_task().test.x[:0], make_tiny_task().test.y[:0])),
         r"task 'tiny-0': the test split is empty"),
        (lambda: _tiny(train=rlhpo.tasks.Split(make_tiny_task().train.x * float("nan"), make_tiny_task().train.y)),
         r"task 'tiny-0': train.x has 128 non-finite values \(NaN or inf\)"),
        (lambda: _tiny(loss_fn="cross_entropy"), r"task 'tiny-0': loss_fn must be callable, got str"),
        (lambda: _tiny(metric_fn=None), r"task 'tiny-0': metric_fn must be callable, got NoneType"),
        (lambda: _tiny(default_hparams=(1e-3, 32, 0.0)), r"task 'tiny-0': default_hparams must be an rlhpo.tasks.Hyperparams, got tuple"),
        (lambda: _tiny(default_hparams=rlhpo.tasks.Hyperparams("0.1", 32, 0.0)),
         r"default_hparams.lr must be a finite number > 0, got '0.1'"),
        (lambda: _tiny(default_hparams=rlhpo.tasks.Hyperparams(1e-3, True, 0.0)),
         r"default_hparams.batch_size must be an integer >= 1, got True"),
        (lambda: _tiny(optimizer="lbfgs"), r"task 'tiny-0': optimizer must be one of \('sgd', 'adam', 'adamw'\), got 'lbfgs'"),
        (lambda: _tiny(eval_max_examples=0), r"task 'tiny-0': eval_max_examples must be an integer >= 1, got 0"),
    ],
)
def test_malformed_task_is_named(make, pattern):
    with pytest.raises(TaskError, match=pattern):
        make().validate()


def test_loss_that_is_not_finite_before_any_update_is_named():
    from rlhpo.training.session import TrainingSession

    task = make_tiny_task()
    task.loss_fn = lambda out, y: torch.nn.functional.cross_entropy(out, y) * float("inf")
    with pytest.raises(TaskError, match=r"task 'tiny-0': the loss is inf on the first training batch, before any update"):
        TrainingSession(task).train(32)


def test_loss_that_turns_non_finite_later_is_divergence_not_an_error():
    """After updates, a non-finite loss is the hyperparameters' doing: the run diverges."""
    calls = [0]

    def loss_fn(out, y):  # finite on the first step only
        calls[0] += 1
        loss = torch.nn.functional.cross_entropy(out, y)
        return loss if calls[0] == 1 else loss * float("inf")

    # reward=delta: a reference run would call this stateful loss_fn first and meet inf on its first batch
    env = rlhpo.make_env(n_intervals=3, guard=GuardConfig(enabled=False), reward="delta")
    obs, info = env.reset(seed=0, options={"task": _tiny(loss_fn=loss_fn)})
    assert info["diverged"] and np.isfinite(obs).all()
    obs, r, term, trunc, info = env.step(np.zeros(3, dtype=np.float32))
    assert term and r == 0.0  # diverged in its first interval, before any action: ends at once
    # under the guard (the default) the start comes back and the episode goes on, all finite
    calls[0] = 0
    env = rlhpo.make_env(n_intervals=3, reward="delta")
    obs, info = env.reset(seed=0, options={"task": _tiny(loss_fn=loss_fn)})
    assert info["diverged"] and info["rolled_back"] and np.isfinite(obs).all()
    obs, r, term, trunc, info = env.step(np.zeros(3, dtype=np.float32))
    assert not term and np.isfinite(obs).all() and np.isfinite(r) and info["rolled_back"]


def test_val_split_the_model_cannot_take_is_named():
    from rlhpo.training.session import TrainingSession

    task = make_tiny_task()
    task.eval_max_examples = 1024
    session = TrainingSession(task)
    session.val_split = rlhpo.tasks.Split(torch.randn(8, 5), torch.zeros(8, dtype=torch.long))
    with pytest.raises(TaskError, match=r"task 'tiny-0': the model and loss cannot run on the val split \(inputs \(8, 5\)"):
        session.evaluate("val")


def test_metric_that_is_not_a_number_is_named():
    from rlhpo.training.session import TrainingSession

    task = make_tiny_task()
    task.metric_fn = lambda out, y: out.argmax(-1)  # a tensor of predictions, not a number
    with pytest.raises(TaskError, match=r"task 'tiny-0': metric_fn must return a number for the val split"):
        TrainingSession(task).evaluate("val")


def test_task_factory_that_raises_is_named():
    from rlhpo.apply import build_task

    message = (r"task._target_='conftest.make_tiny_task' could not be called: "
               r"TypeError: make_tiny_task\(\) got an unexpected keyword argument 'budjet'")
    with pytest.raises(ConfigError, match=message):
        build_task({"_target_": "conftest.make_tiny_task", "budjet": 5})
    with pytest.raises(ConfigError, match=r"task._target_='nowhere.make' could not be called"):
        build_task("nowhere.make")
