"""The accuracy budget: flags, errors, and the search on real quantized graphs."""

from __future__ import annotations

import shutil

import pytest
from support import CIFAR_SPEC, SAMPLE, run_cli

import edgekit
from edgekit.errors import DataError
from edgekit.quantize import budget as bud
from edgekit.quantize.budget import Budget, Figures


@pytest.mark.slow
@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--max-accuracy-drop", "-1", "out of range"),
        ("--max-accuracy-drop", "150%", "out of range"),
        ("--max-accuracy-drop", "abc", "takes a number"),
        ("--min-agreement", "101", "out of range"),
        ("--min-agreement", "nan", "finite number"),
    ],
)
def test_bad_budget_values_are_usage_errors(tmp_path, tiny_onnx, flag, value, needle):
    res = run_cli("compile", str(tiny_onnx), "-t", "cpu", "-p", "int8", "--calib", str(SAMPLE / "calib"),
                  "--val", str(SAMPLE / "test"), flag, value, "-o", str(tmp_path / "o"))  # fmt: skip
    assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_budget_needs_val_and_int8_and_one_form(tmp_path, tiny_onnx):
    base = ("compile", str(tiny_onnx), "-t", "cpu", "--calib", str(SAMPLE / "calib"), "-o", str(tmp_path / "o"))
    res = run_cli(*base, "-p", "int8", "--min-agreement", "99")
    assert res.returncode == 2 and "needs validation images" in res.stderr and "--val" in res.stderr
    res = run_cli(*base, "-p", "fp32", "--val", str(SAMPLE / "test"), "--min-agreement", "99")
    assert res.returncode == 2 and "applies to int8" in res.stderr
    res = run_cli(*base, "-p", "int8", "--max-accuracy-drop", "1", "--min-agreement", "99")
    assert res.returncode == 2 and "not allowed with argument" in res.stderr


def test_relative_and_absolute_drop():
    figures = Figures(agreement=98.0, fp32_top1=80.0, top1=79.0)
    assert Budget.max_accuracy_drop("1").holds(figures)
    assert not Budget.max_accuracy_drop("0.5").holds(figures)
    assert Budget.max_accuracy_drop("1.25%").holds(figures)  # 1.25% of 80 = 1 point
    assert not Budget.max_accuracy_drop("1%").holds(figures)
    assert not Budget.min_agreement("99").holds(figures)


