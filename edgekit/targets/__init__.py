"""Hardware targets: TOML files loaded into validated, frozen dataclasses.

The shipped files are the project's top-level ``targets/`` folder (a wheel carries a copy: ``edgekit._paths``);
a file added there is a named target. A user's own target is also a path to a TOML file of the same form.
"""

from __future__ import annotations

import dataclasses
import platform
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from edgekit import _toml as tomllib
from edgekit import registry
from edgekit._paths import shipped_folder
from edgekit.calibration import CALIBRATION_METHODS, recipe, recipe_names
from edgekit.errors import UsageError

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True, kw_only=True)
class Hardware:
    """Published (or, where marked in the file, derived) figures of the target's device."""

    device_name: str = ""
    int8_tops: float | None = None
    int8_tops_sparse: float | None = None
    fp16_tflops: float | None = None
    fp32_tflops: float | None = None
    memory_bandwidth_gbs: float | None = None
    memory_gb: float | None = None
    compute_capability: str | None = None
    dla_cores: int = 0
    jetpack: str | None = None
    tensorrt: str | None = None
    # The latency estimator's terms for the device's class (edgekit/report/estimate.py; fitted to published
    # figures by bench/bench_estimate.py, each with its source in the file). None: the plain roofline.
    estimate_class: str | None = None  # the device class the terms were fitted for ("jetson-gpu", ...)
    layer_overhead_us: float | None = None  # per executed (unfused) layer: kernel launch, scheduling
    inference_floor_ms: float | None = None  # per inference: runtime call, input/output transfers
    conv_efficiency: float | None = None  # fraction of peak a large dense Conv/Gemm reaches
    depthwise_efficiency: float | None = None  # fraction of peak a large depthwise Conv reaches
    half_efficiency_mmacs: float | None = None  # layer size (M MACs) at which a layer reaches half its efficiency
    estimate_band: float | None = None  # the estimate's band: [ms / band, ms x band]
    estimate_error_pct: float | None = None  # the class's median absolute error on its published figures


@dataclass(frozen=True, kw_only=True)
class Target:
    """A named piece of hardware and the backend that compiles for it."""

    name: str
    backend: str
    device: str
    precisions: tuple[str, ...]
    default_precision: str
    description: str = ""
    vendor: str = ""
    aliases: tuple[str, ...] = ()
    arch: str | None = None
    static_shapes: bool = False
    # INT8 activation-range estimation when the user does not choose one (measured per backend: bench/).
    calibration_method: str = "minmax"
    # The INT8 quantizer's settings: a recipe name (edgekit.calibration.recipe_names()); a file that names none
    # gets its backend's (Backend.calibration_recipe).
    calibration_recipe: str | None = None
    hardware: Hardware = field(default_factory=Hardware)
    backend_options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    source: str = ""
    text: str = field(default="", repr=False, hash=False, compare=False)

    def supports(self, precision: str) -> bool:
        return precision in self.precisions

    def check_precision(self, precision: str) -> str:
        """Return the precision if this target supports it, else raise a UsageError naming the choices."""
        if precision not in PRECISIONS:
            raise UsageError(f"unknown precision '{precision}'; choose one of: {', '.join(PRECISIONS)}")
        if precision not in self.precisions:
            raise UsageError(
                f"target '{self.name}' does not support {precision}; it supports: {', '.join(self.precisions)}"
            )
        return precision

    def arch_matches_host(self) -> bool:
        """True when the target's CPU architecture (if it names one) is this machine's."""
        return self.arch is None or self.arch == _host_arch()


