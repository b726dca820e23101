"""The typed manifest (edgekit/bundle/types.py) and its JSON Schema (edgekit/bundle/manifest.schema.json).

Real bundles are compiled once per module (ONNX Runtime FP32 and INT8 with an accuracy budget, OpenVINO
FP32, TensorRT INT8 with a calibration cache) and their manifests go through ``Manifest.from_dict``,
``to_dict`` and the JSON Schema.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve.serve_support import serve_bundle, serve_bundle_ov  # noqa: F401
from support import CIFAR_SPEC, LABELS, SAMPLE, json_paths

import edgekit
from edgekit.bundle import Manifest, manifest_schema, open_bundle
from edgekit.bundle.checks import MAX_NAME, SAFE_NAME_PATTERN, safe_name
from edgekit.bundle.manifest import MANIFEST, SCHEMA, dumps, validate
from edgekit.bundle.schema import main as schema_main
from edgekit.bundle.schema import schema_text, shipped_schema_text
from edgekit.bundle.types import SCHEMA_VERSION, FileEntry, Preprocess, Quantization, TopK
from edgekit.bundle.writer import BundleWriter
from edgekit.errors import BundleError

TAMPERED = "the bundle is damaged or was tampered with, recompile it"


@pytest.fixture(scope="module")
def trt_int8(trt_int8_bundle) -> Path:
    return trt_int8_bundle


@pytest.fixture(scope="module")
def ort_budget(tiny_onnx, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("types") / "budget.edgekit"
    edgekit.compile_model(tiny_onnx, target="cpu", precision="int8", output=out, spec=dict(CIFAR_SPEC), labels=LABELS,
                          calib=SAMPLE / "calib", val=SAMPLE / "test", max_accuracy_drop=1.0)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def bundles(serve_bundle, serve_bundle_ov, trt_int8, ort_budget) -> dict[str, Path]:  # noqa: F811
    return {"ort-fp32": serve_bundle, "ov-fp32": serve_bundle_ov, "trt-int8": trt_int8, "ort-int8-budget": ort_budget}


@pytest.fixture(scope="module")
def texts(bundles) -> dict[str, str]:
    return {name: (path / MANIFEST).read_text(encoding="utf-8") for name, path in bundles.items()}


@pytest.fixture(scope="module")
def cpu_manifest(texts) -> dict:
    return json.loads(texts["ort-fp32"])


# -- the types
def test_round_trip_is_exact_for_every_kind_of_bundle(texts):
    for name, text in texts.items():
        data = json.loads(text)
        typed = Manifest.from_dict(copy.deepcopy(data), source=name)
        assert typed.to_dict() == data, name
        assert dumps(typed) == text, f"{name}: the writer's bytes do not round-trip"
        assert Manifest.from_dict(typed.to_dict(), source=name) == typed


def test_typed_fields_are_typed(texts):
    cpu = Manifest.from_dict(json.loads(texts["ort-fp32"]), source="cpu")
    assert cpu.schema_version == SCHEMA_VERSION
    assert cpu.input.shape == (-1, 3, 32, 32) and cpu.input.layout == "NCHW"
    assert cpu.preprocess.resize == (32, 32) and cpu.preprocess.crop is None
    assert cpu.labels == LABELS and cpu.backend.model_file == "model.onnx"
    assert isinstance(cpu.files["model.onnx"], FileEntry) and cpu.files["model.onnx"].size > 0
    assert cpu.quantization is None and cpu.accuracy is None and cpu.latency.measured is True
    assert cpu.target.extra == {} and cpu.target.arch == "x86_64"
    trt = Manifest.from_dict(json.loads(texts["trt-int8"]), source="trt")
    assert isinstance(trt.quantization, Quantization)
    assert trt.quantization.calibration_cache.file == "calibration.cache"
    assert trt.quantization.calibration.images == 300
    assert trt.backend.build_plan["onnx"] == "model.onnx"  # the TensorRT backend's own part: a checked dict
    assert "tensorrt_qdq_check" in trt.quantization.extra  # a key the format does not define is kept
    budget = Manifest.from_dict(json.loads(texts["ort-int8-budget"]), source="budget")
    assert isinstance(budget.accuracy.value, TopK) and budget.accuracy.dataset.images > 0
    assert budget.budget_record["met"] in (True, False) and budget.budget_record["budget"]["metric"] == "accuracy_drop"
    # where the record is: an INT8 answer keeps it in quantization.budget; fp32 (faster here) at the top level
    assert (
        (budget.quantization is None)
        == (budget.budget is not None)
        == (budget.budget_record["chosen"]["precision"] != "int8")
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        budget.input.name = "x"


def test_replace_and_construct_write_the_declared_fields(cpu_manifest):
    typed = Manifest.from_dict(copy.deepcopy(cpu_manifest), source="cpu")
    changed = dataclasses.replace(typed, notes=("a warning",))
    assert changed.to_dict()["notes"] == ["a warning"]
    assert list(changed.to_dict()) == list(cpu_manifest)
    built = Preprocess(resize=224, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert built.to_dict() == {"resize": 224, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    data = copy.deepcopy(cpu_manifest)
    data["preprocess"] = built.to_dict()
    assert Manifest.from_dict(data, source="cpu").preprocess == built


def test_open_bundle_carries_the_typed_manifest(bundles):
    opened = open_bundle(bundles["ov-fp32"])
    try:
        assert isinstance(opened.typed_manifest, Manifest)
        assert opened.typed_manifest.backend.model_file == "model.xml"
        assert opened.manifest == opened.typed_manifest.to_dict()
        assert opened.manifest == json.loads((bundles["ov-fp32"] / MANIFEST).read_text())
    finally:
        opened.close()


NESTED = [
    ("quantization.calibration.images", lambda m: m["quantization"]["calibration"].update(images=-1),
     "must be an integer from 0, got -1"),
    ("quantization.calibration_cache.file", lambda m: m["quantization"]["calibration_cache"].update(file="../c"),
     'must be a relative file name inside the bundle, got "../c"'),
    ("backend.build_plan.max_shape[0]", lambda m: m["backend"]["build_plan"]["max_shape"].__setitem__(0, 0),
     "must be an integer from 1, got 0"),
    ("files.model.onnx.sha256", lambda m: m["files"]["model.onnx"].update(sha256="ABC"),
     'must be 64 lowercase hex digits, got "ABC"'),
    ("model.source.format", lambda m: m["model"]["source"].pop("format"), None),
    ("input.shape[2]", lambda m: m["input"]["shape"].__setitem__(2, "32"), 'must be an integer, got "32"'),
    ("latency.runs", lambda m: m["latency"].update(runs=1.5), "must be an integer from 0, got 1.5"),
]  # fmt: skip


@pytest.mark.parametrize("field, change, want", NESTED, ids=[n[0] for n in NESTED])
def test_nested_field_errors_name_the_dotted_field(texts, field, change, want):
    data = json.loads(texts["trt-int8"])
    change(data)
    with pytest.raises(BundleError) as info:
        Manifest.from_dict(data, source="b.edgekit")
    if want is None:
        assert str(info.value) == f"b.edgekit: manifest.json lacks the field '{field}'; {TAMPERED}"
    else:
        assert str(info.value) == f"b.edgekit: manifest field '{field}' must {want.split('must ', 1)[1]}; {TAMPERED}"


def test_schema_version_rules(cpu_manifest):
    newer = dict(copy.deepcopy(cpu_manifest), schema_version=SCHEMA_VERSION + 1)
    with pytest.raises(BundleError, match="newer than this edgekit reads.*upgrade edgekit"):
        Manifest.from_dict(newer, source="b")
    with pytest.raises(BundleError, match="not supported; recompile"):
        Manifest.from_dict(dict(copy.deepcopy(cpu_manifest), schema_version=0), source="b")
    with pytest.raises(BundleError, match="no schema_version"):
        Manifest.from_dict({k: v for k, v in cpu_manifest.items() if k != "schema_version"}, source="b")


def test_the_validator_is_the_types(cpu_manifest):
    assert SCHEMA is Manifest.CHECK
    assert validate(copy.deepcopy(cpu_manifest), source="b") == cpu_manifest


def test_writer_refuses_to_put_an_invalid_manifest_in_place(bundles, cpu_manifest, tmp_path):
    out = tmp_path / "out.edgekit"
    with BundleWriter(out) as writer:
        for name in cpu_manifest["files"]:
            shutil.copy(bundles["ort-fp32"] / name, writer.staging / name)
        bad = copy.deepcopy(cpu_manifest)
        bad["selftest"]["tolerance"] = 7
        with pytest.raises(BundleError, match="invalid manifest.*'selftest.tolerance'"):
            writer.commit(bad)
        assert not out.exists()
        typed = Manifest.from_dict(copy.deepcopy(cpu_manifest), source="b")
        writer.commit(typed)
    assert (out / MANIFEST).read_text(encoding="utf-8") == (bundles["ort-fp32"] / MANIFEST).read_text(encoding="utf-8")
    open_bundle(out).close()


# -- the JSON Schema
def test_shipped_schema_is_up_to_date():
    assert shipped_schema_text() == schema_text(), "run: python -m edgekit.bundle.schema"
    assert schema_main(["--check"]) == 0
    assert json.loads(shipped_schema_text()) == manifest_schema()


def test_schema_states_the_rules():
    schema = manifest_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["required"] == list(Manifest.required_keys())
    assert schema["properties"]["schema_version"] == {"type": "integer", "minimum": 1, "maximum": SCHEMA_VERSION}
    defs = schema["$defs"]
    assert defs["InputInfo"]["properties"]["dtype"] == {"enum": ["float32", "float16", "uint8", "int8"]}
    assert defs["Preprocess"]["additionalProperties"] is False
    assert defs["FileEntry"]["properties"]["sha256"]["pattern"] == "^[0-9a-f]{64}$"
    assert defs["Selftest"]["properties"]["tolerance"] == {"type": "number", "exclusiveMinimum": 0, "maximum": 0.5}


jsonschema = pytest.importorskip("jsonschema")


@pytest.fixture(scope="module")
def validator():
    schema = json.loads(shipped_schema_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_real_manifests_validate_against_the_schema(validator, texts):
    for name, text in texts.items():
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(json.loads(text))]
        assert errors == [], name


INVALID = [
    ("selftest.tolerance", lambda m: m["selftest"].update(tolerance=1e9)),
    ("input.shape", lambda m: m["input"].update(shape=[-1, 3, 0, 32])),
    ("input.dtype", lambda m: m["input"].update(dtype="object")),
    ("preprocess.extra", lambda m: m["preprocess"].update(extra=1)),
    ("preprocess.std", lambda m: m["preprocess"].update(std=[0, 1, 1])),
    ("files.../x", lambda m: m["files"].update({"../x": {"size": 1, "sha256": "0" * 64}})),
    ("files.manifest.json", lambda m: m["files"].update({"manifest.json": {"size": 1, "sha256": "0" * 64}})),
    ("backend.model_file", lambda m: m["backend"].update(model_file="/etc/passwd")),
    ("labels[0]", lambda m: m["labels"].__setitem__(0, 7)),
    ("schema version", lambda m: m.update(schema_version=SCHEMA_VERSION + 1)),
    ("selftest", lambda m: m.pop("selftest")),
    ("accuracy", lambda m: m.update(accuracy="high")),
]


@pytest.mark.parametrize("field, change", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_manifests_fail_the_schema_and_the_types(validator, cpu_manifest, field, change):
    data = copy.deepcopy(cpu_manifest)
    change(data)
    assert not validator.is_valid(data)
    with pytest.raises(BundleError, match=re.escape(field.split(".")[0].split("[")[0])):  # the field, or its object
        Manifest.from_dict(data, source="b")


# -- properties
@settings(max_examples=300, deadline=None)
@given(name=st.text(st.sampled_from("ab./\\:\x00é"), max_size=12) | st.text(max_size=8))
def test_the_schemas_name_pattern_is_safe_name(name):
    by_pattern = re.fullmatch(SAFE_NAME_PATTERN, name) is not None and len(name) <= MAX_NAME
    assert by_pattern == (safe_name(name) is None), name


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_from_dict_raises_only_bundle_errors_and_round_trips_what_it_accepts(texts, data):
    original = json.loads(texts[data.draw(st.sampled_from(sorted(texts)))])
    m = copy.deepcopy(original)
    for _ in range(data.draw(st.integers(1, 2))):
        path = data.draw(st.sampled_from([p for p in json_paths(m) if p]))  # not the root
        parent = m
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and data.draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(json_values)
    try:
        typed = Manifest.from_dict(copy.deepcopy(m), source="b")
    except BundleError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("b: ")
        return
    assert typed.to_dict() == m
