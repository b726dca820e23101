"""One suite, every built-in backend: the contract of ``edgekit.backends.base.Backend``, black box.

Each backend compiles the tiny model at every precision its target has, through ``compile_model`` (the
whole pipeline) and through ``Backend.compile`` (the contract alone); its bundles are checked, loaded and run
here, where TensorRT runs through its simulator (the machine has no TensorRT or NVIDIA GPU). A new built-in
backend joins by adding its target to ``TARGETS``; ``test_every_built_in_backend_is_in_the_suite`` insists.
"""

from __future__ import annotations

import dataclasses
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import CIFAR_SPEC, LABELS, SAMPLE

import edgekit
from edgekit import registry
from edgekit import spec as specs
from edgekit.backends.base import CompileInput, MeasureSite, Runtime
from edgekit.bundle import open_bundle
from edgekit.bundle.manifest import named_files
from edgekit.errors import DependencyError, UsageError
from edgekit.frontends import load_model
from edgekit.imagesets import load_calibration, load_labelled
from edgekit.runtime import load_bundle, selftest
from edgekit.targets import PRECISIONS, get_target, list_targets

TARGETS = {"onnxruntime": "cpu", "openvino": "intel-cpu", "tensorrt": "jetson-orin-nano"}  # a shipped target each
# Top-1 agreement with the FP32 source model that each precision keeps on the tiny model's 40 images, in %
# (measured here: fp32 100 everywhere, fp16 97.5-100, int8 95-100).
MIN_AGREEMENT = {"fp32": 97.5, "fp16": 90.0, "int8": 80.0}
CASES = [(b, p) for b, t in TARGETS.items() for p in PRECISIONS if get_target(t).supports(p)]
CALIB_SIZE = 32
PER_CLASS = 4  # validation images a class: 40 in all


def test_every_built_in_backend_is_in_the_suite():
    assert set(TARGETS) == set(registry.BUILTINS)
    assert {get_target(t).backend for t in TARGETS.values()} == set(TARGETS)


@pytest.fixture(scope="module")
def val(tmp_path_factory):
    root = tmp_path_factory.mktemp("conformance-val")
    for label in LABELS:
        (root / label).mkdir()
        for src in sorted((SAMPLE / "test" / label).iterdir())[:PER_CLASS]:
            shutil.copy(src, root / label / src.name)
    return root


@pytest.fixture(scope="module")
def bundles(tiny_onnx, val, tmp_path_factory):
    """compile(backend_id, precision) -> the CompiledBundle, compiled once per module."""
    built = {}
    out = tmp_path_factory.mktemp("conformance")

    def compile(backend_id: str, precision: str):
        if (backend_id, precision) not in built:
            built[backend_id, precision] = edgekit.compile_model(
                tiny_onnx, target=TARGETS[backend_id], precision=precision, output=out / f"{backend_id}-{precision}",
                spec=dict(CIFAR_SPEC), labels=LABELS, calib=SAMPLE / "calib", calib_size=CALIB_SIZE, val=val,
            )  # fmt: skip
        return built[backend_id, precision]

    return compile


@pytest.fixture(scope="module")
def loaded(tiny_onnx):
    model = load_model(tiny_onnx)
    overrides = {"name": "tiny", "input": {}, "preprocess": dict(CIFAR_SPEC["preprocess"]), "labels": LABELS}
    return model, specs.build_spec(model_input=model.input, overrides=overrides)


def _site(backend_id: str) -> MeasureSite:
    """Where this machine runs the backend's bundles, with the host described as compile_model describes it."""
    from edgekit.measure.machine import cpu_model, usable_cores

    host = f"{platform.machine()} host ({cpu_model()}, {usable_cores()} cores)"
    return registry.backend(backend_id).measure_here(get_target(TARGETS[backend_id]), host, lambda _m: None)


def _runtime_here(backend_id: str) -> type[Runtime]:
    """The runtime that runs this backend's bundles on this machine: its own, or its simulator."""
    backend = registry.backend(backend_id)
    simulator = None if _site(backend_id).on_target else backend.simulator()
    return simulator or backend.runtime_class()


# -- the class itself
@pytest.mark.parametrize("backend_id", TARGETS)
def test_the_class_answers_every_question_with_the_right_type(backend_id):
    backend = registry.backend(backend_id)
    assert backend.id == backend_id
    assert issubclass(backend.runtime_class(), Runtime)
    assert backend.simulator() is None or issubclass(backend.simulator(), Runtime)
    assert all(isinstance(p, str) and p for p in backend.packages)
    assert isinstance(backend.simulation_note("int8"), str)
    if not backend.builds_engines:
        with pytest.raises(UsageError, match=f"backend {backend_id} builds no engine ahead of time"):
            backend.build_engine(Path("b"), {}, cache_dir=None, rebuild=False)


