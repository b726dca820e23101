"""Runtime settings tuned on the device (issue 14): the compile for a target that is this machine, and
``edgekit.tune`` (``edgekit bench --tune``) on an existing bundle, time the backend's knobs and the daemon's
batch and record the best in the manifest; the runtime applies them unless overridden; off-target bundles
record none. No assertion on which setting wins (timings vary): the record must be consistent."""

from __future__ import annotations

import json
import os
import shutil
import statistics
from pathlib import Path

import pytest
from support import CIFAR_SPEC, LABELS, run_cli

import edgekit
from edgekit.bundle import open_bundle
from edgekit.bundle.types import Manifest
from edgekit.errors import BundleError, UsageError
from edgekit.runtime import settings as rs


@pytest.fixture(scope="module", autouse=True)
def tuning_on():
    """The suite turns tuning off (tests/conftest.py); these tests are about it."""
    before = os.environ.get("EDGEKIT_TUNE")
    os.environ["EDGEKIT_TUNE"] = "1"
    yield
    if before is None:
        os.environ.pop("EDGEKIT_TUNE", None)
    else:
        os.environ["EDGEKIT_TUNE"] = before


def compile_tiny(tiny_onnx: Path, target: str, out: Path, **extra) -> Path:
    edgekit.compile_model(tiny_onnx, target=target, precision="fp32", output=out, spec=dict(CIFAR_SPEC),
                          labels=LABELS, **extra)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def cpu_bundle(tiny_onnx, tmp_path_factory) -> Path:
    return compile_tiny(tiny_onnx, "cpu", tmp_path_factory.mktemp("rs-cpu") / "cpu.edgekit")


@pytest.fixture(scope="module")
def ov_bundle(tiny_onnx, tmp_path_factory) -> Path:
    return compile_tiny(tiny_onnx, "intel-cpu", tmp_path_factory.mktemp("rs-ov") / "ov.edgekit")


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def assert_consistent(record: dict, keys: tuple[str, ...]) -> None:
    """The chosen knobs are a candidate's; they beat the default (a figure lower by more than the noise margin
    and faster in enough paired rounds) and are the fastest that do, or they are the default and none did; each
    figure is the median of its rounds; the same for the batch (of those that beat batch 1 per frame, the
    smallest within the margin of the fastest of them; else 1)."""
    from edgekit.measure.tune import rounds_won

    how, margin, need = record["how"], record["how"]["noise_margin"], record["how"]["min_rounds_won"]
    candidates = how["candidates"]
    assert candidates[0]["settings"] == {} and len(candidates) >= 2
    chosen = {k: v for k, v in record.items() if k not in ("how", "batch")}
    assert set(chosen) <= set(keys)
    assert chosen in [c["settings"] for c in candidates]
    timed = [c for c in candidates if c["p50_ms"] is not None]
    default = candidates[0]
    for c in timed:
        assert set(c["settings"]) <= set(keys)
        assert len(c["rounds_ms"]) == how["rounds"] and c["runs"] >= how["rounds"]
        assert c["p50_ms"] == pytest.approx(statistics.median(c["rounds_ms"]), abs=1e-3)
        assert c["rounds_won"] == rounds_won(c["rounds_ms"], default["rounds_ms"])

    def beats(figure: float, won: int, reference: float) -> bool:
        return figure * (1 + margin) < reference and won >= need

    winners = [c for c in timed[1:] if beats(c["p50_ms"], c["rounds_won"], default["p50_ms"])]
    if chosen:
        (mine,) = [c for c in candidates if c["settings"] == chosen]
        assert mine in winners and mine["p50_ms"] == min(c["p50_ms"] for c in winners)
    else:
        assert winners == []
    rows = how.get("batch_candidates")
    if rows is None:
        assert "batch" not in record
        return
    assert [r["batch"] for r in rows] == [1, 2, 4, 8] and record["batch"] in (1, 2, 4, 8)
    for r in rows:
        assert r["ms_per_frame"] == pytest.approx(statistics.median(r["rounds_ms"]) / r["batch"], abs=1e-3)
    one = rows[0]["ms_per_frame"]
    good = [r for r in rows[1:] if beats(r["ms_per_frame"], r["rounds_won"], one)]
    if record["batch"] == 1:
        assert good == []
    else:
        best = min(r["ms_per_frame"] for r in good)
        assert record["batch"] == min(r["batch"] for r in good if r["ms_per_frame"] <= best * (1 + margin))


