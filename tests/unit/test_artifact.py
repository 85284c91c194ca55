"""Policy artifacts: round trip and clear errors for missing, corrupt and incompatible ones."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict

import numpy as np
import pytest

from rlhpo.control.spec import FEATURE_NAMES, FEATURE_NAMES_V1, from_dict
from rlhpo.errors import ArtifactError, ConfigError
from rlhpo.policy.artifact import PRETRAINED_DIR, PolicySpec, load_artifact
from rlhpo.policy.legacy import ARTIFACT_FORMAT, convert_spec
from rlhpo.policy.runtime import POLICY_FILE


@pytest.fixture
def artifact_copy(smoke_policy, tmp_path):
    """The smoke policy as an artifact from before the lean runtime: model.zip, no policy.pt."""
    dst = tmp_path / "policy"
    shutil.copytree(smoke_policy, dst, ignore=shutil.ignore_patterns(POLICY_FILE))
    return dst


def test_round_trip(smoke_policy):
    art = load_artifact(smoke_policy)
    assert art.spec.n_intervals == 5 and art.spec.algorithm == "PPO"
    assert art.normalization.mean.shape == (len(art.spec.feature_names),)


def test_missing(tmp_path):
    with pytest.raises(ArtifactError, match="neither an artifact folder nor a pretrained name"):
        load_artifact(tmp_path / "nope")


def test_missing_file(artifact_copy):
    (artifact_copy / "spec.json").unlink()
    with pytest.raises(ArtifactError, match="spec.json is missing"):
        load_artifact(artifact_copy)


def test_truncated_model(artifact_copy):
    data = (artifact_copy / "model.zip").read_bytes()
    (artifact_copy / "model.zip").write_bytes(data[: len(data) // 3])
    with pytest.raises(ArtifactError, match="model.zip is not a zip archive"):
        load_artifact(artifact_copy)


def test_not_a_zip(artifact_copy):
    (artifact_copy / "model.zip").write_text("import os; os.system('echo pwned')")
    with pytest.raises(ArtifactError, match="not a zip archive"):
        load_artifact(artifact_copy)


def test_other_feature_set(artifact_copy):
    spec = json.loads((artifact_copy / "spec.json").read_text())
    spec["feature_names"] = spec["feature_names"][:-1]
    (artifact_copy / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(ArtifactError, match=r"spec.json.feature_names \(16 features\) is no feature set this rlhpo computes"):
        load_artifact(artifact_copy)


@pytest.mark.parametrize("name", ["v1", "v2", "default"])
def test_format_1_specs_convert_to_the_current_spec(name):
    """The shipped artifacts' spec.json (format 1) load as the current spec, with what format 1's
    missing keys meant (no base schedule, the user's prior, no trust region)."""
    raw = json.loads((PRETRAINED_DIR / name / "spec.json").read_text())
    assert raw["format"] == 1
    spec = from_dict(PolicySpec, convert_spec(raw, name), name)
    assert spec.format == ARTIFACT_FORMAT == 2 and spec.timesteps == raw["timesteps"] and spec.trained_on == raw["trained_on"]
    assert list(spec.actions.enabled) == raw["controls"] and spec.n_intervals == 20
    want = {"v1": (FEATURE_NAMES_V1, "none", "user", None), "v2": (FEATURE_NAMES, "cosine", "user", None),
            "default": (FEATURE_NAMES, "cosine", "calibrated", 4.0)}[name]
    assert (tuple(spec.feature_names), spec.base_schedule, spec.prior, spec.guard.max_lr_ratio) == want
    assert load_artifact(name).spec == spec
    # converted and saved, it loads as it is
    assert from_dict(PolicySpec, convert_spec(asdict(spec), name), name) == spec


@pytest.mark.parametrize(
    "change, message",
    [
        ({"feature_version": 999}, r"trained on feature version 999 .*this rlhpo computes versions \[1, 2\]"),
        ({"format": 7}, r"artifact format 7; this rlhpo reads formats 1 and 2"),
        ({"guard": {"jump": 5.0, "bogus": 1}}, r"spec.json.guard has unknown keys \['bogus'\]; allowed: \['enabled'"),
    ],
)
def test_a_bad_older_spec_is_one_line(change, message):
    raw = {**json.loads((PRETRAINED_DIR / "v2" / "spec.json").read_text()), **change}
    with pytest.raises((ArtifactError, ConfigError), match=message) as e:
        from_dict(PolicySpec, convert_spec(raw, "v2"), "v2: spec.json")
    assert "\n" not in str(e.value)


def test_other_action_set(artifact_copy):
    spec = json.loads((artifact_copy / "spec.json").read_text())
    spec["actions"]["batch_size"]["enabled"] = False
    (artifact_copy / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(ArtifactError, match=r"acts on \(3,\) but the spec enables 2 controls"):
        load_artifact(artifact_copy)


def test_tampered_spec(artifact_copy):
    (artifact_copy / "spec.json").write_text('{"format": 1, "evil": true}')
    with pytest.raises(ArtifactError, match=r"spec.json has unknown keys \['evil'\]"):
        load_artifact(artifact_copy)


def test_bad_normalization(artifact_copy):
    (artifact_copy / "normalization.json").write_text('{"mean": [1, 2], "var": [1, 1]}')
    with pytest.raises(ArtifactError, match=f"normalization.json must hold {len(FEATURE_NAMES)} finite means"):
        load_artifact(artifact_copy)


# -- trust: loading an artifact runs no code from it -----------------------------------------


class _Payload:
    """Unpickling this creates a folder: a stand-in for arbitrary code in a pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.makedirs, (self.marker,))


def _tamper(artifact_dir, marker, key):
    """Put a code-running pickle into model.zip's data JSON under ``key``, as SB3 stores pickles."""
    import base64
    import zipfile

    import cloudpickle

    zpath = artifact_dir / "model.zip"
    with zipfile.ZipFile(zpath) as z:
        members = {n: z.read(n) for n in z.namelist()}
    data = json.loads(members["data"])
    blob = base64.b64encode(cloudpickle.dumps(_Payload(marker))).decode()
    data[key] = {":type:": "<class 'stable_baselines3.common.utils.FloatSchedule'>", ":serialized:": blob}
    members["data"] = json.dumps(data).encode()
    with zipfile.ZipFile(zpath, "w") as z:
        for name, content in members.items():
            z.writestr(name, content)


def test_a_pickle_in_model_zip_is_never_unpickled(artifact_copy, tmp_path):
    from stable_baselines3 import PPO

    marker = tmp_path / "code_ran"
    _tamper(artifact_copy, marker, "lr_schedule")
    PPO.load(artifact_copy / "model.zip", device="cpu")  # SB3's own loader runs it: the payload is real
    assert marker.exists()
    marker.rmdir()
    art = load_artifact(artifact_copy)  # rlhpo's loader reads the weights only
    assert not marker.exists()
    obs = art.normalization(np.zeros(len(art.spec.feature_names)))[None]
    assert art.model.predict(obs, deterministic=True)[0].shape == (1, 3)


def test_an_unknown_pickled_attribute_is_refused(artifact_copy, tmp_path):
    marker = tmp_path / "code_ran"
    _tamper(artifact_copy, marker, "evil")
    with pytest.raises(ArtifactError, match=r"model.zip holds pickled attributes \['evil'\] that rlhpo does not know"):
        load_artifact(artifact_copy)
    assert not marker.exists()


def test_the_smoke_policy_has_a_lean_copy_that_acts_as_sb3(smoke_policy):
    from stable_baselines3 import PPO

    assert (smoke_policy / POLICY_FILE).is_file()  # save_artifact writes it
    art = load_artifact(smoke_policy)
    ref = PPO.load(smoke_policy / "model.zip", device="cpu")  # written by this test session: trusted
    x = np.random.default_rng(0).normal(size=(256, len(art.spec.feature_names))).astype(np.float32)
    np.testing.assert_array_equal(art.model.predict(x, deterministic=True)[0], ref.predict(x, deterministic=True)[0])


def test_a_spec_with_unknown_keys_is_one_line_naming_them_and_what_is_allowed(tmp_path):
    import json
    import shutil

    from rlhpo.errors import ArtifactError
    from rlhpo.policy.artifact import PRETRAINED_DIR, load_artifact

    folder = tmp_path / "policy"
    shutil.copytree(PRETRAINED_DIR / "default", folder)
    spec = json.loads((folder / "spec.json").read_text())
    (folder / "spec.json").write_text(json.dumps({**spec, "decision_spec_v9": {}}))
    with pytest.raises(ArtifactError) as e:
        load_artifact(folder)
    message = str(e.value)
    assert "\n" not in message and "unknown keys ['decision_spec_v9']" in message and "allowed: [" in message
