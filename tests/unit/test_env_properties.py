"""Property tests: no action sequence, from any starting hyperparameters, makes the env raise."""

from __future__ import annotations

import numpy as np
from conftest import make_tiny_task
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rlhpo
from rlhpo.control.features import CLIP
from rlhpo.envs import EnvConfig

actions = st.lists(
    st.lists(st.floats(-1.0, 1.0, width=32), min_size=3, max_size=3), min_size=1, max_size=8
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    action_seq=actions,
    lr=st.floats(1e-9, 1e4),
    batch_size=st.integers(1, 10_000),
    weight_decay=st.floats(0.0, 1e3),
    optimizer=st.sampled_from(["sgd", "adam", "adamw"]),
    regression=st.booleans(),
)
def test_any_action_sequence_never_raises(action_seq, lr, batch_size, weight_decay, optimizer, regression):
    env = rlhpo.make_env(EnvConfig(n_intervals=len(action_seq)))
    task = make_tiny_task(lr, batch_size, weight_decay, optimizer, budget=200, regression=regression)
    obs, info = env.reset(seed=0, options={"task": task})
    assert np.isfinite(obs).all()
    for a in action_seq:
        obs, r, term, trunc, info = env.step(np.asarray(a, dtype=np.float32))
        assert np.isfinite(obs).all() and (np.abs(obs) <= CLIP).all()
        assert np.isfinite(r)
        assert env.config.actions.lr.min <= info["lr"] <= env.config.actions.lr.max
        if term or trunc:
            break
