"""The policy artifact: one self-describing folder.

    <artifact>/
      policy.pt            the PPO actor for the lean runtime (rlhpo.policy.runtime): tensors only
      model.zip            stable-baselines3 save of the PPO (or RecurrentPPO) policy
      normalization.json   observation normalisation statistics (plain numbers, no pickle)
      spec.json            the decision spec (rlhpo.control.spec) and the artifact's format,
                           algorithm, training families and timesteps
      config.yaml          the configuration that produced it

Trust: loading an artifact runs no code from it. stable-baselines3 saves some of the algorithm's
attributes (the spaces, the policy class, the schedules, the last observations) as cloudpickle
blobs inside ``model.zip``'s ``data`` JSON and ``PPO.load`` would unpickle them, which can run
arbitrary code. :func:`load_artifact` passes every such attribute to SB3 through
``custom_objects`` instead, built from ``spec.json`` (SB3 then skips their unpickling), refuses
an archive with a pickled attribute it does not know, and leaves SB3 to read the weights with
``torch.load(weights_only=True)`` (tensors only). ``normalization.json`` and ``spec.json`` are
plain JSON. What remains is the attack surface of ``zipfile``, ``json`` and torch's
weights-only unpickler. Meta-training *checkpoints* are different: they are read with full
unpickling (SB3's ``load``, ``VecNormalize.load``, ``torch.load`` of RNG states), so resume
only from run directories you wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np

from rlhpo.control.actions import ActionConfig
from rlhpo.control.batch_rule import BatchRuleConfig
from rlhpo.control.lr_estimate import EstimateConfig
from rlhpo.control.probe import ProbeConfig
from rlhpo.control.spec import DecisionSpec, from_dict
from rlhpo.errors import ArtifactError, ConfigError
from rlhpo.policy.algorithms import ALGORITHMS, algorithm
from rlhpo.policy.legacy import ARTIFACT_FORMAT, convert_spec
from rlhpo.policy.runtime import (
    POLICY_FILE,
    convert_sb3_zip,
    from_sb3_state_dict,
    load_error_reason,
    load_lean,
    read_sb3_data,
    save_lean,
)

PRETRAINED_DIR = Path(__file__).parent.parent / "pretrained"


@dataclass
class PolicySpec(DecisionSpec):
    """A policy's decision spec (:class:`~rlhpo.control.spec.DecisionSpec`, as meta-trained) and the
    artifact's metadata. Saved as ``spec.json``, verbatim."""

    format: int = ARTIFACT_FORMAT
    algorithm: str = "PPO"
    trained_on: list[str] = field(default_factory=list)
    timesteps: int = 0

    def action_config(self) -> ActionConfig:
        """The controls and their bounds."""
        return self.actions

    def validate(self, where: str = "spec") -> "PolicySpec":
        super().validate(where)
        if self.format != ARTIFACT_FORMAT:
            raise ConfigError(f"{where}.format must be {ARTIFACT_FORMAT}, got {self.format!r}")
        if self.algorithm not in ALGORITHMS:
            raise ConfigError(f"{where}: unknown algorithm {self.algorithm!r}; allowed: {', '.join(ALGORITHMS)}")
        return self


@dataclass
class ObsNormalization:
    mean: np.ndarray
    var: np.ndarray
    clip: float = 10.0
    epsilon: float = 1e-8

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        return np.clip((obs - self.mean) / np.sqrt(self.var + self.epsilon), -self.clip, self.clip).astype(np.float32)

    @classmethod
    def identity(cls, n: int) -> "ObsNormalization":
        return cls(np.zeros(n), np.ones(n) - 1e-8, clip=np.inf)


