"""One compile request: a frozen, typed ``CompileRequest`` with each default defined once, behind both
``compile_model(...)``, ``edgekit compile`` and every combination of ``edgekit report``."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from support import SAMPLE

import edgekit
from edgekit import pipeline
from edgekit import request as rq
from edgekit.cli import build_parser
from edgekit.cli.compile import request_from
from edgekit.errors import UsageError
from edgekit.request import CompileRequest


def test_request_defaults_are_the_cli_defaults() -> None:
    """Parse ``edgekit compile MODEL --target cpu -o X`` with the real parser (nothing runs): the request it
    makes equals a request given only those three fields, so every default is the request's own."""
    args = build_parser().parse_args(["compile", "model.onnx", "--target", "cpu", "-o", "out.edgekit"])
    from_cli = request_from(args)
    assert from_cli == CompileRequest(model="model.onnx", target="cpu", output="out.edgekit")
    assert (args.calib_size, args.calib_percentile, args.budget_confidence) == (
        rq.CALIB_SIZE,
        rq.CALIBRATION_PERCENTILE,
        rq.BUDGET_CONFIDENCE,
    )
    assert rq.defaults()["calib_size"] == 300 and rq.defaults()["calibration_percentile"] == 99.999
    assert rq.defaults()["budget_confidence"] == 0.95
    report = build_parser().parse_args(["report", "model.onnx", "--val", "val", "-o", "rep"])
    from edgekit.report.report import ReportOptions

    assert report.calib_size == ReportOptions(val=Path("val")).calib_size == rq.CALIB_SIZE


def test_cli_flags_reach_the_request() -> None:
    argv = ["compile", "m.onnx", "-t", "cpu", "-o", "o", "--calib-size", "17", "--calib-percentile", "99.9",
            "--min-agreement", "97", "--budget-confidence", "0.8", "--resize", "40", "--color-order", "bgr",
            "--input-shape", "1,3,32,32", "--pack"]  # fmt: skip
    r = request_from(build_parser().parse_args(argv))
    assert (r.calib_size, r.calibration_percentile, r.min_agreement, r.budget_confidence) == (17, 99.9, "97", 0.8)
    assert r.preprocess == {"resize": 40, "color_order": "BGR"} and r.input_shape == (1, 3, 32, 32) and r.pack
    assert r.output == Path("o") and r.budget().confidence == 0.8


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("calib_size", 0, ("calib_size", "at least 1")),
        ("calib_size", 2.5, ("calib_size", "whole number")),
        ("calibration_percentile", 101, ("calibration_percentile", "at most 100")),
        ("calibration_percentile", 50, ("calibration_percentile", "above 50")),
        ("budget_confidence", 1.5, ("budget_confidence", "out of range")),
        ("budget_confidence", "high", ("budget_confidence", "must be a number")),
        ("int8_drop_warning", "much", ("int8_drop_warning",)),
        ("preprocess", {"size": 3}, ("preprocess", "unknown keys", "resize")),
        ("max_accuracy_drop", "150%", ("--max-accuracy-drop", "out of range")),
        ("min_agreement", "101", ("--min-agreement", "out of range")),
    ],
)
def test_a_bad_static_value_is_a_usage_error_naming_the_field(field: str, value, words: tuple[str, ...]) -> None:
    with pytest.raises(UsageError) as info:
        CompileRequest(model="m.onnx", target="cpu", output="o", **{field: value})
    message = str(info.value)
    assert "\n" not in message and all(w in message for w in words), message


def test_one_budget_at_a_time_and_replace_checks_again() -> None:
    with pytest.raises(UsageError, match="give one budget"):
        CompileRequest(model="m.onnx", target="cpu", output="o", max_accuracy_drop="1", min_agreement="99")
    base = CompileRequest(model="m.onnx", target="cpu", output="o")
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.calib_size = 5  # type: ignore[misc]
    assert base.replace(calib_size=5).calib_size == 5 and base.calib_size == rq.CALIB_SIZE
    with pytest.raises(UsageError, match="calib_size"):
        dataclasses.replace(base, calib_size=0)


def test_compile_model_rejects_an_unknown_keyword(tiny_onnx: Path, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="calib_sise"):
        edgekit.compile_model(tiny_onnx, target="cpu", output=tmp_path / "o", calib_sise=3)
    assert not (tmp_path / "o").exists()


def _comparable(manifest: dict) -> dict:
    """The manifest without what differs from run to run (the time it was written, the latency figures)."""
    return {k: v for k, v in manifest.items() if k not in ("created", "latency")}


def test_compile_model_and_the_request_make_the_same_bundle(tiny_onnx: Path, small_val: Path, tmp_path: Path):
    options = {"precision": "fp32", "calib": SAMPLE / "calib", "calib_size": 8, "val": small_val}
    front = edgekit.compile_model(tiny_onnx, target="cpu", output=tmp_path / "a.edgekit", **options)
    lines: list[str] = []
    request = edgekit.CompileRequest(model=tiny_onnx, target="cpu", output=tmp_path / "b.edgekit", **options)
    typed = edgekit.compile(request, log=lines.append)
    assert edgekit.compile is pipeline.compile_request
    assert typed.path == tmp_path / "b.edgekit" and front.path == tmp_path / "a.edgekit"
    assert _comparable(front.manifest) == _comparable(typed.manifest)
    assert front.manifest["accuracy"]["dataset"]["images"] == 200
    assert any("reading up to 8 calibration images" in line for line in lines)


def test_report_compiles_each_combination_from_one_request(
    tiny_onnx: Path, small_val: Path, tmp_path: Path, monkeypatch
):
    """In process: every combination of a report reaches the pipeline as a CompileRequest derived from one
    shared request (same model, data and spec; its own target, precision, method, budget and output)."""
    from edgekit.report.report import ReportOptions, run_report

    seen: list[CompileRequest] = []
    real = pipeline.compile_request

    def spy(request, *, log=None):
        seen.append(request)
        return real(request, log=log)

    monkeypatch.setattr(pipeline, "compile_request", spy)
    options = ReportOptions(
        val=small_val, targets=("cpu",), precisions=("fp32", "int8"), calib=SAMPLE / "calib", calib_size=16,
        min_agreement=90, budget_confidence=0.6, bench=False,
    )  # fmt: skip
    doc = run_report(tiny_onnx, output=tmp_path / "rep", options=options, progress=False)
    assert [r["status"] for r in doc["results"]] == ["ok"] * 3
    assert all(isinstance(r, CompileRequest) for r in seen) and len(seen) == 3
    assert [(r.precision, r.min_agreement) for r in seen] == [("fp32", None), ("int8", None), ("int8", "90")]
    assert {r.output for r in seen} == {tmp_path / "rep" / "bundles" / f"{c}.edgekit" for c in
                                        ("cpu-fp32", "cpu-int8", "cpu-int8-budget")}  # fmt: skip
    assert seen[2].budget_confidence == 0.6 and seen[0].budget_confidence == rq.BUDGET_CONFIDENCE
    assert len({(r.model, r.calib, r.calib_size, r.val, str(r.spec)) for r in seen}) == 1
    assert seen[0].calib_size == 16 and seen[0].target.name == "cpu"
