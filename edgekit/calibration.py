"""INT8 calibration as data: the named quantizer recipes and edgekit's own small image set.

The recipes are the TOML files in the project's ``calibration/recipes/`` (one a recipe, ``<name>.toml``),
loaded into frozen dataclasses: ``QDQRecipe`` for ONNX Runtime's ``quantize_static`` (the ONNX Runtime and
TensorRT compilers), ``NNCFRecipe`` for NNCF (OpenVINO). A target file names its recipe with
``calibration_recipe``. ``calibration/images/`` holds a few real photographs a bundle's self-test vectors
come from when the compile is given no images. Both folders ship in the wheel (``edgekit._paths``).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import ClassVar

from edgekit import _toml as tomllib
from edgekit._paths import shipped_folder
from edgekit.errors import UsageError

# Every range estimator edgekit offers (a target's calibration_method, --calib-method), and each quantizer's own.
CALIBRATION_METHODS = ("minmax", "entropy", "percentile", "mse", "mean-minmax")
TOOL_METHODS = {
    "onnxruntime": ("minmax", "entropy", "percentile", "mse"),
    "nncf": ("minmax", "mean-minmax", "percentile", "mse"),  # NNCF has no entropy (KL) estimator
}
ACTIVATION_TYPES = ("uint8", "int8")
NNCF_PRESETS = ("performance", "mixed")


@dataclass(frozen=True, kw_only=True)
class QDQRecipe:
    """How ONNX Runtime's ``quantize_static`` writes a Q/DQ INT8 graph (edgekit.quantize.onnxruntime_qdq)."""

    tool: ClassVar[str] = "onnxruntime"
    name: str
    activations: str  # "uint8" or "int8"
    symmetric_activations: bool
    method: str  # the range estimator when the caller names none
    percentile: float  # with method "percentile": the percentile of |activation| kept
    per_channel: bool  # weights: int8 symmetric, per output channel (else per tensor)
    op_types: tuple[str, ...]  # the op types quantized
    quantize_bias: bool  # int32 biases behind a DequantizeLinear (ONNX Runtime's default), else float biases
    dedicated_qdq_pair: bool  # each consumer of a tensor gets its own Q/DQ pair (default: they share one)
    outputs_unquantized: tuple[str, ...]  # op types whose outputs get no Q/DQ (empty: all are quantized)
    description: str = field(default="", compare=False)


@dataclass(frozen=True, kw_only=True)
class NNCFRecipe:
    """How NNCF's ``nncf.quantize`` quantizes an OpenVINO model (edgekit.quantize.nncf_ov)."""

    tool: ClassVar[str] = "nncf"
    name: str
    preset: str  # "performance" (symmetric activations) or "mixed" (asymmetric activations)
    method: str  # the range estimator when the caller names none
    percentile: float  # with method "percentile": the percentile of |activation| kept
    fast_bias_correction: bool  # NNCF's FastBiasCorrection (its default), else the full BiasCorrection
    description: str = field(default="", compare=False)


Recipe = QDQRecipe | NNCFRecipe
_KINDS: dict[str, type[QDQRecipe] | type[NNCFRecipe]] = {"onnxruntime": QDQRecipe, "nncf": NNCFRecipe}
_CHOICES = {"activations": ACTIVATION_TYPES, "preset": NNCF_PRESETS}


def _value(key: str, value: object, hint: object, source: str) -> object:
    """``value`` checked against the field's type (and its choices), converted to the dataclass's form."""

    def bad(what: str) -> UsageError:
        return UsageError(f"{source}: key '{key}' must be {what}, not {value!r}; fix the recipe file")

    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 50 < value <= 100:
            raise bad("a number above 50 and at most 100")
        value = float(value)
    elif hint is str:
        if not isinstance(value, str) or (key == "name" and not value):
            raise bad("a string" if key != "name" else "a non-empty string")
        if key in _CHOICES and value not in _CHOICES[key]:
            raise bad(f"one of {', '.join(_CHOICES[key])}")
    else:  # tuple[str, ...]
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise bad("a list of op type names")
        value = tuple(value)
    return value


