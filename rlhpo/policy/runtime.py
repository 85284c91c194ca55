"""The lean policy runtime: a meta-trained PPO policy as a plain torch module.

Applying a policy needs its actor only: an MLP from the (normalised) observation to the mean
action, and the log standard deviations for sampling. :class:`LeanPolicy` is that network,
built from ``policy.pt`` (a dict of tensors and plain values, read with
``torch.load(weights_only=True)``), so applying a controller needs torch and numpy, not
stable-baselines3, gymnasium or any of the training stack.

Artifacts written before ``policy.pt`` existed hold only SB3's ``model.zip``: :func:`convert_sb3_zip`
reads the actor's weights straight out of the archive's ``policy.pth`` (tensors only, no SB3),
and :func:`rlhpo.policy.artifact.load_artifact` writes the result next to ``model.zip`` once.
A ``RecurrentPPO`` policy keeps SB3's loader (sb3-contrib, the ``train`` extra).

The module reproduces ``PPO.predict`` exactly: SB3's ``MlpPolicy`` extracts features with a
flatten (a no-op on a vector), runs ``mlp_extractor.policy_net`` (Linear + activation per layer),
``action_net``, and clips the action into the action space ``[-1, 1]``; a sample is
``Normal(mean, exp(log_std)).rsample()``, clipped the same way.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from rlhpo.errors import ArtifactError

#: the file of the lean policy in an artifact folder, and its format
POLICY_FILE = "policy.pt"
RUNTIME_FORMAT = 1
#: SB3's activation classes by the name policy.pt records (PPO's MlpPolicy default: tanh)
ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}
_LAYER = re.compile(r"^mlp_extractor\.policy_net\.(\d+)\.(weight|bias)$")


class LeanPolicy(nn.Module):
    """The actor of a PPO ``MlpPolicy``: ``forward(obs)`` is the deterministic action, clipped to
    ``[-1, 1]``; :meth:`predict` has ``PPO.predict``'s signature, so a
    :class:`~rlhpo.policy.driver.PolicyDriver` runs either."""

    def __init__(self, n_obs: int, hidden: list[int], n_act: int, activation: str = "tanh") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ArtifactError(f"policy activation {activation!r} is unknown; allowed: {', '.join(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        width = n_obs
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation]()]
            width = h
        self.policy_net = nn.Sequential(*layers)
        self.action_net = nn.Linear(width, n_act)
        self.log_std = nn.Parameter(torch.zeros(n_act))
        self.activation, self.n_obs, self.n_act = activation, n_obs, n_act

    def mean_action(self, obs: torch.Tensor) -> torch.Tensor:
        return self.action_net(self.policy_net(obs))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.mean_action(obs).clamp(-1.0, 1.0)

    @torch.no_grad()
    def predict(
        self, observation: np.ndarray, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, None]:
        obs = torch.as_tensor(np.asarray(observation, dtype=np.float32)).reshape(-1, self.n_obs)
        mean = self.mean_action(obs)
        action = mean if deterministic else torch.distributions.Normal(mean, self.log_std.exp().expand_as(mean)).rsample()
        return np.clip(action.numpy(), -1.0, 1.0), None

    def to_file(self) -> dict:
        """What ``policy.pt`` holds: plain values and tensors (``torch.load(weights_only=True)`` reads it)."""
        hidden = [m.out_features for m in self.policy_net if isinstance(m, nn.Linear)]
        return {"format": RUNTIME_FORMAT, "kind": "mlp_gaussian", "activation": self.activation, "n_obs": self.n_obs,
                "hidden": hidden, "n_act": self.n_act, "state_dict": {k: v.detach().clone() for k, v in self.state_dict().items()}}


#: the shipped policies (rlhpo/pretrained/<name>): a damaged one comes back with a reinstall
_PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


def load_error_reason(e: BaseException) -> str:
    """``e`` in one line, without torch's advice to retry with ``weights_only=False``: that runs any
    code the file holds, the one thing not to do with a file that failed to load."""
    text = str(e)
    if "weights_only" in text:  # torch's UnpicklingError: keep the unpickler's own reason only
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        advice = ("weights only load failed", "please file an issue", "check the documentation", "weights_only")
        kept = [line for line in lines if not any(a in line.lower() for a in advice)]
        text = kept[0] if kept else "not a tensors-only torch file"
    text = " ".join(text.split()) or "no detail"
    return f"{type(e).__name__}: {text[:200]}"


def damaged(where: str, path: Path, e: BaseException, member: Optional[str] = None) -> str:
    """The one-line error of a policy file torch cannot read: it is damaged, and how to get a good one."""
    path = Path(path)
    name = f"{path.name}'s {member}" if member else path.name
    if _PRETRAINED_DIR in path.resolve().parents:
        fix = ("reinstall rlhpo to get the shipped file back (pip install --force-reinstall --no-deps rlhpo, "
               f"or git checkout rlhpo/pretrained/{path.parent.name} in a clone)")
    else:
        fix = "copy the artifact again from where it came from, or re-export it with python -m rlhpo.train"
        if member is None and (path.parent / "model.zip").is_file():
            fix = f"delete {path.name} to convert model.zip again, " + fix
    return f"{where}: {name} is damaged and cannot be loaded ({load_error_reason(e)}); {fix}"


def from_file_dict(raw: Any, n_obs: int, n_act: int, where: str) -> LeanPolicy:
    """A :class:`LeanPolicy` from ``policy.pt``'s contents, checked against the spec's sizes."""
    if not (isinstance(raw, dict) and raw.get("format") == RUNTIME_FORMAT and raw.get("kind") == "mlp_gaussian"):
        raise ArtifactError(f"{where}: {POLICY_FILE} is not an rlhpo lean policy of format {RUNTIME_FORMAT}")
    if (raw.get("n_obs"), raw.get("n_act")) != (n_obs, n_act):
        raise ArtifactError(f"{where}: {POLICY_FILE} maps {raw.get('n_obs')} observations to {raw.get('n_act')} actions; "
                            f"the spec says {n_obs} features and {n_act} controls")
    module = LeanPolicy(n_obs, [int(h) for h in raw.get("hidden", [])], n_act, str(raw.get("activation")))
    try:
        module.load_state_dict(raw["state_dict"])
    except (KeyError, RuntimeError) as e:
        raise ArtifactError(f"{where}: {POLICY_FILE}'s weights do not fit its network ({e})") from None
    return module.eval().requires_grad_(False)


def load_lean(path: Path, n_obs: int, n_act: int, where: str) -> LeanPolicy:
    """Read ``policy.pt`` (tensors and plain values only)."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several kinds on a truncated or foreign file
        raise ArtifactError(damaged(where, path, e)) from None
    return from_file_dict(raw, n_obs, n_act, where)


