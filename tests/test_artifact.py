"""Policy artifacts: round trip and clear errors for missing, corrupt and incompatible ones."""

from __future__ import annotations

import json
import shutil

import pytest

from rlhpo.artifact import ArtifactError, load_artifact


@pytest.fixture
def artifact_copy(smoke_policy, tmp_path):
    dst = tmp_path / "policy"
    shutil.copytree(smoke_policy, dst)
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


def test_other_feature_version(artifact_copy):
    spec = json.loads((artifact_copy / "spec.json").read_text())
    spec["feature_version"] = 999
    (artifact_copy / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(ArtifactError, match="trained on feature version 999"):
        load_artifact(artifact_copy)


def test_other_action_set(artifact_copy):
    spec = json.loads((artifact_copy / "spec.json").read_text())
    spec["actions"]["batch_size"]["enabled"] = False
    (artifact_copy / "spec.json").write_text(json.dumps(spec))
    with pytest.raises(ArtifactError, match=r"acts on \(3,\) but the spec enables 2 controls"):
        load_artifact(artifact_copy)


def test_tampered_spec(artifact_copy):
    (artifact_copy / "spec.json").write_text('{"format": 1, "evil": true}')
    with pytest.raises(ArtifactError, match="spec.json is not a valid policy spec"):
        load_artifact(artifact_copy)


def test_bad_normalization(artifact_copy):
    (artifact_copy / "normalization.json").write_text('{"mean": [1, 2], "var": [1, 1]}')
    with pytest.raises(ArtifactError, match="normalization.json must hold 19 finite means"):
        load_artifact(artifact_copy)
