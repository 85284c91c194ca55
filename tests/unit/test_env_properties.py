"""Property tests: no action sequence, from any starting hyperparameters, makes the env raise."""

from __future__ import annotations

import numpy as np
from conftest import make_tiny_task
from hypothesis import HealthCheck, example, given, settings
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
# found by CI: the last step's lr (the level times a small cosine factor) sat below the lr bound
@example(action_seq=[[-1.0, 0.75, 0.0], [0.0, 0.0, 0.0]], lr=1.0, batch_size=1, weight_decay=0.0,
         optimizer="sgd", regression=False)
def test_any_action_sequence_never_raises(action_seq, lr, batch_size, weight_decay, optimizer, regression):
    env = rlhpo.make_env(EnvConfig(n_intervals=len(action_seq)))
    task = make_tiny_task(lr, batch_size, weight_decay, optimizer, budget=200, regression=regression)
    obs, info = env.reset(seed=0, options={"task": task})
    assert np.isfinite(obs).all()
    for a in action_seq:
        obs, r, term, trunc, info = env.step(np.asarray(a, dtype=np.float32))
        assert np.isfinite(obs).all() and (np.abs(obs) <= CLIP).all()
        assert np.isfinite(r)
        # the level is clamped to the configured bounds; the lr of a step is the level times the
        # per-step warm-up + cosine factor (in (0, 1]), so it may sit below the bound near the end
        bounds = env.config.actions.lr
        assert bounds.min * (1 - 1e-6) <= info["level"] <= bounds.max * (1 + 1e-6)
        assert 0.0 < info["lr"] <= info["level"] * (1 + 1e-6)
        if term or trunc:
            break