def _host_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def _fields(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _check_keys(data: dict, allowed: set[str], where: str, source: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise UsageError(f"{source}: unknown key '{where}{unknown[0]}'; allowed keys: {', '.join(sorted(allowed))}")


def parse_target(text: str, *, source: str) -> Target:
    """Parse and validate a target file's text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{source}: not valid TOML ({exc}); fix the file's syntax") from exc
    top = _fields(Target) - {"source", "text", "hardware", "backend_options"} | {"hardware", "backend_options"}
    _check_keys(data, top, "", source)
    for key in ("name", "backend", "device", "precisions"):
        if key not in data:
            raise UsageError(f"{source}: missing required key '{key}'")
    hw = data.pop("hardware", {})
    _check_keys(hw, _fields(Hardware), "hardware.", source)
    if not registry.is_registered(data["backend"]):
        raise UsageError(f"{source}: backend '{data['backend']}' is not one of: {', '.join(registry.backend_ids())}")
    precisions = tuple(data.pop("precisions"))
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad or not precisions:
        raise UsageError(f"{source}: precisions must be a non-empty list of {', '.join(PRECISIONS)}")
    method = data.get("calibration_method", "minmax")
    if method not in CALIBRATION_METHODS:
        raise UsageError(f"{source}: calibration_method '{method}' is not one of: {', '.join(CALIBRATION_METHODS)}")
    data["calibration_recipe"] = _check_recipe(data, source)
    default = data.pop("default_precision", precisions[0])
    if default not in precisions:
        raise UsageError(f"{source}: default_precision '{default}' is not in precisions {list(precisions)}")
    try:
        return Target(
            **{k: v for k, v in data.items() if k != "aliases"},
            aliases=tuple(data.get("aliases", ())),
            precisions=precisions,
            default_precision=default,
            hardware=Hardware(**hw),
            source=source,
            text=text,
        )
    except TypeError as exc:
        raise UsageError(f"{source}: {exc}") from exc


def _check_recipe(data: dict[str, Any], source: str) -> str | None:
    """The target's recipe name, checked: a shipped recipe, for the quantizer its backend's default recipe uses."""
    # The backend's own recipe (Backend.calibration_recipe) is the default and fixes the quantizer; finding it
    # imports the backend's class (light: its compiler and vendor packages load only when it compiles).
    default = registry.backend(data["backend"]).calibration_recipe
    name = data.get("calibration_recipe", default)
    if name is None:
        return None
    names = recipe_names()
    if not isinstance(name, str) or name not in names:
        raise UsageError(f"{source}: calibration_recipe {name!r} is not one of: {', '.join(names)}")
    if default is not None and recipe(name).tool != recipe(default).tool:
        same = [n for n in names if recipe(n).tool == recipe(default).tool]
        raise UsageError(
            f"{source}: calibration_recipe '{name}' is a {recipe(name).tool} recipe, which backend "
            f"'{data['backend']}' does not use; choose one of: {', '.join(same)}"
        )
    return name


def targets_folder() -> Path:
    """The folder of the shipped target files (the project's targets/; in a wheel, its copy)."""
    return shipped_folder("targets")


@cache
def _shipped() -> dict[str, Target]:
    targets = {}
    for path in sorted(targets_folder().glob("*.toml")):
        target = parse_target(path.read_text(encoding="utf-8"), source=path.name)
        targets[target.name] = target
    return targets


def list_targets() -> list[Target]:
    """Every shipped target, sorted by name."""
    return sorted(_shipped().values(), key=lambda t: t.name)


def get_target(name_or_path: str | Path) -> Target:
    """Look a target up by name, alias, or the path of a TOML file."""
    key = str(name_or_path)
    shipped = _shipped()
    if key in shipped:
        return shipped[key]
    for target in shipped.values():
        if key in target.aliases:
            return target
    path = Path(key)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise UsageError(f"target file '{path}' does not exist; pass a TOML target file or a known name")
        return parse_target(path.read_text(encoding="utf-8"), source=str(path))
    known = ", ".join(t.name + (f" ({', '.join(t.aliases)})" if t.aliases else "") for t in list_targets())
    raise UsageError(f"target '{key}' not found; known targets: {known} (or pass a path to a .toml file)")


__all__ = [
    "CALIBRATION_METHODS",
    "PRECISIONS",
    "Hardware",
    "Target",
    "get_target",
    "list_targets",
    "parse_target",
    "targets_folder",
]
