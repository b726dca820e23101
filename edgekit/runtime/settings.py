"""Runtime settings: the backend knobs a bundle runs with (threads, streams, the daemon's batch).

A bundle compiled on its target, or tuned on the device (``edgekit bench --tune``), records the settings that
measured fastest there in its manifest (``runtime_settings``, see docs/bundle.md); others record none and run
with the backend's defaults (and the target's ``backend_options``). The settings a loaded bundle uses are, key
by key, the first of:

1. the ``settings`` keyword of ``load_bundle`` (a mapping; a key set to None drops it back to the default;
   the string "default" drops every recorded and environment setting);
2. the ``EDGEKIT_RUNTIME_SETTINGS`` environment variable: ``threads=2,batch=4`` (a value "default" drops that
   key), or "default" for the backend's defaults;
3. the bundle's record;
4. the backend's own default (and the target's ``backend_options``).

Every value is checked with the manifest's own checks (``edgekit.bundle.types.SETTING_CHECKS``): a wrong one
is one ``UsageError`` line (a bundle's record with a knob its backend does not take, one ``BundleError``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from edgekit.bundle.checks import Invalid, integer
from edgekit.bundle.checks import shown as _shown
from edgekit.bundle.types import MAX_BATCH, SETTING_CHECKS
from edgekit.errors import BundleError, UsageError

ENV = "EDGEKIT_RUNTIME_SETTINGS"
DEFAULT = "default"
KNOBS = tuple(SETTING_CHECKS)  # threads, inter_op_threads, streams, performance_hint
KEYS = (*KNOBS, "batch")
CHECKS = {**SETTING_CHECKS, "batch": integer(1, MAX_BATCH)}
INT_KEYS = ("threads", "inter_op_threads", "streams", "batch")


@dataclass(frozen=True)
class Settings:
    """The settings a runtime runs with: ``knobs`` (by edgekit's names; absent: the backend's default), the
    daemon's ``batch`` (None: not set), and where each came from (``source``: "bundle", "env", "keyword")."""

    knobs: dict[str, Any] = field(default_factory=dict)
    batch: int | None = None
    source: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The knobs and the batch as one mapping (what ``Bundle.settings`` shows)."""
        return {**self.knobs, **({"batch": self.batch} if self.batch is not None else {})}


def recorded(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The knobs a manifest's JSON object records (``runtime_settings``), not the batch; {} when none."""
    record = manifest.get("runtime_settings") or {}
    return {k: record[k] for k in KNOBS if record.get(k) is not None}


def check_value(key: str, value: Any, *, where: str) -> Any:
    """``value`` for setting ``key`` if the manifest's check accepts it; one UsageError line naming ``where``."""
    if key not in CHECKS:
        raise UsageError(f"'{key}' is not a runtime setting ({where}); the settings are {', '.join(KEYS)}")
    try:
        CHECKS[key](value, key)
    except Invalid as exc:
        raise UsageError(
            f"runtime setting '{key}' must be {exc.want}, got {_shown(value)} ({where}); fix it or leave it out"
        ) from exc
    return value


def parse_env(text: str) -> dict[str, Any] | str:
    """``EDGEKIT_RUNTIME_SETTINGS``: "default", or ``key=value`` pairs separated by commas (value "default"
    drops the key: None)."""
    text = text.strip()
    if text.lower() == DEFAULT:
        return DEFAULT
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = (s.strip() for s in part.partition("="))
        if not eq or not key:
            raise UsageError(f"{ENV}: '{part}' is not key=value; write e.g. {ENV}=threads=2,batch=4 (or 'default')")
        if value.lower() == DEFAULT:
            out[key] = None
        elif key in INT_KEYS:
            try:
                out[key] = int(value)
            except ValueError:
                raise UsageError(
                    f"runtime setting '{key}' must be an integer, got '{value}' (from {ENV}); fix it or unset it"
                ) from None
        else:
            out[key] = value.upper() if key == "performance_hint" else value
    return out


def _layer(values: Mapping[str, Any] | str | None, where: str) -> dict[str, Any] | str | None:
    if values is None or values == DEFAULT:
        return values
    if isinstance(values, str) or not isinstance(values, Mapping):
        raise UsageError(f"settings ({where}) must be a mapping such as {{'threads': 2}} or 'default', not {values!r}")
    return {k: (None if v is None else check_value(k, v, where=where)) for k, v in values.items()}


def resolve(
    manifest: Mapping[str, Any],
    keys: tuple[str, ...],
    *,
    override: Mapping[str, Any] | str | None = None,
    environ: Mapping[str, str] | None = None,
    backend: str,
    source: str,
) -> Settings:
    """The settings a runtime taking the knobs ``keys`` runs a bundle with (see the module's docstring)."""
    record = manifest.get("runtime_settings") or {}
    knobs = recorded(manifest)
    for key in knobs:
        if key not in keys:
            taken = ", ".join(keys) or "none"
            raise BundleError(
                f"{source}: manifest field 'runtime_settings.{key}' is not a setting of backend {backend} (it takes: "
                f"{taken}); re-tune the bundle on the device (edgekit bench --tune) or recompile it"
            )
    values: dict[str, Any] = {**knobs}
    if record.get("batch") is not None:
        values["batch"] = record["batch"]
    origin = dict.fromkeys(values, "bundle")
    env_text = (os.environ if environ is None else environ).get(ENV, "")
    layers = [(_layer(parse_env(env_text), f"from {ENV}") if env_text.strip() else None, "env"),
              (_layer(override, "load_bundle(settings=...)"), "keyword")]  # fmt: skip
    for layer, name in layers:
        if layer is None:
            continue
        if layer == DEFAULT:
            values, origin = {}, {}
            continue
        for key, value in layer.items():
            if value is None:
                values.pop(key, None)
                origin.pop(key, None)
                continue
            if key != "batch" and key not in keys:
                where = f"from {ENV}" if name == "env" else "load_bundle(settings=...)"
                raise UsageError(
                    f"runtime setting '{key}' ({where}) does not apply to backend {backend}; it takes: "
                    f"{', '.join([*keys, 'batch'])}"
                )
            values[key], origin[key] = value, name
    batch = values.pop("batch", None)
    return Settings(knobs=values, batch=batch, source=origin)


__all__ = ["DEFAULT", "ENV", "KEYS", "KNOBS", "Settings", "check_value", "parse_env", "recorded", "resolve"]
