"""On a Jetson (or any NVIDIA GPU with TensorRT): build the engine, cache it, self-test, agree with FP32, time it.

Skipped wherever TensorRT or an NVIDIA GPU is absent, which is every machine this project is built and
tested on: these tests have NOT run yet. How a Jetson owner runs them: docs/tensorrt.md, in short

    EDGEKIT_GPU_TARGET=jetson-orin-nano .venv/bin/pytest tests/gpu -m gpu -s

The model is the reference ResNet-style net (examples/models/resnet; EDGEKIT_GPU_MODEL points elsewhere),
compiled here for fp32, fp16 and int8; the data is the committed CIFAR-10 sample.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from edgekit.backends.tensorrt.runtime import gpu_available

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "examples" / "data" / "cifar10"
MODEL = Path(os.environ.get("EDGEKIT_GPU_MODEL", ROOT / "examples" / "models" / "resnet" / "model.onnx"))
TARGET = os.environ.get("EDGEKIT_GPU_TARGET", "jetson-orin-nano")
AGREEMENT = {"fp32": 99.5, "fp16": 99.0, "int8": 97.0}  # top-1 agreement with ONNX Runtime FP32, in %

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpu_available(), reason="needs TensorRT, cuda-python and an NVIDIA GPU (a Jetson)"),
]


@pytest.fixture(scope="module", params=["fp32", "fp16", "int8"])
def bundle(request, tmp_path_factory):
    from edgekit.pipeline import compile_model
    from edgekit.targets import get_target

    precision = request.param
    if not get_target(TARGET).supports(precision):
        pytest.skip(f"{TARGET} has no {precision}")
    out = tmp_path_factory.mktemp(f"trt-{precision}") / "bundle"
    return compile_model(
        MODEL, spec=MODEL.with_name("model.toml"), target=TARGET, precision=precision, output=out,
        calib=DATA / "calib", calib_size=300, val=DATA / "test",
    )  # fmt: skip


def runtime(path: Path, cache: Path, **kw):
    from edgekit.backends.tensorrt.runtime import TensorRTRuntime
    from edgekit.bundle import open_bundle

    opened = open_bundle(path)
    return TensorRTRuntime(opened.root, opened.manifest, cache_dir=cache, **kw)


def test_engine_is_built_once_then_reused(bundle, tmp_path):
    first = runtime(bundle.path, tmp_path)
    assert first.cache_status == "built" and first.engine_path.is_file()
    first.close()
    again = runtime(bundle.path, tmp_path)
    assert again.cache_status == "reused"
    again.close()


def test_corrupt_or_foreign_entries_are_rebuilt(bundle, tmp_path):
    rt = runtime(bundle.path, tmp_path)
    path = rt.engine_path
    rt.close()
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    rt = runtime(bundle.path, tmp_path)
    assert rt.cache_status == "rebuilt: the cached engine is corrupt (size or checksum mismatch)"
    rt.close()
    magic, header, payload = path.read_bytes().split(b"\n", 2)
    meta = json.loads(header)
    meta["key"]["tensorrt_version"] = "0.0.0"  # as if built before a JetPack upgrade
    path.write_bytes(magic + b"\n" + json.dumps(meta).encode() + b"\n" + payload)
    rt = runtime(bundle.path, tmp_path)
    assert rt.cache_status == "rebuilt: the cached engine was built for another tensorrt version (0.0.0)"
    rt.close()
    rt = runtime(bundle.path, tmp_path, rebuild=True)
    assert rt.cache_status == "rebuilt: a rebuild was asked for"
    rt.close()


def test_load_bundle_runs_the_selftest_on_the_engine(bundle, tmp_path, monkeypatch):
    from edgekit.runtime import load_bundle

    monkeypatch.setenv("EDGEKIT_ENGINE_CACHE", str(tmp_path))
    with load_bundle(bundle.path) as loaded:
        assert loaded.selftest_result.passed, loaded.selftest_result.describe()
        assert loaded.describe()["backend"] == "tensorrt"


def test_top1_agrees_with_onnx_runtime_fp32(bundle, tmp_path, monkeypatch, record_property):
    from edgekit.backends.onnxruntime.runtime import make_session
    from edgekit.imagesets import load_labelled
    from edgekit.runtime import load_bundle
    from edgekit.spec import ModelSpec

    monkeypatch.setenv("EDGEKIT_ENGINE_CACHE", str(tmp_path))
    with load_bundle(bundle.path) as loaded:
        m = loaded.manifest
        spec = ModelSpec(name=m["model"]["name"], input=loaded.input, preprocess=loaded.preprocess_spec,
                         labels=tuple(m["labels"]))  # fmt: skip
        test = load_labelled(DATA / "test", spec, spec.labels)
        ours = np.concatenate([loaded.infer(test.tensors[i : i + 8]) for i in range(0, len(test.tensors), 8)])
    reference = make_session(str(MODEL))
    name = reference.get_inputs()[0].name
    fp32 = np.concatenate(
        [reference.run(None, {name: test.tensors[i : i + 64]})[0] for i in range(0, len(test.tensors), 64)]
    )
    agreement = 100.0 * float((ours.argmax(1) == fp32.argmax(1)).mean())
    precision = m["precision"]["requested"]
    record_property(f"top1_agreement_{precision}", agreement)
    print(f"\n{TARGET} {precision}: top-1 agreement with ONNX Runtime FP32 {agreement:.2f}% on {len(fp32)} images")
    assert agreement >= AGREEMENT[precision]


def test_latency_is_measured_per_precision(bundle, tmp_path, monkeypatch, record_property):
    """Recorded and printed, not asserted: speed claims live in bench/ (see docs/tensorrt.md)."""
    from edgekit.measure.latency import measure
    from edgekit.runtime import load_bundle

    monkeypatch.setenv("EDGEKIT_ENGINE_CACHE", str(tmp_path))
    with load_bundle(bundle.path) as loaded:
        x = np.zeros((1, *loaded.input.shape[1:]), np.float32)
        stats = measure(lambda: loaded.infer(x), warmup=50, min_runs=200, seconds=3.0)
    precision = bundle.manifest["precision"]["requested"]
    record_property(f"latency_{precision}_p50_ms", stats["p50_ms"])
    print(f"\n{TARGET} {precision}: batch 1 p50 {stats['p50_ms']:.3f} ms, p90 {stats['p90_ms']:.3f} ms")
    assert stats["p50_ms"] > 0