def parse_recipe(text: str, *, source: str) -> Recipe:
    """Parse and validate a recipe file's text; every error is one line naming ``source`` and the key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{source}: not valid TOML ({exc}); fix the file's syntax") from exc
    tool = data.pop("tool", None)
    if tool not in _KINDS:
        what = "missing required key 'tool'" if tool is None else f"key 'tool' must be one of {', '.join(_KINDS)}"
        raise UsageError(f"{source}: {what}" + ("" if tool is None else f", not {tool!r}"))
    kind = _KINDS[tool]
    hints = typing.get_type_hints(kind)
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        allowed = ", ".join(sorted({"tool", *fields}))
        raise UsageError(f"{source}: unknown key '{unknown[0]}'; allowed keys for a {tool} recipe: {allowed}")
    missing = [k for k, f in fields.items() if k not in data and f.default is dataclasses.MISSING]
    if missing:
        raise UsageError(f"{source}: missing required key '{missing[0]}'")
    values = {k: _value(k, v, hints[k], source) for k, v in data.items()}
    if values["method"] not in TOOL_METHODS[tool]:
        raise UsageError(
            f"{source}: key 'method' must be one of {', '.join(TOOL_METHODS[tool])} for a {tool} recipe, "
            f"not {values['method']!r}"
        )
    if tool == "onnxruntime":
        if not values["op_types"]:
            raise UsageError(f"{source}: key 'op_types' must name at least one op type")
        stray = [op for op in values["outputs_unquantized"] if op not in values["op_types"]]
        if stray:
            raise UsageError(f"{source}: key 'outputs_unquantized' names '{stray[0]}', which is not in op_types")
    return kind(**values)  # type: ignore[arg-type]


def recipes_folder() -> Path:
    """The shipped recipes: the project's calibration/recipes/ (in a wheel, its copy)."""
    return shipped_folder("calibration") / "recipes"


def images_folder() -> Path:
    """edgekit's own calibration images: the project's calibration/images/ (in a wheel, its copy)."""
    return shipped_folder("calibration") / "images"


def load_recipes(folder: str | Path) -> dict[str, Recipe]:
    """Every ``*.toml`` recipe in ``folder`` by name; each file is named after its recipe."""
    recipes: dict[str, Recipe] = {}
    for path in sorted(Path(folder).glob("*.toml")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"{path}: cannot be read ({exc}); fix or remove the recipe file") from exc
        found = parse_recipe(text, source=path.name)
        if found.name != path.stem:
            raise UsageError(
                f"{path.name}: name '{found.name}' is not the file's name; rename the file {found.name}.toml"
            )
        recipes[found.name] = found
    return recipes


@cache
def _shipped() -> dict[str, Recipe]:
    return load_recipes(recipes_folder())


def recipe_names() -> tuple[str, ...]:
    """The names of the shipped recipes, sorted."""
    return tuple(sorted(_shipped()))


def recipe(name: str) -> Recipe:
    """The shipped recipe ``name``, or a UsageError naming the known ones."""
    recipes = _shipped()
    if name not in recipes:
        raise UsageError(
            f"calibration recipe '{name}' not found; known recipes: {', '.join(recipe_names()) or 'none'} "
            f"(the files in {recipes_folder()})"
        )
    return recipes[name]


def qdq_recipe(name: str) -> QDQRecipe:
    """The shipped ONNX Runtime recipe ``name``: a UsageError if it is missing or for another quantizer."""
    return _of_kind(name, QDQRecipe)


def nncf_recipe(name: str) -> NNCFRecipe:
    """The shipped NNCF recipe ``name``: a UsageError if it is missing or for another quantizer."""
    return _of_kind(name, NNCFRecipe)


_R = typing.TypeVar("_R", QDQRecipe, NNCFRecipe)


def _of_kind(name: str, kind: type[_R]) -> _R:
    found = recipe(name)
    if not isinstance(found, kind):
        same = [n for n, r in _shipped().items() if isinstance(r, kind)]
        raise UsageError(
            f"calibration recipe '{name}' is a {found.tool} recipe, not a {kind.tool} one; "
            f"choose one of: {', '.join(sorted(same))}"
        )
    return found


__all__ = [
    "CALIBRATION_METHODS",
    "NNCFRecipe",
    "QDQRecipe",
    "Recipe",
    "images_folder",
    "load_recipes",
    "nncf_recipe",
    "parse_recipe",
    "qdq_recipe",
    "recipe",
    "recipe_names",
    "recipes_folder",
]
