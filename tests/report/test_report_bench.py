"""edgekit bench: the measurements, the JSON schema, static-shape bundles, and no torch on the device."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import pytest
from support import run_cli, write_images


@pytest.fixture(scope="module")
def fp32_bundle(tmp_path_factory, tiny_onnx, small_val):
    out = tmp_path_factory.mktemp("bench") / "tiny.edgekit"
    proc = run_cli("compile", str(tiny_onnx), "--target", "cpu", "--precision", "fp32", "--val", str(small_val),
                   "-o", str(out), "-q")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.slow
def test_bench_json_reports_every_measurement(fp32_bundle):
    proc = run_cli("bench", str(fp32_bundle), "--json", "--runs", "40", "--batch-sizes", "1,8")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["schema"] == "edgekit.bench" and r["schema_version"] == 1
    manifest = json.loads((fp32_bundle / "manifest.json").read_text())
    assert r["bundle"]["model_sha256"] == manifest["model"]["source"]["sha256"]
    assert r["bundle"]["target"] == "cpu" and r["bundle"]["precision"] == "fp32" and len(r["bundle"]["hash"]) == 64
    lat = r["latency"]
    assert lat["runs"] == 40 and r["settings"]["runs"] == 40  # a fixed count was asked for
    assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] and lat["mean_ms"] > 0
    assert [t["batch"] for t in r["throughput"]] == [1, 8]
    assert all(t["images_per_s"] > 0 and t["runs"] >= 3 for t in r["throughput"])
    assert r["decode"]["p50_ms"] > 0 and r["preprocess"]["p50_ms"] > 0 and r["end_to_end"]["p50_ms"] > 0
    assert "synthetic 640x480 JPEG" in r["settings"]["image"]
    assert r["memory"]["peak_rss_mb"] >= r["memory"]["rss_after_load_mb"] > 0
    assert r["cpu"]["percent_of_one_core"] > 0 and r["cpu"]["usable_cores"] >= 1
    assert r["machine"]["summary"] and r["machine"]["arch"]
    assert r["software"]["runtime"]["backend"] == "onnxruntime" and r["software"]["runtime"]["backend_version"]
    assert "passed" in r["selftest"] and r["accuracy"] is None
    assert "bench:" in proc.stderr  # progress on stderr, JSON alone on stdout


@pytest.mark.slow
def test_bench_measures_accuracy_on_the_device_and_takes_a_given_image(fp32_bundle, small_val, tmp_path):
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), cv2.imread(str(next((small_val / "cat").iterdir()))))
    proc = run_cli("bench", str(fp32_bundle), "--seconds", "0.2", "--batch-sizes", "1", "--image", str(image),
                   "--val", str(small_val))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "accuracy:     top-1" in proc.stdout and "on 200 images" in proc.stdout
    assert "frame.png" in proc.stdout and "throughput:   batch   1:" in proc.stdout
    zebra = write_images(tmp_path / "zebra", 1, classes=("zebra",))
    proc = run_cli("bench", str(fp32_bundle), "--runs", "5", "--val", str(zebra))
    assert proc.returncode == 1 and "not among the bundle's labels (zebra)" in proc.stderr
    assert "batch-1 latency" not in proc.stderr  # refused before measuring


@pytest.mark.slow
def test_a_static_shape_bundle_is_measured_at_its_own_batch_only(tmp_path, tiny_onnx, sample_calib):
    out = tmp_path / "npu.edgekit"
    proc = run_cli("compile", str(tiny_onnx), "--target", "intel-npu", "--precision", "fp16", "-o", str(out), "-q")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("bench", str(out), "--json", "-q", "--runs", "20", "--device", "CPU")
    assert proc.returncode == 0, proc.stderr
    assert [t["batch"] for t in json.loads(proc.stdout)["throughput"]] == [1]
    proc = run_cli("bench", str(out), "--runs", "20", "--device", "CPU", "--batch-sizes", "1,4")
    assert proc.returncode == 2 and "takes batches of exactly 1" in proc.stderr


@pytest.mark.slow
def test_bench_needs_no_torch_onnx_or_nncf(fp32_bundle):
    code = (
        "import sys\n"
        "from edgekit.measure.bench import BenchOptions, bench_bundle\n"
        f"r = bench_bundle({str(fp32_bundle)!r}, options=BenchOptions(runs=10, batch_sizes=(1,)))\n"
        "assert r['latency']['runs'] == 10\n"
        "heavy = sorted(m for m in ('torch', 'onnx', 'nncf', 'openvino') if m in sys.modules)\n"
        "print(heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [(["--seconds", "0"], "must be positive"), (["--runs", "0"], "must be at least 1"),
     (["--image", "/nonexistent.jpg"], "does not exist")],
)  # fmt: skip
def test_bench_bad_flags_are_usage_errors(fp32_bundle, args, message):
    proc = run_cli("bench", str(fp32_bundle), *args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
