"""The one place that knows earlier rlhpo versions: their ``spec.json`` as the current spec, their
meta-training ``config.yaml`` as the current config, the settings they had that are gone.

Artifact format 1 (the policies ``rlhpo/pretrained/v1``, ``v2`` and ``default``, rlhpo up to
the decision spec) named its feature set by a ``feature_version``, repeated the enabled controls
in ``controls`` and left out what the rlhpo of the day did not have yet; what was left out
meant: the base schedule ``none``, the ``user`` prior, no trust region (``max_lr_ratio`` null).
:func:`convert_spec` turns such a spec into the current one at load time, so the live code has
one code path; an artifact of an unknown format is a one-line error. :func:`convert_config` does
the same for a meta-training run's saved ``config.yaml`` (``resume=``), and :data:`REMOVED` names
what replaces each removed setting (a command-line override naming one is an error that says so).
"""

from __future__ import annotations

from typing import Any

from rlhpo.control.spec import FEATURE_NAMES, FEATURE_NAMES_V1
from rlhpo.errors import ArtifactError, ConfigError

#: the format this rlhpo writes
ARTIFACT_FORMAT = 2
#: format 1's feature versions
_FEATURE_VERSIONS = {1: FEATURE_NAMES_V1, 2: FEATURE_NAMES}
#: settings that were removed, and what replaces each
REMOVED: dict[str, str] = {
    "device": "set env.device (cpu, cuda, cuda:N): the one setting of where target networks train",
    "env.feature_version": "set env.feature_names: the feature set by name (rlhpo.control.spec.FEATURE_NAMES, "
    "or FEATURE_NAMES_V1 for the first set)",
}


def convert_config(saved: dict) -> dict:
    """An earlier meta-training run's saved ``config.yaml`` (a plain dict) in the current schema: the
    removed ``device`` dropped (the run wrote its config after validation, so ``env.device`` holds
    what it set) and ``env.feature_version`` as the feature set it named."""
    out = {k: v for k, v in saved.items() if k != "device"}
    env = dict(out.get("env") or {})
    if "feature_version" in env:
        version = env.pop("feature_version")
        if version not in _FEATURE_VERSIONS:
            raise ConfigError(f"env.feature_version={version!r} in the saved config.yaml; allowed: {sorted(_FEATURE_VERSIONS)}")
        out["env"] = {**env, "feature_names": list(_FEATURE_VERSIONS[version])}
    return out


def convert_spec(raw: Any, where: str) -> Any:
    """The decoded ``spec.json`` of an artifact in the current format (plain data, for
    :func:`rlhpo.control.spec.from_dict`): format 1 converted, the current format as it is."""
    if not isinstance(raw, dict) or raw.get("format") == ARTIFACT_FORMAT:
        return raw
    if raw.get("format") != 1:
        raise ArtifactError(f"{where}: artifact format {raw.get('format')!r}; this rlhpo reads formats 1 and {ARTIFACT_FORMAT}")
    old = dict(raw)
    version = old.pop("feature_version", 1)
    names = _FEATURE_VERSIONS.get(version)
    if names is None or list(old.get("feature_names", names)) != list(names):
        raise ArtifactError(
            f"{where}: the policy was trained on feature version {version} ({len(old.get('feature_names', []))} features); "
            f"this rlhpo computes versions {sorted(_FEATURE_VERSIONS)}. Re-train it, or install the rlhpo that made it."
        )
    old.pop("controls", None)  # the enabled controls of ``actions``
    guard = old.get("guard", {})
    return {
        **old,
        "format": ARTIFACT_FORMAT,
        "feature_names": list(names),
        "base_schedule": old.get("base_schedule", "none"),
        "prior": old.get("prior", "user"),
        "guard": {"max_lr_ratio": None, **guard} if isinstance(guard, dict) else guard,
    }