# -- the compile on the target records them


def test_a_cpu_compile_records_settings_with_every_candidate(cpu_bundle: Path) -> None:
    record = manifest_of(cpu_bundle)["runtime_settings"]
    how = record["how"]
    assert how["by"] == "edgekit compile" and how["device"] == "CPU" and how["backend"].startswith("onnxruntime ")
    assert "usable core" in how["measured_on"] and how["edgekit"] == edgekit.__version__
    assert {"threads": 1} in [c["settings"] for c in how["candidates"]]
    assert 0 < how["seconds"] < 60
    assert_consistent(record, ("threads", "inter_op_threads"))


def test_an_openvino_compile_records_settings_with_every_candidate(ov_bundle: Path) -> None:
    record = manifest_of(ov_bundle)["runtime_settings"]
    assert record["how"]["backend"].startswith("openvino ")
    assert {"performance_hint": "THROUGHPUT"} in [c["settings"] for c in record["how"]["candidates"]]
    assert_consistent(record, ("threads", "streams", "performance_hint"))


def test_the_runtime_applies_the_recorded_settings(cpu_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "b.edgekit"
    shutil.copytree(cpu_bundle, copy)
    data = manifest_of(copy)
    record = data["runtime_settings"]
    for key in ("threads", "inter_op_threads"):
        record.pop(key, None)
    record.update(threads=1, batch=4)  # a record as a tuning may write it: one thread, batch 4
    (copy / "manifest.json").write_text(json.dumps(data))
    with edgekit.load_bundle(copy) as bundle:
        assert bundle.settings == {"threads": 1, "batch": 4} and bundle.batch_size == 4
        assert bundle.runtime_settings.source == {"threads": "bundle", "batch": "bundle"}
        assert bundle.runtime.session.get_session_options().intra_op_num_threads == 1
        assert bundle.runtime.applied_settings()["threads"] == 1


def test_the_openvino_runtime_applies_the_recorded_settings(ov_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "b.edgekit"
    shutil.copytree(ov_bundle, copy)
    data = manifest_of(copy)
    record = data["runtime_settings"]
    for key in ("threads", "streams", "performance_hint"):
        record.pop(key, None)
    record.update(threads=1, streams=1)
    (copy / "manifest.json").write_text(json.dumps(data))
    with edgekit.load_bundle(copy) as bundle:
        assert bundle.runtime.compiled.get_property("INFERENCE_NUM_THREADS") == 1
        assert bundle.runtime.compiled.get_property("NUM_STREAMS") == 1
    with edgekit.load_bundle(copy, settings={"threads": 2, "performance_hint": "THROUGHPUT"}) as bundle:
        assert bundle.runtime.compiled.get_property("INFERENCE_NUM_THREADS") == 2
        assert str(bundle.runtime.compiled.get_property("PERFORMANCE_HINT")).endswith("THROUGHPUT")
        assert bundle.settings["threads"] == 2 and bundle.runtime_settings.source["performance_hint"] == "keyword"


def test_an_override_wins_keyword_over_environment_over_the_bundle(cpu_bundle, tmp_path, monkeypatch) -> None:
    copy = tmp_path / "b.edgekit"
    shutil.copytree(cpu_bundle, copy)
    data = manifest_of(copy)
    data["runtime_settings"].pop("inter_op_threads", None)
    data["runtime_settings"].update(threads=1, batch=2)
    (copy / "manifest.json").write_text(json.dumps(data))

    def threads(**kw) -> tuple[int, dict]:
        with edgekit.load_bundle(copy, **kw) as bundle:
            return bundle.runtime.session.get_session_options().intra_op_num_threads, bundle.settings

    monkeypatch.setenv(rs.ENV, "threads=2")
    assert threads() == (2, {"threads": 2, "batch": 2})
    assert threads(settings={"threads": 1, "batch": 8}) == (1, {"threads": 1, "batch": 8})
    assert threads(settings={"threads": None}) == (0, {"batch": 2})  # None: back to ONNX Runtime's default
    monkeypatch.setenv(rs.ENV, "default")
    assert threads() == (0, {})
    monkeypatch.delenv(rs.ENV)
    assert threads(settings="default") == (0, {})
    assert threads() == (1, {"threads": 1, "batch": 2})


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"threads": 0}, "'threads' must be an integer from 1 to 1024, got 0"),
        ({"threads": 10**6}, "'threads' must be an integer from 1 to 1024, got 1000000"),
        ({"threads": "2"}, "'threads' must be an integer from 1 to 1024, got \"2\""),
        ({"batch": 0}, "'batch' must be an integer from 1 to 1024"),
        ({"bogus": 1}, "'bogus' is not a runtime setting"),
        ({"streams": 2}, "'streams' (load_bundle(settings=...)) does not apply to backend onnxruntime"),
        ("fast", "must be a mapping"),
    ],
)
def test_a_bad_override_is_one_usage_error_line(cpu_bundle: Path, settings, words: str) -> None:
    with pytest.raises(UsageError) as info:
        edgekit.load_bundle(cpu_bundle, settings=settings)
    assert words in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("text", ["threads=abc", "threads", "threads=0"])
