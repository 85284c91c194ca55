"""Controller v2's environment: base schedule, reference-relative reward, start mixture, batch floor."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import make_tiny_task

from rlhpo.control.actions import ActionConfig
from rlhpo.control.decision import DecisionPath, step_factor
from rlhpo.control.guard import GuardConfig
from rlhpo.control.prior import calibrated_hparams
from rlhpo.control.spec import FEATURE_NAMES, DecisionSpec
from rlhpo.envs import EnvConfig, HyperparamControlEnv
from rlhpo.envs.reference import Reference, lead
from rlhpo.tasks import Hyperparams


def v2_env(tmp_path=None, **kw) -> HyperparamControlEnv:
    cfg = EnvConfig(
        families=["synthetic_classification"], budget_scale=0.05, n_intervals=6, reward="reference",
        base_schedule="cosine", reference_cache=str(tmp_path) if tmp_path else None, **kw,
    )
    cfg.actions.batch_size.min_start_ratio = 1.0
    return HyperparamControlEnv(cfg)


def episode(env, action, options=None, seed=0):
    _, info = env.reset(seed=seed, options=options or {})
    rewards, infos = [], [info]
    while True:
        _, r, term, trunc, info = env.step(np.full(env.action_space.shape, action, dtype=np.float32))
        rewards.append(r)
        infos.append(info)
        if term or trunc:
            return rewards, infos


def test_base_factor_is_warmup_then_cosine_to_zero_every_step():
    total = 1000  # steps of one unit each
    f = [step_factor("cosine", t, 1, total) for t in range(total)]
    assert f[0] == pytest.approx(0.5 / 50)  # the first step: half a step into a 50-step warm-up, never 0
    assert all(a < b for a, b in zip(f[:49], f[1:50]))  # a smooth linear warm-up over 5% of the budget
    assert max(f) == pytest.approx(1.0, abs=1e-3)
    assert all(a >= b for a, b in zip(f[50:], f[51:]))  # then decays monotonically, step by step
    assert 0 < f[-1] < 1e-5  # to (almost) zero at the last step
    assert all(step_factor("none", t, 1, total) == 1.0 for t in range(total))
    # in examples: a step of a batch of 10 runs at the factor of its midpoint
    assert step_factor("cosine", 0, 10, 1000) == pytest.approx(0.1)


def test_zero_actions_earn_exactly_zero_the_reference_is_the_null_policy(tmp_path):
    env = v2_env(tmp_path)
    rewards, infos = episode(env, 0.0, {"task_seed": 3})
    assert len(rewards) == 5 and all(r == 0.0 for r in rewards)
    lrs = [i["lr"] for i in infos]
    start = calibrated_hparams(env.task.optimizer, env.task.default_hparams).lr  # v3: the calibrated prior
    assert all(i["level"] == start for i in infos)  # the null action: the calibrated level throughout
    assert lrs[0] > lrs[-1] and lrs[-1] < start * 0.1  # the lr of each interval's last step: cosine decay
    assert env.references.computed == 1


def test_the_return_is_the_final_lead_over_the_reference(tmp_path):
    env = v2_env(tmp_path)
    rewards, infos = episode(env, 0.4, {"task_seed": 3})
    assert not any(i["diverged"] for i in infos)
    ref, first, last = env._reference, infos[0], infos[-1]
    assert last["examples"] == ref.examples[-1] == env.task.budget_examples
    expected = lead(ref, last["examples"], last["val_loss"]) - lead(ref, first["examples"], first["val_loss"])
    assert sum(rewards) == pytest.approx(expected, abs=1e-6)
    assert sum(rewards) != 0.0


def test_reference_curves_are_shared_through_the_cache_dir(tmp_path):
    a, b = v2_env(tmp_path), v2_env(tmp_path)
    episode(a, 0.0, {"task_seed": 4})
    episode(b, 0.3, {"task_seed": 4})
    assert a.references.computed == 1 and b.references.computed == 0
    assert len(list(tmp_path.glob("*.json"))) == 1


def test_lead_handles_negative_losses_shift_free():
    up = Reference.of([1.0, 0.2, -0.5, -0.8])
    shifted = Reference.of([v - 5.0 for v in up.curve])
    assert not up.positive and up.scale == pytest.approx(1.8)
    assert lead(up, 3, -1.0) == pytest.approx(lead(shifted, 3, -6.0)) == pytest.approx(0.2 / 1.8)
    assert lead(up, 2, -0.5) == 0.0 and up.at(10) == -0.8  # past the last point: the last point
    pos = Reference.of([2.0, 1.0])
    assert pos.positive and lead(pos, 1, 0.5) == pytest.approx(math.log(2.0))
    lost = Reference.of([1.0, float("nan"), float("inf")])
    assert lost.curve == [1.0, 1.0, 1.0]


def test_start_mixture_gives_sensible_starts_at_the_configured_rate():
    env = HyperparamControlEnv(families=["synthetic_classification"], budget_scale=0.05, n_intervals=4, sensible_fraction=0.5)
    rng = np.random.default_rng(0)
    lrs = [env._sample_task({"task_seed": 1}, rng).default_hparams.lr for _ in range(200)]
    sensible = {1e-3 * f for f in (0.5, 1.0, 2.0)} | {0.05 * f for f in (0.5, 1.0, 2.0)}
    share = np.mean([any(math.isclose(lr, s) for s in sensible) for lr in lrs])
    assert 0.4 < share < 0.6


def test_batch_size_never_goes_below_its_start_with_a_floor():
    cfg = ActionConfig()
    cfg.batch_size.min_start_ratio = 1.0
    d = DecisionPath(DecisionSpec(cfg, 10, GuardConfig(max_lr_ratio=None), prior="user", base_schedule="none"), 1000)
    hp = d.start(Hyperparams(1e-3, 32, 1e-4), True, lambda h: h)
    for _ in range(5):
        hp = d.act(np.array([0.0, -1.0, 0.0]), hp)
        assert hp.batch_size == 32
    hp = d.act(np.array([0.0, 1.0, 0.0]), hp)
    assert hp.batch_size == 64


def test_v1_artifact_still_runs_with_its_own_features():
    """The old policy stays usable (its row in the evaluation): version-1 features, no schedule."""
    import torch

    from rlhpo.controller import Controller
    from rlhpo.policy.artifact import load_artifact

    art = load_artifact("v1")
    assert len(art.spec.feature_names) == 19 and art.spec.base_schedule == "none"
    task = make_tiny_task()
    model = task.model_fn()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    c = Controller(opt, policy=art, total_examples=400, batch_size=16)
    c.begin()
    assert len(c.decision.features.names) == 19


def test_the_shipped_recipe_composes_to_the_v3_recipe():
    from hydra import compose, initialize_config_module

    from rlhpo.cli import to_dataclass
    from rlhpo.metatrain.config import TrainConfig, register_configs

    register_configs()
    with initialize_config_module("rlhpo.conf", version_base="1.3"):
        cfg = to_dataclass(compose("train", overrides=["+experiment=default"]), TrainConfig)
    env = cfg.env
    assert (env.reward, env.base_schedule, env.feature_names, env.sensible_fraction) == ("reference", "cosine", list(FEATURE_NAMES), 0.5)
    assert env.actions.batch_size.min_start_ratio == 1.0 and env.task_seeds == list(range(24))
    assert cfg.total_timesteps == 102400
    assert env.prior == "calibrated" and env.guard.max_lr_ratio == 4.0  # v3: the calibrated prior, the trust region