def save_artifact(
    path: str | os.PathLike,
    model: Any,
    spec: PolicySpec,
    obs_rms: Optional[Any] = None,
    clip_obs: float = 10.0,
    epsilon: float = 1e-8,
    config_yaml: str = "",
) -> Path:
    """Write an artifact folder atomically (a temporary folder renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp"))
    try:
        model.save(tmp / "model.zip")
        if spec.algorithm == "PPO":  # the lean runtime's copy of the actor (rlhpo.policy.runtime)
            n_obs, n_act = len(spec.feature_names), len(spec.action_config().enabled)
            save_lean(from_sb3_state_dict(model.policy.state_dict(), n_obs, n_act, _activation(model), str(path)), tmp / POLICY_FILE)
        norm = (
            {"mean": obs_rms.mean.tolist(), "var": obs_rms.var.tolist(), "clip": clip_obs, "epsilon": epsilon}
            if obs_rms is not None
            else None
        )
        (tmp / "normalization.json").write_text(json.dumps(norm))
        (tmp / "spec.json").write_text(json.dumps(asdict(spec), indent=2))
        (tmp / "config.yaml").write_text(config_yaml)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _activation(model: Any) -> str:
    name = getattr(getattr(model.policy, "activation_fn", None), "__name__", "?")
    if name not in ("Tanh", "ReLU"):
        raise ArtifactError(f"the policy's activation {name} has no lean runtime; allowed: Tanh, ReLU")
    return name.lower()


#: pretrained names that are another folder's: ``v3`` is the learned policy of ``rlhpo/pretrained/default``;
#: ``rule`` is that folder's decision path with every action zero (no learned policy acts: :attr:`PolicyArtifact.rule`);
#: ``batch`` the rule with the batch rule, ``probe`` the rule with branching probes, ``estimate`` the
#: batch rule with the lr level from Prodigy's estimate on long runs
ALIASES: dict[str, str] = {"v3": "default", "rule": "default", "probe": "default", "batch": "default", "estimate": "default"}
#: what a Controller, ``rlhpo.apply`` and the evaluation run when no policy is named. A learned policy
#: ships as the default only if it beats its own prior (``rule``) on the dev split; none does yet
#: (docs/evaluation.md): the default is the best rule measured, the rule with the batch rule (``batch``:
#: the same model in fewer optimizer steps where the controller sets the batch size). The lr level
#: from Prodigy's estimate on long runs (``estimate``) won the dev workloads but not the meta-training
#: families' long-enough runs nor the final workloads (docs/evaluation.md): it is opt-in. The plain
#: rule and the learned policies stay available by name
DEFAULT_POLICY = "batch"


def resolve_policy_path(policy: str | os.PathLike) -> Path:
    """A pretrained name (a folder under ``rlhpo/pretrained``, or an alias of one: :data:`ALIASES`)
    or a path to an artifact folder."""
    name = ALIASES.get(str(policy), str(policy))
    if os.sep not in name and "/" not in name and (PRETRAINED_DIR / name).is_dir():
        return PRETRAINED_DIR / name  # a bare name is a pretrained policy first
    p = Path(policy).expanduser()
    if p.exists():
        return p
    names = sorted(d.name for d in PRETRAINED_DIR.iterdir() if d.is_dir()) if PRETRAINED_DIR.exists() else []
    raise ArtifactError(f"policy {str(policy)!r} is neither an artifact folder nor a pretrained name; pretrained: {names}")


def _check_zip(path: Path, where: str) -> None:
    """Reject a file that is not a whole zip archive before any loader touches it."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
            names = set(z.namelist())
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ArtifactError(f"{where}: model.zip is not a zip archive (truncated or not an SB3 save: {e})") from None
    if bad is not None:
        raise ArtifactError(f"{where}: model.zip is corrupt (member {bad!r} fails its checksum)")
    # a truncated archive can still parse as the zip of a member stored inside it
    if not {"data", "policy.pth"} <= names:
        raise ArtifactError(f"{where}: model.zip is not a zip archive of an SB3 save (truncated?): no data/policy.pth")


#: attributes SB3 saves as cloudpickle that rlhpo supplies itself (None: not needed to predict)
_SUPPLIED = (
    "observation_space", "action_space", "policy_class", "lr_schedule", "clip_range", "clip_range_vf",
    "learning_rate", "rollout_buffer_class", "_last_obs", "_last_episode_starts", "_last_original_obs",
    "ep_info_buffer", "ep_success_buffer", "_last_lstm_states",
)
_BOX = "<class 'gymnasium.spaces.box.Box'>"