def test_a_bad_environment_variable_is_one_usage_error_line(cpu_bundle: Path, monkeypatch, text: str) -> None:
    monkeypatch.setenv(rs.ENV, text)
    with pytest.raises(UsageError, match=rs.ENV) as info:
        edgekit.load_bundle(cpu_bundle)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        (("threads",), 0, "'runtime_settings.threads' must be an integer from 1 to 1024, got 0"),
        (("threads",), 10**6, "'runtime_settings.threads' must be an integer from 1 to 1024, got 1000000"),
        (("threads",), "2", "'runtime_settings.threads' must be an integer from 1 to 1024"),
        (("threads",), True, "'runtime_settings.threads' must be an integer"),
        (("performance_hint",), "FAST", "'runtime_settings.performance_hint' must be one of LATENCY, THROUGHPUT"),
        (("batch",), 10**6, "'runtime_settings.batch' must be an integer from 1 to 1024"),
        (("how", "noise_margin"), 5, "'runtime_settings.how.noise_margin' must be a number from 0 to 1"),
        (("how", "candidates", 0, "settings", "threads"), -1, "'runtime_settings.how.candidates[0].settings.threads'"),
        (("how",), None, "'runtime_settings.how' must be an object"),
    ],
)
def test_a_manifest_with_a_bad_setting_is_refused_in_one_line(cpu_bundle: Path, tmp_path: Path, path, value, words):
    copy = tmp_path / "b.edgekit"
    shutil.copytree(cpu_bundle, copy)
    data = manifest_of(copy)
    node = data["runtime_settings"]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError) as info:
        edgekit.load_bundle(copy)
    assert words in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(BundleError, match="runtime_settings"):
        Manifest.from_dict(data)


def test_a_recorded_knob_the_backend_does_not_take_is_refused(cpu_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "b.edgekit"
    shutil.copytree(cpu_bundle, copy)
    data = manifest_of(copy)
    data["runtime_settings"]["streams"] = 2  # an OpenVINO knob in an ONNX Runtime bundle
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="'runtime_settings.streams' is not a setting of backend onnxruntime"):
        edgekit.load_bundle(copy)


def test_the_manifest_round_trips_with_the_record(cpu_bundle: Path) -> None:
    data = manifest_of(cpu_bundle)
    typed = Manifest.from_dict(data)
    assert typed.to_dict() == data and typed.runtime_settings.how.by == "edgekit compile"
    assert set(typed.runtime_settings.knobs()) <= {"threads", "inter_op_threads"}


# -- off the target: none recorded, the backend's defaults


