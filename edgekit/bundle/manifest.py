"""The bundle manifest: its schema version, required fields and checks.

``manifest.json`` is the bundle's contract with the device. Its fields are documented in
docs/bundle.md; this module is the one place that knows the schema version.

``validate`` checks the type and range of every field that the runtime, the backends, the daemon's
summary and ``edgekit inspect`` read, so a damaged or hostile manifest is one ``BundleError`` line naming
the field, never a traceback later. ``named_files`` lists every bundle file the manifest names, so the
reader can require each to be a listed, checksummed file.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.errors import BundleError, EdgekitError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED = (
    "schema_version", "edgekit_version", "created", "model", "input", "output", "preprocess", "labels",
    "postprocess", "target", "backend", "precision", "quantization", "accuracy", "latency", "selftest",
    "files",
)  # fmt: skip
DTYPES = ("float32", "float16", "uint8", "int8")
MAX_SELFTEST_TOLERANCE = 0.5  # pipeline.SELFTEST_TOLERANCE is at most 0.15 (int8); beyond 0.5 checks nothing
MAX_LIST = 100_000  # labels, notes, files: far beyond any real bundle
SHA256 = re.compile(r"[0-9a-f]{64}")
TAMPERED = "the bundle is damaged or was tampered with, recompile it"


class _Invalid(Exception):
    def __init__(self, field: str, want: str, got: Any) -> None:
        super().__init__(field)
        self.field, self.want, self.got = field, want, got


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- checkers: each takes (value, field) and raises _Invalid, or returns normally
Check = Callable[[Any, str], None]


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def string(v: Any, f: str) -> None:
    if not isinstance(v, str):
        raise _Invalid(f, "a string", v)


def integer(lo: int | None = None, hi: int | None = None) -> Check:
    def check(v: Any, f: str) -> None:
        if not isinstance(v, int) or isinstance(v, bool) or (lo is not None and v < lo) or (hi is not None and v > hi):
            want = "an integer" + (f" from {lo}" if lo is not None else "") + (f" to {hi}" if hi is not None else "")
            raise _Invalid(f, want, v)

    return check


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Check:
    def check(v: Any, f: str) -> None:
        bad = not _is_num(v)
        if not bad and lo is not None:
            bad = v <= lo if lo_open else v < lo
        if not bad and hi is not None:
            bad = v > hi
        if bad:
            rng = f" from {lo:g} to {hi:g}" if lo is not None and hi is not None else ""
            rng += " (not 0)" if lo_open and lo == 0 and not rng else ""
            raise _Invalid(f, f"a number{rng}", v)

    return check


def boolean(v: Any, f: str) -> None:
    if not isinstance(v, bool):
        raise _Invalid(f, "true or false", v)


def anything(v: Any, f: str) -> None:
    pass


def one_of(*choices: Any) -> Check:
    def check(v: Any, f: str) -> None:
        if not isinstance(v, (str, int, type(None))) or v not in choices or isinstance(v, bool):
            raise _Invalid(f, "one of " + ", ".join(map(str, choices)), v)

    return check


def optional(inner: Check) -> Check:
    def check(v: Any, f: str) -> None:
        if v is not None:
            inner(v, f)

    return check


def either(*options: Check, want: str) -> Check:
    def check(v: Any, f: str) -> None:
        for option in options:
            try:
                option(v, f)
                return
            except _Invalid:
                continue
        raise _Invalid(f, want, v)

    return check


def list_of(inner: Check, *, length: int | None = None, max_len: int = MAX_LIST, what: str = "a list") -> Check:
    def check(v: Any, f: str) -> None:
        if not isinstance(v, list) or (length is not None and len(v) != length) or len(v) > max_len:
            raise _Invalid(f, what if length is None else f"a list of {length}", v)
        for i, item in enumerate(v):
            inner(item, f"{f}[{i}]")

    return check


def obj(fields: dict[str, Check], *, optional_keys: tuple[str, ...] = (), closed: bool = False) -> Check:
    """A JSON object with ``fields`` (required unless in ``optional_keys``); ``closed`` allows no others."""

    def check(v: Any, f: str) -> None:
        if not isinstance(v, dict):
            raise _Invalid(f, "an object", v)
        for key, inner in fields.items():
            sub = f"{f}.{key}" if f else key
            if key not in v:
                if key in optional_keys:
                    continue
                raise _Invalid(sub, "present", None)
            inner(v[key], sub)
        if closed:
            extra = sorted(set(v) - set(fields))
            if extra:
                raise _Invalid(f"{f}.{extra[0]}", "absent (not a field of this schema)", v[extra[0]])

    return check


def dict_of(value: Check, *, max_len: int = MAX_LIST) -> Check:
    def check(v: Any, f: str) -> None:
        if not isinstance(v, dict) or len(v) > max_len:
            raise _Invalid(f, "an object", v)
        for key, item in v.items():
            value(item, f"{f}.{key}")

    return check


def safe_name(name: Any) -> str | None:
    """Why ``name`` is not a safe bundle file name (relative, normalised, '/'-separated), or None."""
    if not isinstance(name, str) or not name:
        return "is empty or not a string"
    if "\\" in name or ":" in name or "\x00" in name:
        return "has a backslash, a drive letter or a NUL"
    if name.startswith("/"):
        return "is an absolute path"
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "is not a normalised relative path (empty, '.' or '..' parts)"
    if len(name) > 1024:
        return "is too long"
    return None


def bundle_file(v: Any, f: str) -> None:
    reason = safe_name(v)
    if reason:
        raise _Invalid(f, "a relative file name inside the bundle", v)


def _sha(v: Any, f: str) -> None:
    if not isinstance(v, str) or not SHA256.fullmatch(v):
        raise _Invalid(f, "64 lowercase hex digits", v)


def _shape(v: Any, f: str) -> None:
    list_of(integer(), length=4)(v, f)
    if not (v[0] == -1 or v[0] >= 1) or any(d < 1 for d in v[1:]):
        raise _Invalid(f, "4 positive integers (the batch may be -1)", v)


def _std(v: Any, f: str) -> None:
    list_of(number(), length=3)(v, f)
    if any(x == 0 for x in v):
        raise _Invalid(f, "three non-zero numbers", v)


def _files(v: Any, f: str) -> None:
    dict_of(obj({"size": integer(0), "sha256": _sha}))(v, f)
    for name in v:
        reason = safe_name(name)
        if reason or name == MANIFEST:
            raise _Invalid(f"{f}.{name}" if name else f, "a relative file name inside the bundle", name)


_PAIR = list_of(integer(1), length=2)
_FIGURE = obj({"agreement_with_fp32": number(), "top1": optional(number()), "drop_points": optional(number())},
              optional_keys=("drop_points",))  # fmt: skip
_TOP = obj({"top1": number(), "top5": number()}, optional_keys=("top5",))
_ACCURACY = obj(
    {
        "value": optional(_TOP), "fp32": optional(_TOP), "drop_points": optional(number()),
        "agreement_with_fp32": number(), "dataset": obj({"images": integer(0)}), "measured_with": string,
        "metric": string, "per_class": anything, "simulated": boolean,
    },
    optional_keys=("metric", "per_class", "simulated", "fp32", "drop_points"),
)  # fmt: skip
_LATENCY = obj(
    {"measured": boolean, "note": string, "p50_ms": number(0), "p90_ms": number(0), "what": string, "machine": string},
    optional_keys=("measured", "note", "p50_ms", "p90_ms", "what", "machine"),
)  # fmt: skip
_BUDGET = obj(
    {
        "budget": obj({"text": string}), "met": boolean, "search_margin_points": optional(number()),
        "confidence": number(0, 1), "search_images": integer(0), "naive_int8_on_search": _FIGURE,
        "layers_kept_in_higher_precision": list_of(string), "quantized_layers": integer(0),
        "higher_precision": string, "on_search": _FIGURE, "on_check": _FIGURE, "check_images": integer(0),
        "trial_builds": integer(0), "search_seconds": number(0), "measured_with": string,
        "batch1_latency": optional(obj({
            "budgeted_ms": number(), "fp32_ms": number(), "budgeted_speedup_vs_fp32": number(),
            "naive_int8_speedup_vs_fp32": number(),
        })),
    },
    optional_keys=("search_margin_points", "confidence", "batch1_latency"),
)  # fmt: skip
_QUANTIZATION = obj(
    {
        "recipe": string, "tool": string, "activations": string, "weights": string,
        "calibration_method": optional(string), "layers_kept_in_higher_precision": list_of(string),
        "calibration": obj({"images": integer(0)}, optional_keys=("images",)), "budget": optional(_BUDGET),
        "calibration_cache": obj({"file": bundle_file}),
    },
    optional_keys=("calibration", "budget", "calibration_cache"),
)  # fmt: skip
_BUILD_PLAN = obj(
    {
        "precision": one_of("fp32", "fp16", "int8"), "onnx": bundle_file, "quantization": string,
        "flags": list_of(one_of("fp16", "int8")), "tf32": boolean, "calibration_cache": optional(bundle_file),
        "workspace_mib": integer(1), "dla_core": optional(integer(0)), "gpu_fallback": boolean,
        "input_name": string, "input_shape": list_of(integer(-1), length=4), "min_shape": list_of(integer(1), length=4),
        "opt_shape": list_of(integer(1), length=4), "max_shape": list_of(integer(1), length=4),
        "timing_cache": boolean, "builder_optimization_level": integer(0, 5), "tensorrt": string,
        "trtexec": string, "trtexec_implicit": string,
    },
    optional_keys=("trtexec_implicit",),
)  # fmt: skip

SCHEMA = obj(
    {
        "schema_version": integer(1, SCHEMA_VERSION),
        "edgekit_version": string,
        "created": string,
        "model": obj({"name": string, "task": string, "source": obj({"format": string, "file": string})}),
        "input": obj(
            {
                "name": string,
                "shape": _shape,
                "layout": one_of("NCHW", "NHWC"),
                "dtype": one_of(*DTYPES),
                "dynamic_batch": boolean,
            },
            optional_keys=("dynamic_batch",),
        ),
        "output": obj({"name": string, "shape": list_of(integer(-1))}, optional_keys=("shape",)),
        "preprocess": obj(
            {
                "resize": optional(either(integer(1), _PAIR, want="null, a positive integer or [height, width]")),
                "resize_mode": one_of("bilinear", "nearest", "bicubic", "area"),
                "crop": optional(_PAIR),
                "color_order": one_of("RGB", "BGR"),
                "scale": number(0, lo_open=True),
                "mean": list_of(number(), length=3),
                "std": _std,
            },
            optional_keys=("resize", "resize_mode", "crop", "color_order", "scale", "mean", "std"),
            closed=True,
        ),
        "labels": list_of(string),
        "postprocess": obj(
            {"output": one_of("logits", "probabilities"), "activation": string, "top_k": integer(1)},
            optional_keys=("output",),
        ),
        "target": obj(
            {"name": string, "device": string, "backend": string, "backend_options": dict_of(anything)},
            optional_keys=("backend", "backend_options"),
        ),
        "backend": obj(
            {
                "name": string,
                "version": string,
                "model_file": bundle_file,
                "precision_hint": optional(string),
                "build_plan": _BUILD_PLAN,
            },
            optional_keys=("precision_hint", "build_plan"),
        ),
        "precision": obj({"requested": one_of("fp32", "fp16", "int8"), "inference": string}),
        "quantization": optional(_QUANTIZATION),
        "accuracy": optional(_ACCURACY),
        "latency": optional(_LATENCY),
        "selftest": obj(
            {
                "file": bundle_file,
                "inputs": integer(1, 10_000),
                "source": string,
                "tolerance": number(0, MAX_SELFTEST_TOLERANCE, lo_open=True),
                "check": string,
            }
        ),
        "notes": list_of(string),
        "files": _files,
    },
    optional_keys=("notes",),
)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def dumps(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=False) + "\n"


def _field_error(source: str, exc: _Invalid) -> BundleError:
    if exc.want == "present":
        return BundleError(f"{source}: manifest.json lacks the field '{exc.field}'; {TAMPERED}")
    return BundleError(f"{source}: manifest field '{exc.field}' must be {exc.want}, got {_shown(exc.got)}; {TAMPERED}")


def validate(manifest: Any, *, source: str) -> dict[str, Any]:
    """Check the schema version, then the type and range of every field; return the manifest."""
    if not isinstance(manifest, dict):
        raise BundleError(f"{source}: manifest.json is not a JSON object; the bundle is damaged, recompile it")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(f"{source}: manifest.json has no schema_version; it is not an edgekit bundle")
    if version > SCHEMA_VERSION:
        raise BundleError(
            f"{source}: bundle schema version {version} is newer than this edgekit reads "
            f"({SCHEMA_VERSION}); upgrade edgekit on this device"
        )
    if version < 1:
        raise BundleError(f"{source}: bundle schema version {version} is not supported; recompile the bundle")
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise BundleError(
            f"{source}: manifest.json lacks the field '{missing[0]}'; the bundle is damaged, recompile it"
        )
    try:
        SCHEMA(manifest, "")
    except _Invalid as exc:
        raise _field_error(source, exc) from exc
    except RecursionError as exc:
        raise BundleError(f"{source}: manifest.json is nested too deeply; {TAMPERED}") from exc
    _check_backend_options(manifest, source=source)
    return manifest


def _check_backend_options(manifest: dict[str, Any], *, source: str) -> None:
    """A built-in backend's options must build its typed options, as the runtime will build them."""
    import dataclasses
    import importlib

    name = manifest["backend"]["name"]
    module = {"onnxruntime": "ONNXRuntimeOptions", "openvino": "OpenVINOOptions", "tensorrt": "TensorRTOptions"}
    if name not in module:
        return
    cls = getattr(importlib.import_module(f"edgekit.backends.{name}.options"), module[name])
    options = manifest["target"].get("backend_options", {})
    for f in dataclasses.fields(cls):
        if f.name not in options:
            continue
        value, field = options[f.name], f"target.backend_options.{f.name}"
        default = f.default
        try:
            if isinstance(default, bool):
                boolean(value, field)
            elif isinstance(default, int):
                integer()(value, field)
            elif isinstance(default, str):
                string(value, field)
            elif isinstance(default, tuple):
                list_of(string)(value, field)
        except _Invalid as exc:
            raise _field_error(source, exc) from exc
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise BundleError(
            f"{source}: manifest field 'target.backend_options.{unknown[0]}' is not an option of backend "
            f"{name}; {TAMPERED}"
        )
    try:
        cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
    except EdgekitError as exc:
        raise BundleError(f"{source}: manifest field 'target.backend_options': {exc}; {TAMPERED}") from exc


def named_files(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, file name) for every bundle file the (validated) manifest names."""
    backend = manifest["backend"]
    named = [("backend.model_file", backend["model_file"]), ("selftest.file", manifest["selftest"]["file"])]
    if backend["name"] == "openvino" and backend["model_file"].endswith(".xml"):
        named.append(("backend.model_file (its weights beside it)", backend["model_file"][: -len(".xml")] + ".bin"))
    plan = backend.get("build_plan")
    if plan:
        named.append(("backend.build_plan.onnx", plan["onnx"]))
        if plan.get("calibration_cache"):
            named.append(("backend.build_plan.calibration_cache", plan["calibration_cache"]))
    cache = (manifest.get("quantization") or {}).get("calibration_cache")
    if cache:
        named.append(("quantization.calibration_cache.file", cache["file"]))
    return named


def bundle_hash(manifest_text: str) -> str:
    """The bundle's identity: the sha256 of its manifest, which holds the sha256 of every other file."""
    return hashlib.sha256(manifest_text.encode("utf-8")).hexdigest()