def _checked_data(zip_path: Path, spec: PolicySpec, where: str) -> dict:
    """The archive's JSON ``data``, checked: every pickled attribute is one rlhpo supplies itself
    (none is ever unpickled), and the saved spaces' shapes (readable as JSON) match the spec."""
    data = read_sb3_data(zip_path, where)
    pickled = sorted(k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v)
    unknown = [k for k in pickled if k not in _SUPPLIED]
    if unknown:
        raise ArtifactError(
            f"{where}: model.zip holds pickled attributes {unknown} that rlhpo does not know; it loads no "
            "pickled code (see the trust note in rlhpo.policy.artifact). Re-save the policy with rlhpo.train"
        )
    n_obs, n_act = len(spec.feature_names), len(spec.action_config().enabled)
    for key, expected in (("observation_space", n_obs), ("action_space", n_act)):
        item = data.get(key)
        if not (isinstance(item, dict) and item.get(":type:") == _BOX):
            raise ArtifactError(f"{where}: model.zip's {key} is not a gymnasium Box")
        shape = item.get("_shape")
        if not (isinstance(shape, list) and all(isinstance(d, int) for d in shape)):
            raise ArtifactError(f"{where}: model.zip's {key} has no readable shape")
        if tuple(shape) != (expected,):
            if key == "action_space":
                raise ArtifactError(f"{where}: the policy acts on {tuple(shape)} but the spec enables {n_act} controls")
            raise ArtifactError(f"{where}: the policy observes {tuple(shape)}, the spec says ({n_obs},)")
    return data


def _pickle_free_objects(data: dict, spec: PolicySpec, policy_class: type) -> dict[str, Any]:
    """``custom_objects`` for SB3's ``load`` that replace every cloudpickled attribute of the
    (checked) archive, so that nothing in it is unpickled."""
    import gymnasium as gym

    from rlhpo.control.features import CLIP

    pickled = sorted(k for k, v in data.items() if isinstance(v, dict) and ":serialized:" in v)
    n_obs, n_act = len(spec.feature_names), len(spec.action_config().enabled)

    def constant(key: str, default: float) -> float:
        """A schedule's constant, from the repr SB3 writes beside the pickle (for inference only)."""
        item = data.get(key)
        if isinstance(item, (int, float)) and not isinstance(item, bool):
            return float(item)
        text = str(item.get("value_schedule", "")) if isinstance(item, dict) else ""
        import re

        m = re.search(r"val=([-+0-9.eE]+)", text)
        return float(m.group(1)) if m else default

    supplied: dict[str, Any] = {
        "observation_space": gym.spaces.Box(-CLIP, CLIP, shape=(n_obs,), dtype=np.float32),
        "action_space": gym.spaces.Box(-1.0, 1.0, shape=(n_act,), dtype=np.float32),
        "policy_class": policy_class,
        "lr_schedule": None,  # SB3 rebuilds it from learning_rate
        "learning_rate": constant("learning_rate", 3e-4),
        "clip_range": constant("clip_range", 0.2),
        "clip_range_vf": None,
        "rollout_buffer_class": None,  # SB3 picks its default buffer
    }
    return {k: supplied.get(k) for k in pickled} | {k: supplied[k] for k in ("observation_space", "action_space", "policy_class")}


@dataclass
class PolicyArtifact:
    """A loaded policy: its network (a :class:`~rlhpo.policy.runtime.LeanPolicy`, or an SB3 model
    for a RecurrentPPO policy and during meta-training: anything with ``predict``), its
    observation normalisation and its spec."""

    model: Any
    normalization: ObsNormalization
    spec: PolicySpec
    path: Path
    #: the rule: the decision path (calibrated prior, per-step warm-up + cosine, trust region, guard)
    #: with every action zero; the network is not consulted (``load_artifact("rule")``)
    rule: bool = False
    #: branching probes (:mod:`rlhpo.control.probe`): at chosen decisions the run tries lr levels
    #: from one snapshot and keeps the best branch (``load_artifact("probe")``: the rule with probes)
    probe: Optional[ProbeConfig] = None
    #: the batch rule (:mod:`rlhpo.control.batch_rule`): the batch doubles where the gradient noise
    #: scale says it costs few examples (``load_artifact("batch")``: the rule with it)
    batch_rule: Optional[BatchRuleConfig] = None
    #: the lr level from Prodigy's estimate over the first stretch of a long run
    #: (:mod:`rlhpo.control.lr_estimate`; ``load_artifact("estimate")``: the batch rule with it)
    lr_estimate: Optional[EstimateConfig] = None

    @property
    def recurrent(self) -> bool:
        return self.spec.algorithm == "RecurrentPPO"

    def with_guard(self, **changes: Any) -> "PolicyArtifact":
        """This policy under another divergence guard, e.g. ``with_guard(max_lr_ratio=10)`` or
        ``with_guard(restore_best=True)`` (see :class:`~rlhpo.control.guard.GuardConfig`); what
        is not named stays the guard it was meta-trained under."""
        return replace(self, spec=replace(self.spec, guard=replace(self.spec.guard, **changes).validate()))