@pytest.mark.parametrize("target", ["jetson-orin-nano", "raspberry-pi-4", "intel-igpu"])
def test_a_bundle_built_off_target_records_none(tiny_onnx: Path, tmp_path: Path, target: str) -> None:
    out = compile_tiny(tiny_onnx, target, tmp_path / "b.edgekit")
    data = manifest_of(out)
    assert "runtime_settings" not in data and data["latency"]["measured"] is False
    summary = edgekit.inspect(out)
    assert any(line.startswith("settings:     the backend's defaults") for line in summary.lines())
    if target == "raspberry-pi-4":  # the ONNX Runtime runtime loads here: it runs ONNX Runtime's defaults
        with edgekit.load_bundle(out) as bundle:
            assert bundle.settings == {} and bundle.runtime.session.get_session_options().intra_op_num_threads == 0
        with pytest.raises(UsageError, match="not the bundle's target raspberry-pi-4"):
            edgekit.tune(out, output=tmp_path / "t.edgekit")
    if target == "jetson-orin-nano":
        with pytest.raises(UsageError, match="backend tensorrt takes no runtime settings"):
            edgekit.tune(out, output=tmp_path / "t.edgekit")
    assert not (tmp_path / "t.edgekit").exists()


# -- edgekit.tune / edgekit bench --tune on an existing bundle


def test_tune_writes_a_verified_bundle_to_output_and_leaves_the_source(cpu_bundle: Path, tmp_path: Path) -> None:
    before = open_bundle(cpu_bundle)
    before.close()
    out = tmp_path / "tuned.edgekit"
    result = edgekit.tune(cpu_bundle, output=out)
    assert result["bundle"] == str(out) and result["previous_hash"] == before.hash
    after = open_bundle(cpu_bundle)
    after.close()
    assert after.hash == before.hash  # the source is untouched
    tuned = open_bundle(out)  # verified: schema and the sha256 of every file
    tuned.close()
    assert tuned.hash == result["hash"] != before.hash
    record = tuned.manifest["runtime_settings"]
    assert record == result["runtime_settings"] and record["how"]["by"] == "edgekit bench --tune"
    assert_consistent(record, ("threads", "inter_op_threads"))
    assert set(tuned.manifest["files"]) == set(before.manifest["files"])
    with edgekit.load_bundle(out) as bundle:
        assert bundle.selftest_result.passed
        assert bundle.settings == {k: v for k, v in record.items() if k != "how"}


def test_tune_rewrites_a_packed_bundle_in_place(tiny_onnx: Path, tmp_path: Path) -> None:
    packed = tmp_path / "p.edgekit"
    edgekit.compile_model(tiny_onnx, target="intel-cpu", precision="fp32", output=packed, spec=dict(CIFAR_SPEC),
                          labels=LABELS, pack=True)  # fmt: skip
    result = edgekit.tune(packed)
    assert packed.is_file() and result["bundle"] == str(packed)
    opened = open_bundle(packed)
    opened.close()
    assert opened.hash == result["hash"] and opened.manifest["runtime_settings"]["how"]["by"] == "edgekit bench --tune"
    assert_consistent(opened.manifest["runtime_settings"], ("threads", "streams", "performance_hint"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.edgekit"]  # no staging left behind


def test_inspect_shows_the_settings_and_how_they_were_chosen(cpu_bundle: Path) -> None:
    lines = edgekit.inspect(cpu_bundle).lines()
    text = "\n".join(lines)
    record = manifest_of(cpu_bundle)["runtime_settings"]
    assert "settings:     " in text and "tuned by edgekit compile" in text and record["how"]["measured_on"] in text
    assert f"chosen: {record['how']['chosen']}" in text
    for c in record["how"]["candidates"]:
        label = ", ".join(f"{k}={v}" for k, v in c["settings"].items()) or "the default"
        assert any(line.strip().startswith(label) and f"{c['p50_ms']:.4g} ms" in line for line in lines), label
    assert f"daemon batch {record['batch']}" in text and "batch 8" in text


@pytest.mark.slow
def test_bench_tune_cli_writes_a_verified_bundle_and_inspect_shows_it(cpu_bundle: Path, tmp_path: Path) -> None:
    out = tmp_path / "tuned.edgekit"
    res = run_cli("bench", str(cpu_bundle), "--tune", "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert "settings:" in res.stdout and "edgekit: bench: tuning runtime settings here" in res.stderr
    shown = run_cli("inspect", str(out))
    assert shown.returncode == 0 and "tuned by edgekit bench --tune" in shown.stdout
    assert_consistent(manifest_of(out)["runtime_settings"], ("threads", "inter_op_threads"))
    bad = run_cli("bench", str(cpu_bundle), "--tune", "--runs", "5")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith("edgekit: error: --tune times")