@pytest.mark.slow
def test_finding_every_backend_and_its_runtime_class_imports_no_vendor_package_or_torch():
    code = (
        "import sys\nfrom edgekit import registry\n"
        "for backend_id in registry.backend_ids():\n"
        "    backend = registry.backend(backend_id); backend.runtime_class(); backend.options_type()\n"
        "heavy = ('torch', 'onnx', 'onnxruntime', 'openvino', 'nncf', 'tensorrt', 'edgekit.quantize')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == ""


@pytest.mark.parametrize("backend_id", TARGETS)
def test_measure_here_is_a_typed_site(backend_id):
    site = _site(backend_id)
    assert isinstance(site, MeasureSite) and isinstance(site.on_target, bool)
    assert site.device is None or isinstance(site.device, str)
    assert isinstance(site.description, str) and site.description
    if not site.on_target:  # off its device a backend runs on a stand-in: its simulator, or a stand-in device
        assert registry.backend(backend_id).simulator() is not None or site.device or "standing in" in site.description


@pytest.mark.parametrize("backend_id", TARGETS)
def test_higher_precision_is_a_precision_of_every_target_of_the_backend(backend_id):
    backend = registry.backend(backend_id)
    targets = [t for t in list_targets() if t.backend == backend_id]
    assert targets
    for target in targets:
        assert backend.higher_precision.split()[0] in target.precisions, target.name


@pytest.mark.parametrize("backend_id", TARGETS)
def test_options_are_a_frozen_dataclass_every_shipped_target_builds(backend_id):
    backend = registry.backend(backend_id)
    defaults = backend.options_type()
    assert dataclasses.is_dataclass(defaults) and backend.options_type.__dataclass_params__.frozen
    assert backend.parse_options({}, source="t.toml") == defaults
    for target in (t for t in list_targets() if t.backend == backend_id):
        assert isinstance(backend.parse_options(target.backend_options, source=target.name), backend.options_type)
    with pytest.raises(UsageError, match=f"t.toml: unknown key 'backend_options.nope' for backend {backend_id}"):
        backend.parse_options({"nope": 1}, source="t.toml")


# -- compile through the contract alone
@pytest.mark.parametrize("backend_id", TARGETS)
def test_quantizable_layers_are_names_compile_keeps_in_higher_precision(backend_id, loaded, tmp_path):
    backend, target = registry.backend(backend_id), get_target(TARGETS[backend_id])
    model, spec = loaded
    layers = backend.quantizable_layers(model.onnx, spec=spec, target=target)
    assert len(layers) >= 3 and all(isinstance(name, str) for name in layers)
    keep = (layers[0], layers[-1])
    result = backend.compile(
        CompileInput(
            model=model.onnx, spec=spec, target=target, precision="int8", staging=tmp_path,
            calibration=load_calibration(SAMPLE / "calib", spec, size=16), calibration_method=target.calibration_method,
            calibration_percentile=99.999, keep_in_higher_precision=keep,
        )
    )  # fmt: skip
    assert result.quantization["layers_kept_in_higher_precision"] == sorted(keep)
    assert result.model_file in result.files
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(result.files)


def test_an_int8_compile_input_without_calibration_is_refused(loaded, tmp_path):
    model, spec = loaded
    with pytest.raises(ValueError, match="int8 CompileInput needs calibration"):
        CompileInput(model=model.onnx, spec=spec, target=get_target("cpu"), precision="int8", staging=tmp_path)


# -- the bundles compile_model builds
@pytest.mark.parametrize(("backend_id", "precision"), CASES)
def test_the_bundle_lists_every_file_it_holds_and_the_manifest_names_them(bundles, backend_id, precision):
    compiled = bundles(backend_id, precision)
    files = compiled.manifest["files"]
    assert sorted(p.name for p in compiled.path.iterdir()) == sorted([*files, "manifest.json"])
    named = named_files(compiled.manifest)
    assert {name for _, name in named} <= set(files)
    assert len(named) >= 2 + len(registry.backend(backend_id).named_files(compiled.manifest))
    assert compiled.manifest["backend"]["name"] == compiled.manifest["target"]["backend"] == backend_id


@pytest.mark.parametrize(("backend_id", "precision"), CASES)
def test_the_bundle_runs_here_passes_its_self_test_and_agrees_with_fp32(bundles, backend_id, precision, loaded, val):
    compiled = bundles(backend_id, precision)
    accuracy = compiled.manifest["accuracy"]
    assert accuracy["measured_with"] == _site(backend_id).description
    assert bool(accuracy.get("simulated")) == (registry.backend(backend_id).simulator() is not None)
    assert accuracy["agreement_with_fp32"] >= MIN_AGREEMENT[precision]
    model, spec = loaded
    images = load_labelled(val, spec, LABELS).tensors
    opened = open_bundle(compiled.path)
    runtime = _runtime_here(backend_id)(opened.root, opened.manifest, device=_site(backend_id).device)
    try:
        check = selftest.run(runtime.infer, opened.root, opened.manifest["selftest"],
                             tuple(opened.manifest["input"]["shape"]), source=str(compiled.path))  # fmt: skip
        assert check.passed, check.describe()
        out = np.concatenate([runtime.infer(images[i : i + 1]) for i in range(len(images))])
    finally:
        runtime.close()
        opened.close()
    from edgekit.backends.onnxruntime.runtime import make_session

    reference = make_session(model.onnx.SerializeToString())
    ref = reference.run(None, {spec.input.name: images})[0]
    agreement = 100.0 * float(np.mean(out.argmax(1) == ref.argmax(1)))
    assert agreement >= MIN_AGREEMENT[precision], agreement


@pytest.mark.parametrize("backend_id", TARGETS)
def test_load_bundle_predicts_or_names_what_is_missing(bundles, backend_id):
    compiled = bundles(backend_id, "fp32")
    if _runtime_here(backend_id) is registry.backend(backend_id).runtime_class():
        with load_bundle(compiled.path, device=_site(backend_id).device) as bundle:
            result = bundle.predict(SAMPLE / "test" / "cat" / "0000.jpg").to_dict()
        assert result["label"] in LABELS
    else:  # the device's runtime is absent here: loading says so in one line
        with pytest.raises(DependencyError, match="is not installed here"):
            load_bundle(compiled.path)
