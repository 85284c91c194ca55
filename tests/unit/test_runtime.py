"""The lean policy runtime: the plain torch actor acts exactly as SB3's PPO, old artifacts are
converted once, and a broken policy.pt is a clear error."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import warnings
import zipfile

import numpy as np
import pytest
import torch

from rlhpo.errors import ArtifactError
from rlhpo.policy.artifact import PRETRAINED_DIR, load_artifact
from rlhpo.policy.runtime import POLICY_FILE, LeanPolicy


def _observations(n_obs: int, n: int = 2000) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.normal(scale=3.0, size=(n, n_obs))
    x[: n // 10] = rng.uniform(-10, 10, size=(n // 10, n_obs))  # out to the normalisation's clip
    return x.astype(np.float32)


@pytest.mark.parametrize("name", ["default", "v1", "v2", "v4"])
def test_the_shipped_policy_acts_as_sb3_predicts(name):
    from stable_baselines3 import PPO

    art = load_artifact(name)
    assert isinstance(art.model, LeanPolicy) and (art.path / POLICY_FILE).is_file()
    ref = PPO.load(art.path / "model.zip", device="cpu")  # the shipped file: trusted
    x = _observations(len(art.spec.feature_names))
    ours, theirs = art.model.predict(x, deterministic=True)[0], ref.predict(x, deterministic=True)[0]
    assert ours.shape == theirs.shape == (len(x), 3)
    np.testing.assert_array_equal(ours, theirs)
    assert np.abs(theirs).max() == 1.0  # the clipping into the action space is exercised
    torch.manual_seed(7)
    sampled = ref.predict(x, deterministic=False)[0]
    torch.manual_seed(7)
    np.testing.assert_array_equal(art.model.predict(x, deterministic=False)[0], sampled)


def test_an_old_artifact_is_converted_once(tmp_path):
    old = tmp_path / "old"
    shutil.copytree(PRETRAINED_DIR / "default", old, ignore=shutil.ignore_patterns(POLICY_FILE))
    art = load_artifact(old)
    assert (old / POLICY_FILE).is_file()  # written beside model.zip
    shipped = load_artifact("default").model.state_dict()
    for k, v in art.model.state_dict().items():
        assert torch.equal(v, shipped[k]), k
    (old / "model.zip").write_bytes(b"gone")  # the next load reads policy.pt only
    again = load_artifact(old)
    x = _observations(len(art.spec.feature_names), 50)
    np.testing.assert_array_equal(again.model.predict(x)[0], art.model.predict(x)[0])


def _foreign_pickle() -> bytes:
    buf = io.BytesIO()
    torch.save({"x": os.system}, buf)  # a global the tensors-only unpickler refuses
    return buf.getvalue()


def _assert_one_safe_line(message: str) -> None:
    assert "\n" not in message, message
    assert "weights_only" not in message and "arbitrary code" not in message, message  # torch's unsafe advice


@pytest.mark.parametrize("corrupt", [
    lambda good: good[: len(good) // 2],  # truncated
    lambda good: bytes(range(256)) * 8,  # garbage
    lambda good: pickle.dumps({"a": 1}),  # a pickle, not a torch file
    lambda good: _foreign_pickle(),  # a torch file with code in it
], ids=["truncated", "garbage", "plain-pickle", "foreign-global"])
def test_a_damaged_policy_file_is_one_line_that_says_how_to_get_a_good_one(tmp_path, corrupt):
    """Issue 32: the error names the damaged file and the way to a good one, in one line, without
    torch's advice to reload with weights_only=False (which would run whatever the file holds)."""
    dst = tmp_path / "p"
    shutil.copytree(PRETRAINED_DIR / "default", dst)
    (dst / POLICY_FILE).write_bytes(corrupt((dst / POLICY_FILE).read_bytes()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's note on the pickle protocol
        with pytest.raises(ArtifactError, match=r"policy.pt is damaged") as err:
            load_artifact(dst)
    message = str(err.value)
    _assert_one_safe_line(message)
    assert str(dst) in message and "python -m rlhpo.train" in message
    assert "delete policy.pt to convert model.zip again" in message  # model.zip is there
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained torch traceback


def test_a_damaged_shipped_policy_says_reinstall(tmp_path, monkeypatch):
    from rlhpo.policy import runtime

    dst = tmp_path / "pretrained" / "default"
    shutil.copytree(PRETRAINED_DIR / "default", dst)
    monkeypatch.setattr(runtime, "_PRETRAINED_DIR", tmp_path / "pretrained")  # as if this were the installed copy
    (dst / POLICY_FILE).write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ArtifactError, match=r"policy.pt is damaged") as err:
        load_artifact(dst)
    _assert_one_safe_line(str(err.value))
    assert "pip install --force-reinstall --no-deps rlhpo" in str(err.value)


def test_a_damaged_policy_pth_in_model_zip_is_one_safe_line(tmp_path):
    dst = tmp_path / "p"
    shutil.copytree(PRETRAINED_DIR / "default", dst, ignore=shutil.ignore_patterns(POLICY_FILE))
    with zipfile.ZipFile(dst / "model.zip") as z:
        members = {n: z.read(n) for n in z.namelist()}
    members["policy.pth"] = _foreign_pickle()
    with zipfile.ZipFile(dst / "model.zip", "w") as z:
        for name, content in members.items():
            z.writestr(name, content)
    with pytest.raises(ArtifactError, match=r"model.zip's policy.pth is damaged") as err:
        load_artifact(dst)
    _assert_one_safe_line(str(err.value))
    assert "re-export it with python -m rlhpo.train" in str(err.value)


def test_a_policy_file_of_other_sizes_is_refused(tmp_path):
    dst = tmp_path / "p"
    shutil.copytree(PRETRAINED_DIR / "default", dst)
    torch.save(LeanPolicy(5, [8], 3).to_file(), dst / POLICY_FILE)
    with pytest.raises(ArtifactError, match=r"policy.pt maps 5 observations to 3 actions; the spec says 17 features"):
        load_artifact(dst)


def test_a_lean_artifact_needs_no_model_zip(tmp_path):
    dst = tmp_path / "p"
    shutil.copytree(PRETRAINED_DIR / "default", dst, ignore=shutil.ignore_patterns("model.zip"))
    assert isinstance(load_artifact(dst).model, LeanPolicy)


def test_the_module_is_plain_torch():
    art = load_artifact("default")
    obs = torch.as_tensor(art.normalization(np.zeros(len(art.spec.feature_names))))[None]
    a = art.model(obs)
    assert a.shape == (1, 3) and float(a.abs().max()) <= 1.0
    scripted = torch.jit.trace(art.model, obs)  # a plain module: traceable, exportable
    assert torch.equal(scripted(obs), a)
