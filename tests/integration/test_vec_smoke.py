"""CI smoke: the shipped recipe meta-trains under every vector env, through meta-training's own
entry (``rlhpo.train.run``, what ``python -m rlhpo.train`` calls), so none can silently break."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_train_config

from rlhpo.envs import EnvConfig
from rlhpo.policy.artifact import load_artifact
from rlhpo.train import run

pytestmark = pytest.mark.slow  # four short meta-training runs, subprocesses and Ray

KINDS = ("dummy", "subproc", "batched", "ray")
STEPS = 256  # two PPO updates of 2 x 64 environment steps


def smoke_config(kind: str):
    cfg = tiny_train_config(total_timesteps=STEPS, checkpoint_every=STEPS)
    cfg.vec_env.kind, cfg.vec_env.n_envs = kind, 2
    cfg.ppo.n_steps, cfg.ppo.batch_size, cfg.ppo.n_epochs = 64, 64, 2
    if kind == "ray":
        cfg.vec_env.num_cpus_per_env = 0.5
    return cfg


@pytest.fixture(scope="module")
def policies(ray_instance, tmp_path_factory):
    return {kind: run(smoke_config(kind), tmp_path_factory.mktemp(kind)) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_the_shipped_recipe_meta_trains_under_every_vec_env(kind, policies):
    path = policies[kind]
    art = load_artifact(path)
    assert art.spec.timesteps >= STEPS
    recipe = EnvConfig()
    assert (art.spec.base_schedule, art.spec.n_intervals) == (recipe.base_schedule, 5)
    assert art.spec.guard == recipe.guard
    references = list((path.parent / "references").glob("*.json"))
    assert references, "the reference reward trained its reference runs"


def test_the_same_seed_gives_the_same_policy_under_dummy_subproc_and_ray(policies):
    """Their rollouts are the same (tests/integration/test_vec_parity.py), so PPO learns the same
    policy; only DummyVecEnv's float32 reward buffer rounds differently."""
    params = {k: load_artifact(policies[k]).model.state_dict() for k in ("dummy", "subproc", "ray")}
    for kind in ("subproc", "ray"):
        for name, value in params["dummy"].items():
            np.testing.assert_allclose(params[kind][name].numpy(), value.numpy(), rtol=1e-4, atol=1e-6, err_msg=f"{kind}: {name}")