def from_sb3_state_dict(state: dict, n_obs: int, n_act: int, activation: str, where: str) -> LeanPolicy:
    """The actor out of an SB3 ``MlpPolicy`` state dict (``policy.state_dict()`` or ``policy.pth``)."""
    layers = sorted({int(m.group(1)) for k in state if (m := _LAYER.match(k))})
    missing = [k for k in ("action_net.weight", "action_net.bias", "log_std") if k not in state]
    if missing or not layers:
        raise ArtifactError(f"{where}: model.zip's policy.pth is not an SB3 MlpPolicy (no {missing or 'policy_net'})")
    hidden = [int(state[f"mlp_extractor.policy_net.{i}.weight"].shape[0]) for i in layers]
    module = LeanPolicy(n_obs, hidden, n_act, activation)
    ours = {}
    for j, i in enumerate(layers):
        for p in ("weight", "bias"):
            ours[f"policy_net.{2 * j}.{p}"] = state[f"mlp_extractor.policy_net.{i}.{p}"]
    ours |= {k: state[k] for k in ("action_net.weight", "action_net.bias", "log_std")}
    try:
        module.load_state_dict({k: v.detach().to("cpu", torch.float32) for k, v in ours.items()})
    except RuntimeError as e:
        raise ArtifactError(f"{where}: model.zip's actor does not fit {n_obs} features and {n_act} controls ({e})") from None
    return module.eval().requires_grad_(False)


def convert_sb3_zip(zip_path: Path, data: dict, n_obs: int, n_act: int, where: str) -> LeanPolicy:
    """The actor of a PPO ``model.zip`` (already checked by the artifact loader), without SB3:
    ``policy.pth`` is read with ``torch.load(weights_only=True)``; only ``net_arch`` may be
    customised in ``policy_kwargs`` (what rlhpo's meta-training sets)."""
    kwargs = data.get("policy_kwargs") or {}
    if not isinstance(kwargs, dict) or set(kwargs) - {"net_arch"}:
        raise ArtifactError(f"{where}: model.zip's policy_kwargs {sorted(kwargs) if isinstance(kwargs, dict) else kwargs!r} "
                            "go beyond net_arch; rlhpo converts only the MlpPolicy its meta-training writes")
    with zipfile.ZipFile(zip_path) as z:
        blob = z.read("policy.pth")
    try:
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ArtifactError(damaged(where, zip_path, e, member="policy.pth")) from None
    return from_sb3_state_dict(state, n_obs, n_act, "tanh", where)


def save_lean(module: LeanPolicy, path: Path) -> Optional[Path]:
    """Write ``policy.pt`` atomically; None when the folder is read-only (an installed package):
    the conversion then happens again at the next load."""
    import os
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError:
        return None
    with os.fdopen(fd, "wb") as f:
        torch.save(module.to_file(), f)
    os.replace(tmp, path)
    return path


def read_sb3_data(zip_path: Path, where: str) -> dict:
    """The JSON ``data`` member of an SB3 archive (no pickle is touched)."""
    try:
        with zipfile.ZipFile(zip_path) as z:
            data = json.loads(z.read("data"))
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except (KeyError, ValueError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{where}: model.zip's data is not SB3's JSON ({type(e).__name__}: {e})") from None
    return data
