"""One conformance class, bound to each backend that runs here: every precision compiles to a bundle
that verifies, passes its self-test and reproduces the FP32 model within its precision's tolerance."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from support import CIFAR_SPEC, SAMPLE

import edgekit

TEST_IMAGE = SAMPLE / "test" / "cat" / "0000.jpg"


@pytest.fixture(scope="module")
def bundles(tiny_onnx, small_val, tmp_path_factory):
    """Lazily compiled bundles, one per (target, precision), shared by the module's tests."""
    out = tmp_path_factory.mktemp("bundles")
    cache: dict[tuple[str, str], edgekit.CompiledBundle] = {}

    def get(target: str, precision: str):
        if (target, precision) not in cache:
            cache[(target, precision)] = edgekit.compile_model(
                tiny_onnx, target=target, precision=precision, output=out / f"{target}-{precision}",
                spec=CIFAR_SPEC, calib=SAMPLE / "calib", calib_size=64, val=small_val,
            )  # fmt: skip
        return cache[(target, precision)]

    return get


def _reference(tiny_onnx, x):
    sess = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


class BackendConformance:
    target = ""

    @pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
    def test_bundle_verifies_and_matches_fp32(self, bundles, tiny_onnx, precision):
        compiled = bundles(self.target, precision)
        m = compiled.manifest
        assert m["precision"]["requested"] == precision
        assert m["accuracy"]["dataset"]["images"] == 200
        assert m["selftest"]["inputs"] == 4
        with edgekit.load_bundle(compiled.path) as bundle:
            assert bundle.selftest_result.passed
            x = np.stack([bundle.preprocess(TEST_IMAGE)] * 3)
            out = bundle.infer(x)
        ref = _reference(tiny_onnx, x)
        spread = ref.max() - ref.min()
        tol = {"fp32": 1e-4, "fp16": 0.02, "int8": 0.15}[precision]
        assert np.abs(out - ref).max() / spread < tol
        assert (
            m["accuracy"]["agreement_with_fp32"] >= {"fp32": 99.9, "fp16": 97.0, "int8": 60.0}[precision]
        )  # an untrained net: small margins

    def test_int8_records_quantization_provenance(self, bundles):
        m = bundles(self.target, "int8").manifest
        q = m["quantization"]
        assert q["calibration"]["images"] == 64 and len(q["calibration"]["sha256"]) == 64
        assert q["weights"] == "int8 per-channel symmetric"
        assert q["layers_kept_in_higher_precision"] == []

    def test_int8_graph_is_really_quantized(self, bundles):
        compiled = bundles(self.target, "int8")
        text = b"".join(p.read_bytes() for p in compiled.path.iterdir() if p.suffix in (".onnx", ".xml"))
        assert b"QuantizeLinear" in text or b"FakeQuantize" in text


class TestONNXRuntime(BackendConformance):
    target = "cpu"

    def test_fp32_records_fp32(self, bundles):
        assert bundles("cpu", "fp32").manifest["precision"]["inference"] == "fp32"

    def test_int8_recipe_is_unsigned_activations_per_channel_weights(self, bundles):
        import onnx

        q = bundles("cpu", "int8").manifest["quantization"]
        assert q["recipe"] == "ort-qdq-u8s8-per-channel"
        model = onnx.load(str(bundles("cpu", "int8").path / "model.onnx"))
        inits = {i.name: i for i in model.graph.initializer}
        zp_types = {inits[n.input[2]].data_type for n in model.graph.node if n.op_type == "QuantizeLinear"}
        assert zp_types == {onnx.TensorProto.UINT8}