def test_margin_is_the_prediction_bound_for_the_check_part():
    # z(0.95) * sqrt(0.99 * 0.01 * (1/1000 + 1/1000)), in points
    assert Budget.min_agreement("99").margin(1000, 1000) == pytest.approx(0.7319, abs=1e-3)
    assert Budget.min_agreement("99", confidence=0.5).margin(1000, 1000) == pytest.approx(0.0, abs=1e-9)
    # a drop budget's spread is the measured rate of images on which exactly one of FP32 and INT8 is right
    assert Budget.max_accuracy_drop("1").margin(1000, 1000, discordance=0.02) == pytest.approx(1.0404, abs=1e-3)
    tight = Budget.min_agreement("99.5")
    assert not tight.reachable(tight.margin(1000, 1000)) and tight.reachable(tight.margin(5000, 5000))
    assert tight.images_needed() > 2000 and tight.reachable(tight.margin(*[tight.images_needed() // 2] * 2))


@pytest.mark.slow
def test_bad_confidence_is_a_usage_error(tmp_path, tiny_onnx):
    res = run_cli("compile", str(tiny_onnx), "-t", "cpu", "-p", "int8", "--calib", str(SAMPLE / "calib"),
                  "--val", str(SAMPLE / "test"), "--min-agreement", "99", "--budget-confidence", "1.2",
                  "-o", str(tmp_path / "o"))  # fmt: skip
    assert res.returncode == 2 and "--budget-confidence 1.2 is out of range" in res.stderr


def test_drop_budget_with_mismatched_class_folders_names_them(tmp_path, tiny_onnx):
    val = tmp_path / "val"
    shutil.copytree(SAMPLE / "test" / "cat", val / "cat")
    shutil.copytree(SAMPLE / "test" / "dog", val / "doggo")
    with pytest.raises(DataError, match="not among the model's labels: doggo"):
        edgekit.compile_model(tiny_onnx, target="cpu", precision="int8", output=tmp_path / "o", spec=CIFAR_SPEC,
                              labels=list(("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                                           "ship", "truck")),
                              calib=SAMPLE / "calib", calib_size=32, val=val, max_accuracy_drop="1")  # fmt: skip


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Unlabelled 'camera frames': 240 test images in one flat folder, none of them calibration images."""
    root = tmp_path_factory.mktemp("frames")
    for label_dir in sorted((SAMPLE / "test").iterdir()):
        for src in sorted(label_dir.iterdir())[:24]:
            shutil.copy(src, root / f"{label_dir.name}-{src.name}")
    return root


@pytest.mark.slow
def test_agreement_budget_on_unlabelled_frames_ships_the_fastest_configuration_that_holds(tmp_path, tiny_onnx, frames):
    compiled = edgekit.compile_model(
        tiny_onnx, target="cpu", precision="int8", output=tmp_path / "b", spec=CIFAR_SPEC,
        calib=SAMPLE / "calib", calib_size=64, val=frames, min_agreement="98", budget_confidence=0.6,
    )  # fmt: skip
    m = compiled.manifest
    b = (m["quantization"] or {}).get("budget") or m["budget"]
    assert b["budget"]["metric"] == "agreement" and b["met"] is True
    assert b["search_images"] + b["check_images"] == 240 == b["naive_int8_on_all"]["images"]
    # naive INT8 falls short here, so the search ran: INT8 with fallbacks, fp16 and fp32 were all measured
    assert b["naive_int8_probability_meets_budget"] < b["confidence"] and not b["stopped_at_naive"]
    kinds = {(c["precision"], c["how"]) for c in b["candidates"]}
    assert {("int8", "naive"), ("int8", "sensitivity"), ("fp16", "fp16"), ("fp32", "fp32")} <= kinds
    assert next(c for c in b["candidates"] if c["precision"] == "fp32")["agreement_with_fp32"] == 100.0
    # what ships is the fastest of the holding configurations timed again in the same rounds
    timed = [c for c in b["candidates"] if c.get("timed_interleaved")]
    assert timed and all(c["holds_on_search"] for c in timed)
    # (within 5% of the fastest they count as equally fast, and the most faithful of them ships)
    fastest = min(c["latency_ms"] for c in timed)
    tied = [c for c in timed if c["latency_ms"] <= fastest * (1 + bud.SAME_SPEED)]
    faithful = {"fp32": 0, "fp16": 1, "int8": 2}
    best = min(tied, key=lambda c: (faithful[c["precision"]], -c["layers_kept"], c["latency_ms"]))
    assert b["chosen"]["label"] == best["label"] and b["chosen"]["by"].startswith("measured batch-1 latency")
    assert m["precision"]["requested"] == "int8"
    assert (m["quantization"] is None) == (b["chosen"]["precision"] != "int8")
    if b["chosen"]["precision"] == "int8":
        assert m["quantization"]["layers_kept_in_higher_precision"] == sorted(b["layers_kept_in_higher_precision"])
    else:
        assert m["quantization"] is None and "the bundle is " + b["chosen"]["precision"] in " ".join(compiled.warnings)
    assert b["on_search"]["agreement_with_fp32"] - b["search_margin_points"] >= 98
    assert b["search_margin_points"] == pytest.approx(
        Budget.min_agreement("98", 0.6).margin(b["search_images"], b["check_images"]), abs=1e-3)  # fmt: skip
    assert b["on_check"]["agreement_with_fp32"] >= 98  # images the search never saw
    assert {r["layer"] for r in b["sensitivity_ranking"]} == {c for c in b["sensitivity_ranking"][0:0]} | {
        r["layer"] for r in b["sensitivity_ranking"]
    } and len(b["sensitivity_ranking"]) == b["quantized_layers"]
    assert all("latency_ms" in r for r in b["sensitivity_ranking"])  # each fallback's cost is timed
    assert [p["layers_reverted"] for p in b["curve"]][:2] == [0, 1] and "latency_ms" in b["curve"][0]
    assert m["accuracy"]["metric"] == "agreement_with_fp32"
    speed = b["batch1_latency"]  # measured here: cpu is this machine
    assert speed["fp32_ms"] > 0 and speed["budgeted_speedup_vs_fp32"] == pytest.approx(
        speed["fp32_ms"] / speed["budgeted_ms"], rel=0.01)  # fmt: skip
    res = run_cli("inspect", str(compiled.path))
    assert res.returncode == 0 and "budget:" in res.stdout and "ships: " + b["chosen"]["label"] in res.stdout
    assert "batch 1:" in res.stdout and "to spare" in res.stdout and "probability it meets the budget" in res.stdout


@pytest.mark.slow
def test_naive_int8_that_meets_the_budget_ships_without_a_search(tmp_path, tiny_onnx, frames):
    """A budget naive INT8 meets with high probability on every validation image: no fallback is tried."""
    compiled = edgekit.compile_model(
        tiny_onnx, target="jetson-orin-nano", precision="int8", output=tmp_path / "n", spec=CIFAR_SPEC,
        calib=SAMPLE / "calib", calib_size=64, val=frames, min_agreement="50",
    )  # fmt: skip
    b = compiled.manifest["quantization"]["budget"]
    assert b["stopped_at_naive"] and b["naive_int8_probability_meets_budget"] >= 0.95 and b["met"]
    assert b["layers_kept_in_higher_precision"] == [] and b["candidates"] == [] and b["trial_builds"] == 1
    assert b["chosen"]["label"] == "naive int8"


def test_a_kept_layer_reads_fp32_inputs_weights_and_bias(tiny_onnx, tmp_path):
    """ONNX Runtime's CPU recipe quantizes ReLU outputs: a layer kept in higher precision must not read its
    input through their Q/DQ pair, and its weights must be the FP32 ones, bit for bit."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from edgekit.quantize import onnxruntime_qdq as q

    model = onnx.load(str(tiny_onnx))
    x = np.random.default_rng(0).standard_normal((32, 3, 32, 32)).astype(np.float32)
    layers = q.quantizable_layers(model)
    kept = next(n for n in layers if "Conv" in n and n != layers[0])  # a Conv fed by a ReLU
    prepped = tmp_path / "prepped.onnx"
    q.quantize(model, x, tmp_path / "one.onnx", recipe=q.CPU_RECIPE, input_name="input", nodes_to_exclude=(kept,),
               prepared_out=prepped)  # fmt: skip
    graph, fp32 = onnx.load(str(tmp_path / "one.onnx")).graph, onnx.load(str(prepped)).graph
    producer = {o: n for n in graph.node for o in n.output}
    node = next(n for n in graph.node if n.name == kept)
    want = next(n for n in fp32.node if n.name == kept)
    assert list(node.input) == list(want.input)
    assert all(producer[t].op_type != "DequantizeLinear" for t in node.input if t in producer)
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    fp32_inits = {i.name: numpy_helper.to_array(i) for i in fp32.initializer}
    assert np.array_equal(inits[node.input[1]], fp32_inits[want.input[1]]) and inits[node.input[1]].dtype == np.float32

    # every layer kept: no Q/DQ left, and the outputs are FP32's
    q.quantize(model, x, tmp_path / "all.onnx", recipe=q.CPU_RECIPE, input_name="input",
               nodes_to_exclude=tuple(layers))  # fmt: skip
    left = [n.op_type for n in onnx.load(str(tmp_path / "all.onnx")).graph.node]
    assert "QuantizeLinear" not in left and "DequantizeLinear" not in left
    run = {
        p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (tiny_onnx, tmp_path / "all.onnx")
    }
    ref, got = (s.run(None, {"input": x})[0] for s in run.values())
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_budget_that_cannot_hold_stops_with_the_best_figures(tmp_path, tiny_onnx, frames):
    """The search may only revert the stem here (real Q/DQ graphs, real ONNX Runtime): it must give up
    with the best figures it reached."""
    import onnx
    import onnxruntime as ort

    from edgekit.imagesets import load_unlabelled
    from edgekit.quantize import budget as bud
    from edgekit.quantize import onnxruntime_qdq as q
    from edgekit.spec import build_spec

    model = onnx.load(str(tiny_onnx))
    spec = build_spec(model_input={"name": "input", "shape": (-1, 3, 32, 32), "layout": "NCHW", "dtype": "float32"},
                      overrides=dict(CIFAR_SPEC))  # fmt: skip
    images = load_unlabelled(frames, spec).tensors
    fp32 = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    part = bud.Part(images, None, fp32.run(None, {"input": images})[0])

    def build(excluded):
        out = tmp_path / f"q{len(excluded)}.onnx"
        q.quantize(model, images[:64], out, recipe=q.CPU_RECIPE, input_name="input", nodes_to_exclude=excluded)
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        return lambda x: sess.run(None, {"input": x})[0]

    stem = q.quantizable_layers(model)[0]
    with pytest.raises(
        bud.BudgetNotMet, match=r"does not hold even with all 1 quantized layers .*best reached: agreement"
    ):
        bud.search(
            layers=[stem], build=build, part=part, budget=bud.Budget.min_agreement("100"), check_images=len(images)
        )


def test_budget_on_the_tensorrt_simulation(tmp_path, tiny_onnx, frames):
    compiled = edgekit.compile_model(
        tiny_onnx, target="jetson-orin-nano", precision="int8", output=tmp_path / "j", spec=CIFAR_SPEC,
        calib=SAMPLE / "calib", calib_size=64, val=frames, min_agreement="95",
    )  # fmt: skip
    b = compiled.manifest["quantization"]["budget"]
    assert b["measured_with"].startswith("simulated") and b["higher_precision"] == "fp16"
    assert b["on_check"]["agreement_with_fp32"] >= 95 and "latency_ms" not in b["curve"][0]


@pytest.mark.slow  # more than 15 s on 2 cores
def test_budget_on_openvino_keeps_layers_out_of_nncf(tmp_path, tiny_onnx, frames):
    """The same search on NNCF trial bundles: the kept layers go to NNCF's IgnoredScope and stay f32."""
    compiled = edgekit.compile_model(
        tiny_onnx, target="intel-cpu", precision="int8", output=tmp_path / "o", spec=CIFAR_SPEC,
        calib=SAMPLE / "calib", calib_size=64, val=frames, min_agreement="99", budget_confidence=0.6,
    )  # fmt: skip
    m = compiled.manifest
    b = (m["quantization"] or {}).get("budget") or m["budget"]
    assert b["measured_with"].startswith("OpenVINO CPU") and b["higher_precision"].startswith("fp32")
    assert not b["stopped_at_naive"]  # naive INT8 falls short: the search did work
    walked = [c for c in b["candidates"] if c["precision"] == "int8" and c["layers_kept"] >= 1]
    # layers in NNCF's ignored scope bring the outputs closer to FP32 (all of them: 100% here)
    assert max(c["agreement_with_fp32"] for c in walked) > b["naive_int8_on_search"]["agreement_with_fp32"]
    assert b["met"] == (b["on_check"]["agreement_with_fp32"] >= 99)
    if m["quantization"] is not None:
        assert m["quantization"]["layers_kept_in_higher_precision"] == sorted(b["layers_kept_in_higher_precision"])
    assert "batch1_latency" in b and b["batch1_latency"]["fp32_ms"] > 0  # intel-cpu runs here


@pytest.mark.slow
def test_report_takes_the_budget_and_shows_ranking_and_curve(tmp_path, tiny_onnx, small_val):
    import json

    out = tmp_path / "report"
    res = run_cli("report", str(tiny_onnx), "--spec", str(_spec_file(tmp_path)), "--calib", str(SAMPLE / "calib"),
                  "--calib-size", "64", "--val", str(small_val), "--targets", "cpu", "--precisions", "int8",
                  "--min-agreement", "98", "--budget-confidence", "0.6", "--no-bench", "-q", "-o", str(out))  # fmt: skip
    assert res.returncode == 0, res.stderr
    doc = json.loads((out / "report.json").read_text())
    rows = {r["id"]: r for r in doc["results"]}
    assert set(rows) == {"cpu-int8", "cpu-int8-budget"} and rows["cpu-int8"]["budget"] is None
    b = rows["cpu-int8-budget"]["budget"]
    assert b["budget"]["metric"] == "agreement" and b["curve"][0]["layers_reverted"] == 0
    assert b["budget"]["confidence"] == 0.6
    assert b["batch1_latency"]["fp32_ms"] > 0  # cpu is this machine: the budget's cost is measured and said
    assert "Batch 1 on this machine:" in (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert 'class="budget-curve"' in html and 'class="budget-ranking"' in html
    assert "cpu-int8-budget: top-1 agreement with FP32 &gt;= 98%" in html and "Ships " + b["chosen"]["label"] in html


def _spec_file(tmp_path):
    path = tmp_path / "tiny.toml"
    pre = CIFAR_SPEC["preprocess"]
    path.write_text(
        f'name = "tiny"\n[preprocess]\nresize = {list(pre["resize"])}\nmean = {list(pre["mean"])}\n'
        f"std = {list(pre['std'])}\n"
    )
    return path
