"""The one place that knows earlier rlhpo versions: their ``spec.json`` and meta-training
``config.yaml`` converted to the current ones at load time, and the settings that are gone.

Artifact format 1 (``rlhpo/pretrained/v1``, ``v2``, ``default``) named its feature set by a
``feature_version``, repeated the enabled controls in ``controls``, and left out what its rlhpo
did not have yet: that meant the base schedule ``none``, the ``user`` prior and no trust region.
"""

from __future__ import annotations

from typing import Any

from rlhpo.control.spec import FEATURE_NAMES, FEATURE_NAMES_V1
from rlhpo.errors import ArtifactError, ConfigError

#: the format this rlhpo writes
ARTIFACT_FORMAT = 2
_FEATURE_VERSIONS = {1: FEATURE_NAMES_V1, 2: FEATURE_NAMES}
#: removed settings, and what replaces each (a command-line override naming one is an error saying so)
REMOVED: dict[str, str] = {
    "device": "set env.device (cpu, cuda, cuda:N): the one setting of where target networks train",
    "env.feature_version": "set env.feature_names: the feature set by name (rlhpo.control.spec.FEATURE_NAMES, "
    "or FEATURE_NAMES_V1 for the first set)",
}


def convert_config(saved: dict) -> dict:
    """An earlier meta-training run's saved ``config.yaml`` (``resume=``) in the current schema:
    ``device`` dropped (``env.device`` holds it) and ``env.feature_version`` as its feature set."""
    out = {k: v for k, v in saved.items() if k != "device"}
    env = dict(out.get("env") or {})
    if "feature_version" in env:
        version = env.pop("feature_version")
        if version not in _FEATURE_VERSIONS:
            raise ConfigError(f"env.feature_version={version!r} in the saved config.yaml; allowed: {sorted(_FEATURE_VERSIONS)}")
        out["env"] = {**env, "feature_names": list(_FEATURE_VERSIONS[version])}
    return out


def convert_spec(raw: Any, where: str) -> Any:
    """A decoded ``spec.json`` in the current format: format 1 converted, the current one as it is."""
    if not isinstance(raw, dict) or raw.get("format") == ARTIFACT_FORMAT:
        return raw
    if raw.get("format") != 1:
        raise ArtifactError(f"{where}: artifact format {raw.get('format')!r}; this rlhpo reads formats 1 and {ARTIFACT_FORMAT}")
    old = {k: v for k, v in raw.items() if k not in ("feature_version", "controls")}  # controls: actions' enabled ones
    version = raw.get("feature_version", 1)
    names = _FEATURE_VERSIONS.get(version)
    if names is None or list(old.get("feature_names", names)) != list(names):
        raise ArtifactError(
            f"{where}: the policy was trained on feature version {version} ({len(old.get('feature_names', []))} features); "
            f"this rlhpo computes versions {sorted(_FEATURE_VERSIONS)}. Re-train it, or install the rlhpo that made it."
        )
    guard = old.get("guard", {})
    return {
        **old, "format": ARTIFACT_FORMAT, "feature_names": list(names), "base_schedule": old.get("base_schedule", "none"),
        "prior": old.get("prior", "user"), "guard": {"max_lr_ratio": None, **guard} if isinstance(guard, dict) else guard,
    }