class TestOpenVINO(BackendConformance):
    target = "intel-cpu"

    def test_fp32_means_fp32(self, bundles):
        m = bundles("intel-cpu", "fp32").manifest
        assert m["backend"]["precision_hint"] == "f32"
        assert m["precision"]["inference"] == "f32"
        with edgekit.load_bundle(bundles("intel-cpu", "fp32").path) as bundle:
            assert bundle.describe()["inference_precision"] == "f32"

    def test_fp16_records_what_the_plugin_really_runs(self, bundles):
        import openvino as ov

        m = bundles("intel-cpu", "fp16").manifest
        compiled = ov.Core().compile_model(
            str(bundles("intel-cpu", "fp16").path / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f16"}
        )
        actual = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        assert m["precision"]["inference"] == actual


def test_absent_device_compiles_and_says_latency_not_measured(tiny_onnx, small_val, tmp_path):
    compiled = edgekit.compile_model(
        tiny_onnx, target="intel-npu", precision="fp16", output=tmp_path / "npu", spec=CIFAR_SPEC, val=small_val
    )
    m = compiled.manifest
    assert m["latency"]["measured"] is False and "not present" in m["latency"]["note"]
    assert m["input"]["shape"][0] == 1 and m["input"]["dynamic_batch"] is False  # NPU: static shapes
    assert "standing in for NPU" in m["accuracy"]["measured_with"]
    assert any("latency is not measured" in w for w in compiled.warnings)
    with edgekit.load_bundle(compiled.path, device="CPU") as bundle:
        assert bundle.predict(TEST_IMAGE).label in bundle.labels


def test_raspberry_pi_bundle_is_built_but_not_timed_here(tiny_onnx, tmp_path):
    m = edgekit.compile_model(
        tiny_onnx, target="raspberry-pi-5", precision="int8", output=tmp_path / "rpi", spec=CIFAR_SPEC,
        calib=SAMPLE / "calib", calib_size=32,
    ).manifest  # fmt: skip
    assert m["target"]["arch"] == "aarch64" and m["latency"]["measured"] is False
    assert m["selftest"]["source"] == "calibration images"


def test_packed_bundle_round_trip(tiny_onnx, tmp_path):
    out = tmp_path / "model.edgekit"
    edgekit.compile_model(tiny_onnx, target="cpu", precision="fp32", output=out, spec=CIFAR_SPEC, pack=True)
    assert out.is_file()
    with edgekit.load_bundle(out) as bundle:
        assert bundle.predict(TEST_IMAGE, top_k=3).top[0][1] > 0
        assert json.loads(json.dumps(bundle.manifest))["schema_version"] == 1


@pytest.mark.slow  # more than 15 s on 2 cores
@pytest.mark.parametrize("target", ["cpu", "jetson-orin-nano"])
def test_each_calibration_method_and_percentile_changes_the_scales(tiny_onnx, tmp_path, target):
    import onnx
    from onnx import numpy_helper

    def scales(method: str, percentile: float = 99.999) -> dict[str, float]:
        m = edgekit.compile_model(
            tiny_onnx, target=target, precision="int8", output=tmp_path / f"{method}-{percentile}", spec=CIFAR_SPEC,
            calib=SAMPLE / "calib", calib_size=64, calibration_method=method, calibration_percentile=percentile,
        )  # fmt: skip
        q = m.manifest["quantization"]
        assert q["calibration_method"] == method and q.get("percentile", percentile) == percentile
        model = onnx.load(str(m.path / "model.onnx"))
        inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node if n.op_type == "QuantizeLinear"}

    minmax, p99999, p99 = scales("minmax"), scales("percentile"), scales("percentile", 99.0)
    for other in (scales("entropy"), scales("mse"), p99999, p99):
        assert set(other) == set(minmax) and other != minmax
    assert p99 != p99999


@pytest.mark.slow  # more than 15 s on 2 cores
def test_each_openvino_calibration_method_changes_the_ranges(tiny_onnx, tmp_path):
    """NNCF's range estimators behind --calib-method on intel-cpu: each gives other FakeQuantize ranges."""
    import openvino as ov

    def ranges(method: str, percentile: float = 99.999) -> list[float]:
        m = edgekit.compile_model(
            tiny_onnx, target="intel-cpu", precision="int8", output=tmp_path / f"{method}-{percentile}",
            spec=CIFAR_SPEC, calib=SAMPLE / "calib", calib_size=64, calibration_method=method,
            calibration_percentile=percentile,
        )  # fmt: skip
        assert m.manifest["quantization"]["calibration_method"] == method
        model = ov.Core().read_model(str(m.path / "model.xml"))
        found = []
        for op in model.get_ordered_ops():
            if op.get_type_name() == "FakeQuantize":
                high = op.input_value(2).get_node()
                if high.get_type_name() == "Constant" and high.get_byte_size() == 4:  # per-tensor: activations
                    found.append(float(high.get_data().reshape(-1)[0]))
        assert found
        return found

    default = ranges("mean-minmax")
    others = [ranges("minmax"), ranges("percentile", 99.0), ranges("mse")]
    for other in others:
        assert len(other) == len(default) and other != default
    assert len({tuple(o) for o in others}) == 3


def test_openvino_refuses_entropy_with_the_methods_it_offers(tiny_onnx, tmp_path):
    from edgekit.errors import UsageError

    with pytest.raises(UsageError, match="not offered for OpenVINO.*minmax, mean-minmax, percentile, mse"):
        edgekit.compile_model(tiny_onnx, target="intel-cpu", precision="int8", output=tmp_path / "e",
                              spec=CIFAR_SPEC, calib=SAMPLE / "calib", calib_size=16, calibration_method="entropy")  # fmt: skip
