"""The learned policies by name are runs of the one ``controller`` method: ``controller@<policy>``."""

from __future__ import annotations

import pytest

from rlhpo.errors import ConfigError
from rlhpo.evaluation.config import METHODS, EvaluateConfig, parse_method
from rlhpo.evaluation.worker import Job, TaskSpec, make_schedule


def test_a_method_at_a_policy_is_the_controller_with_that_policy():
    assert parse_method("controller@v2") == ("controller", "v2")
    assert parse_method("controller") == ("controller", None)
    assert parse_method("prior_only") == ("prior_only", None)
    assert parse_method("calibrated@v2") == ("calibrated@v2", None)  # only the controller takes a policy
    assert [m for m in METHODS if "@" in m] == ["controller@v1", "controller@v2", "controller@v3", "controller@v4", "controller@estimate"]


def test_an_old_method_name_is_refused_naming_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"methods: unknown method\(s\) \['controller_v2'\]; allowed: \[.*'controller@v2'"):
        EvaluateConfig(methods=["controller_v2"], families=["dev"]).validate()


@pytest.mark.parametrize("method, n_features, prior", [("controller@v1", 19, "user"), ("controller@v3", 17, "calibrated"),
                                                           ("controller@v4", 17, "calibrated")])
def test_the_named_policy_is_the_one_that_runs(method, n_features, prior):
    job = Job(TaskSpec("digits_mlp", 0, 1.0), method, 0, "main", 20, "cpu", None, policy="rule")
    spec = make_schedule(job).artifact.spec
    assert (len(spec.feature_names), spec.prior) == (n_features, prior)