def load_artifact(policy: str | os.PathLike = "default", device: str = "cpu") -> PolicyArtifact:
    """Load and check an artifact; every failure is an :class:`ArtifactError` that says why.

    A PPO policy loads as a :class:`~rlhpo.policy.runtime.LeanPolicy` (torch only) from
    ``policy.pt``; an artifact with only SB3's ``model.zip`` is converted once (``policy.pt`` is
    written beside it when the folder is writable). A RecurrentPPO policy loads through SB3."""
    if str(policy) == "rule":
        return replace(load_artifact("default", device), rule=True)
    if str(policy) == "probe":
        return replace(load_artifact("rule", device), probe=ProbeConfig())
    if str(policy) == "batch":
        return replace(load_artifact("rule", device), batch_rule=BatchRuleConfig())
    if str(policy) == "estimate":
        return replace(load_artifact("batch", device), lr_estimate=EstimateConfig())
    path = resolve_policy_path(policy)
    where = f"policy artifact {str(path)!r}"
    if not path.is_dir():
        raise ArtifactError(f"{where}: expected a folder with {POLICY_FILE} or model.zip, spec.json and normalization.json")
    for name in ("spec.json", "normalization.json"):
        if not (path / name).is_file():
            raise ArtifactError(f"{where}: {name} is missing")
    lean = (path / POLICY_FILE).is_file()
    if not lean and not (path / "model.zip").is_file():
        raise ArtifactError(f"{where}: model.zip is missing (and there is no {POLICY_FILE})")
    try:
        raw = json.loads((path / "spec.json").read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{where}: spec.json is not valid JSON ({e})") from None
    try:
        spec = from_dict(PolicySpec, convert_spec(raw, where), f"{where}: spec.json")
    except ConfigError as e:
        raise ArtifactError(str(e)) from None
    try:
        norm_raw = json.loads((path / "normalization.json").read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{where}: normalization.json is not valid JSON ({e})") from None
    n = len(spec.feature_names)
    if norm_raw is None:
        normalization = ObsNormalization.identity(n)
    else:
        mean, var = np.asarray(norm_raw.get("mean", []), float), np.asarray(norm_raw.get("var", []), float)
        if mean.shape != (n,) or var.shape != (n,) or not (np.isfinite(mean).all() and (var >= 0).all()):
            raise ArtifactError(f"{where}: normalization.json must hold {n} finite means and variances")
        normalization = ObsNormalization(mean, var, float(norm_raw.get("clip", 10.0)), float(norm_raw.get("epsilon", 1e-8)))
    n_act = len(spec.action_config().enabled)
    if spec.algorithm == "PPO" and lean:
        return PolicyArtifact(load_lean(path / POLICY_FILE, n, n_act, where), normalization, spec, path)
    if not (path / "model.zip").is_file():
        raise ArtifactError(f"{where}: a {spec.algorithm} policy needs model.zip")
    _check_zip(path / "model.zip", where)
    data = _checked_data(path / "model.zip", spec, where)
    if spec.algorithm == "PPO":  # an artifact from before policy.pt: converted once, without SB3
        module = convert_sb3_zip(path / "model.zip", data, n, n_act, where)
        save_lean(module, path / POLICY_FILE)
        return PolicyArtifact(module, normalization, spec, path)
    Algo, alias = algorithm(spec.algorithm)
    custom_objects = _pickle_free_objects(data, spec, Algo.policy_aliases[alias])
    try:
        model = Algo.load(path / "model.zip", device=device, custom_objects=custom_objects)
    except Exception as e:  # SB3 raises many kinds on a bad archive
        raise ArtifactError(f"{where}: model.zip could not be loaded by stable-baselines3 ({load_error_reason(e)})") from None
    if model.observation_space.shape != (n,):
        raise ArtifactError(f"{where}: the policy observes {model.observation_space.shape}, the spec says ({n},)")
    if model.action_space.shape != (n_act,):
        raise ArtifactError(
            f"{where}: the policy acts on {model.action_space.shape} but the spec enables {n_act} controls"
        )
    return PolicyArtifact(model, normalization, spec, path)
