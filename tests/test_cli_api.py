"""The CLI is a shell over the API: every command builds one call of a public function of ``edgekit``;
every flag reaches that call as a parameter the API accepts; ``compile`` and ``report`` share one
definition of their common flags; ``--print-api`` prints Python that makes the same call.

All in process: the parser ``main`` uses is built and parsed, and requests are constructed, but nothing
is compiled, measured or served (except one small bundle that ``edgekit.inspect`` reads).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import io
import types
from pathlib import Path

import pytest

import edgekit
from edgekit import request as rq
from edgekit.cli import COMMANDS, build_parser, flags, main
from edgekit.cli._api import Call
from edgekit.report.report import SHARED_FIELDS, ReportOptions, ReportRequest
from edgekit.request import CompileRequest

NOT_API = {"help", "debug", "print_api"}  # argparse's help, and the two flags every command has beside the call

# the smallest command line of each command (nothing is read: the calls are only built)
BASE = {
    "targets": [],
    "compile": ["m.onnx", "-t", "cpu", "-o", "o.edgekit"],
    "inspect": ["b.edgekit"],
    "predict": ["b.edgekit", "a.jpg"],
    "build-engine": ["b.edgekit"],
    "serve": ["b.edgekit", "--source", "0"],
    "report": ["m.onnx", "--val", "val", "-o", "rep"],
    "bench": ["b.edgekit"],
}

# a representative value (not the default) for each flag or positional that takes one, by destination
SAMPLES = {
    "model": "other.onnx", "bundle": "other.edgekit", "images": "b.jpg", "target": "intel-cpu",
    "precision": "int8", "output": "elsewhere", "calib": "calib", "calib_size": "17", "calib_method": "entropy",
    "calib_percentile": "99.9", "val": "val2", "max_accuracy_drop": "1.5%", "min_agreement": "97",
    "budget_confidence": "0.8", "spec": "m.toml", "name": "net", "input_shape": "1,3,32,32", "layout": "NHWC",
    "labels": "labels.txt", "resize": "40", "resize_mode": "bilinear", "crop": "32", "color_order": "BGR",
    "scale": "1/127.5", "mean": "0.5", "std": "0.25,0.25,0.25", "targets": "cpu,intel-cpu,jetson-orin-nano",
    "precisions": "fp32,int8", "calib_methods": "minmax,entropy", "max_latency_ms": "5", "merge": "d.json",
    "bench_seconds": "0.5", "seconds": "2", "runs": "10", "warmup": "3", "batch_sizes": "1,8", "image": "i.jpg",
    "device": "GPU", "top_k": "5", "cache_dir": "cache",
}  # fmt: skip
SERVE_SAMPLES = {
    "source": "rtsp://cam.local/s", "resolution": "640x480", "fps": "15", "device": "GPU", "device_id": "cam-02",
    "token": "t" * 16, "allow_host": "cam.local", "mqtt": "mqtt://broker.local/t", "mqtt_client_id": "c1",
    "mqtt_ca": "ca.pem", "mqtt_cert": "c.pem", "mqtt_key": "k.pem", "jsonl": "r.jsonl", "rtsp_transport": "udp",
    "log_level": "debug", "mqtt_qos": "2", "host": "0.0.0.0", "max_body": "4MiB", "decode_budget": "64MiB",
    "mqtt_buffer_bytes": "8MiB", "jsonl_max_bytes": "1MiB", "max_batch": "4", "api_file_root": "/srv/video",
    "queue": "4",
}  # fmt: skip


def commands() -> dict[str, argparse.ArgumentParser]:
    """The subcommand parsers of the parser ``main`` builds."""
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def module(command: str):
    import importlib

    return importlib.import_module(COMMANDS[command])


def call_of(argv: list[str]) -> Call:
    args = build_parser().parse_args(argv)
    return args.api(args)


def flag_argv(action: argparse.Action, tmp_path: Path, command: str) -> list[str]:
    """A command line fragment that sets ``action`` to a representative value."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse.BooleanOptionalAction)):
        return [action.option_strings[0]]
    if action.dest == "config":  # serve --config FILE: the file's options join the call
        path = tmp_path / "serve.toml"
        path.write_text('device_id = "cam-03"\n')
        return ["--config", str(path)]
    samples = SERVE_SAMPLES if command == "serve" else {}
    if action.dest in samples:
        value = samples[action.dest]
    elif command == "serve":
        from edgekit.serve.config import BY_FIELD

        value = str(BY_FIELD[action.dest].default)  # a given flag is passed on even at its default
    else:
        value = SAMPLES[action.dest]
    return [value] if not action.option_strings else [action.option_strings[-1], value]


def with_value(command: str, action: argparse.Action, fragment: list[str]) -> list[str]:
    base = list(BASE[command])
    if not action.option_strings:  # a positional: replace the base's
        index = {"model": 0, "bundle": 0, "images": 1}[action.dest]
        base[index] = fragment[0]
        return [command, *base]
    if command == "serve" and action.dest == "source":
        base = base[:1]
    if command == "bench" and action.dest == "output":  # -o is where --tune writes: it comes with --tune
        base.append("--tune")
    return [command, *base, *fragment]


def accepts(call: Call) -> None:
    """The public function named by ``call`` takes its arguments: by signature, then by the options type a
    ``**fields`` function builds from them (constructing it runs the API's own checks)."""
    function = getattr(edgekit, call.function)
    inspect.signature(function).bind(*call.args, **call.kwargs)
    if call.function == "bench":
        edgekit.BenchOptions(**call.kwargs)
    if call.function == "serve":
        fields = {f.name for f in dataclasses.fields(edgekit.ServeConfig)}
        assert set(call.kwargs) <= fields, set(call.kwargs) - fields
    for arg in call.args:
        if dataclasses.is_dataclass(arg):  # a request: already constructed (and so checked) by api_call
            assert isinstance(arg, (CompileRequest, ReportRequest))


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_flag_of_every_command_reaches_the_api_call_it_makes(command: str, tmp_path: Path) -> None:
    parser = commands()[command]
    baseline = call_of([command, *BASE[command]])
    accepts(baseline)
    assert hasattr(edgekit, baseline.function) and baseline.function in dir(edgekit)
    shown = set(module(command).OUTPUT_FLAGS)
    walked = 0
    for action in parser._actions:
        if action.dest in NOT_API or action.dest in shown:
            continue
        argv = with_value(command, action, flag_argv(action, tmp_path, command))
        call = call_of(argv)
        assert call != baseline, f"{command} {action.option_strings or action.dest}: does not reach the API call"
        accepts(call)
        walked += 1
    assert walked >= 1 or command == "targets"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_output_flags_and_debug_stay_out_of_the_call(command: str) -> None:
    parser = commands()[command]
    baseline = call_of([command, *BASE[command]])
    options = {a.dest: a for a in parser._actions}
    for dest in (*module(command).OUTPUT_FLAGS, "debug"):
        assert dest in options, dest
        assert call_of([command, *BASE[command], options[dest].option_strings[0]]) == baseline


def test_a_request_flag_maps_to_a_field_of_its_request() -> None:
    """By name: every compile and report flag's destination is a field of its request (or the few renamed)."""
    renamed = {"calib_percentile": "calibration_percentile", "calib_method": "calibration_method",
               "resize": "preprocess", "resize_mode": "preprocess", "crop": "preprocess", "color_order": "preprocess",
               "scale": "preprocess", "mean": "preprocess", "std": "preprocess", "no_bench": "bench",
               "quiet": "progress"}  # fmt: skip
    for command, request in (("compile", CompileRequest), ("report", ReportRequest)):
        fields = {f.name for f in dataclasses.fields(request)} | {"progress"}
        shown = set(module(command).OUTPUT_FLAGS) | NOT_API
        for action in commands()[command]._actions:
            if action.dest not in shown:
                assert renamed.get(action.dest, action.dest) in fields, (command, action.dest)


def test_compile_and_report_share_one_definition_of_their_common_flags() -> None:
    def key(action: argparse.Action):
        kind = getattr(action.type, "__qualname__", action.type)
        return (tuple(action.option_strings), action.dest, kind, action.choices, action.default, action.metavar,
                action.nargs, type(action).__name__)  # fmt: skip

    shared = [a for a in flags.shared_actions() if a.dest != "help"]
    assert {a.dest for a in shared} >= {"calib", "calib_size", "calib_percentile", "val", "max_accuracy_drop",
                                        "min_agreement", "budget_confidence", "spec", "input_shape", "layout",
                                        "resize", "mean", "trust_model_code"}  # fmt: skip
    by_command = {c: {a.dest: a for a in commands()[c]._actions} for c in ("compile", "report")}
    for action in shared:
        want = key(action)
        for command, actions in by_command.items():
            got = key(actions[action.dest])
            assert got == want or (action.dest == "val" and got[:-1] == want[:-1]), (command, got, want)
    # and they parse to the same API values: compile's syntax is report's
    extra = ["--calib", "c", "--calib-size", "7", "--calib-percentile", "99.99", "--max-accuracy-drop", "2%",
             "--budget-confidence", "0.9", "--spec", "m.toml", "--name", "n", "--input-shape", "1,3,8,8",
             "--layout", "nchw", "--labels", "l.txt", "--resize", "9", "--crop", "8", "--scale", "1/255",
             "--mean", "0.1", "--std", "0.2", "--color-order", "bgr", "--resize-mode", "BILINEAR",
             "--trust-model-code"]  # fmt: skip
    (compiled,) = call_of(["compile", *BASE["compile"], "--val", "val", *extra]).args
    (reported,) = call_of(["report", *BASE["report"], *extra]).args
    for field in SHARED_FIELDS:
        assert getattr(compiled, field) == getattr(reported, field), field
    assert reported.max_accuracy_drop == "2%" and reported.preprocess["color_order"] == "BGR"


def test_the_report_request_takes_the_compile_requests_defaults_and_checks() -> None:
    compile_defaults = rq.defaults()
    report_defaults = {f.name: f.default for f in dataclasses.fields(ReportOptions)}
    for field in SHARED_FIELDS:
        if field != "val":
            assert report_defaults[field] == compile_defaults[field], field
    for bad, words in (({"max_accuracy_drop": "150%"}, "--max-accuracy-drop"), ({"calib_size": 0}, "calib_size"),
                       ({"budget_confidence": 1.5}, "budget_confidence")):  # fmt: skip
        with pytest.raises(edgekit.EdgekitError, match=words):
            ReportRequest(model="m.onnx", output="r", val="v", **bad)
    plain = ReportRequest(model="m.onnx", output="r", val="v", max_accuracy_drop=1.0, min_agreement=None)
    assert plain.max_accuracy_drop == "1"  # the same text as --max-accuracy-drop 1 gives
    rel = ReportRequest(model="m.onnx", output="r", val="v", max_accuracy_drop="10%")
    from edgekit.report.report import _drop_points

    assert _drop_points(rel, 80.0) == pytest.approx(8.0) and _drop_points(plain, 80.0) == 1.0


def _printed(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main([*argv, "--print-api"]) == 0
    return out.getvalue()


def _exec_captured(source: str) -> list[tuple[tuple, dict]]:
    """Run printed Python with ``edgekit``'s functions replaced by a recorder (its types stay real)."""
    assert source.startswith("import edgekit\n")
    seen: list[tuple[tuple, dict]] = []
    fake = types.SimpleNamespace(
        CompileRequest=CompileRequest, ReportRequest=ReportRequest,
        **{name: (lambda *a, **k: seen.append((a, k))) for name in ("compile", "report", "bench", "inspect",
                                                                     "build_engine", "list_targets", "serve")},
    )  # fmt: skip
    compile(source, "<print-api>", "exec")  # valid Python as printed
    exec(source.replace("import edgekit\n", "", 1), {"edgekit": fake})
    return seen


COMPILE_ARGVS = [
    ["compile", *BASE["compile"]],
    ["compile", "m.onnx", "-t", "intel-cpu", "-p", "int8", "--calib", "calib/", "--val", "val/", "-o", "x.edgekit",
     "--max-accuracy-drop", "1%", "--calib-method", "entropy", "--resize", "256", "--crop", "224", "--mean",
     "0.485,0.456,0.406", "--scale", "1/255", "--input-shape", "1,3,224,224", "--pack", "--json", "-q"],
]  # fmt: skip
REPORT_ARGVS = [
    ["report", *BASE["report"]],
    ["report", "m.onnx", "--val", "v", "--calib", "c", "-o", "r", "-t", "cpu,jetson-orin-nano", "-p", "fp32,int8",
     "--calib-methods", "minmax,entropy", "--min-agreement", "98", "--budget-confidence", "0.9", "--max-latency-ms",
     "4", "--merge", "a.json", "--merge", "b.json", "--no-bench", "--resume", "--layout", "NCHW", "--std", "0.5",
     "-q", "--json"],
]  # fmt: skip


@pytest.mark.parametrize("argv", COMPILE_ARGVS + REPORT_ARGVS, ids=lambda a: " ".join(a[:3]))
def test_print_api_is_python_that_makes_the_same_call(argv: list[str]) -> None:
    printed = _printed(argv)
    call = call_of(argv)
    assert f"edgekit.{call.function}(" in printed
    assert _exec_captured(printed) == [(call.args, dict(call.kwargs))]


def test_print_api_writes_only_what_differs_from_the_defaults_and_runs_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    printed = _printed(["compile", "missing.onnx", "-t", "cpu", "-o", "o"])
    assert (
        printed
        == "import edgekit\n\nedgekit.compile(edgekit.CompileRequest(model='missing.onnx', target='cpu', output='o'))\n"
    )
    assert not (tmp_path / "o").exists()
    assert "calib_size" not in printed and "debug" not in _printed(["--debug", "compile", *BASE["compile"]])
    assert _printed(["bench", "b.edgekit", "--runs", "9"]).endswith("edgekit.bench('b.edgekit', runs=9)\n")
    assert _printed(["bench", "b.edgekit", "--tune"]).endswith("edgekit.tune('b.edgekit')\n")
    assert _printed(["bench", "b", "--tune", "-o", "t"]).endswith("edgekit.tune('b', output='t')\n")
    assert _printed(["inspect", "b.edgekit"]).endswith("edgekit.inspect('b.edgekit')\n")
    assert _printed(["build-engine", "b", "--force"]).endswith("edgekit.build_engine('b', force=True)\n")
    assert _printed(["targets"]).endswith("edgekit.list_targets()\n")
    assert "bundle.predict(image, top_k=3)" in _printed(["predict", "b.edgekit", "a.jpg"])


def test_print_api_for_serve_never_writes_a_secret(monkeypatch) -> None:
    printed = _printed(["serve", "b.edgekit", "--source", "0", "--token", "s3cret-token-0123456789",
                        "--mqtt", "mqtt://user:pw@broker.local/t"])  # fmt: skip
    assert "s3cret" not in printed and ":pw@" not in printed
    assert "os.environ['EDGEKIT_SERVE_TOKEN']" in printed and "import os\n" in printed
    monkeypatch.setenv("EDGEKIT_SERVE_TOKEN", "from-the-env-0123456789")
    fake = types.SimpleNamespace(serve=lambda *a, **k: seen.append(k))
    seen: list[dict] = []
    exec(printed.replace("import edgekit\n", "", 1), {"edgekit": fake})
    assert seen[0]["bundle"] == "b.edgekit" and seen[0]["source"] == "0"
    assert seen[0]["token"] == "from-the-env-0123456789"


PUBLIC = ("compile", "compile_model", "report", "bench", "tune", "serve", "inspect", "build_engine")


@pytest.mark.parametrize("name", PUBLIC)
def test_each_command_has_a_public_typed_documented_function(name: str) -> None:
    function = getattr(edgekit, name)
    assert callable(function) and name in dir(edgekit)
    assert name in edgekit.__all__ or name in ("compile", "inspect")  # these two would shadow built-in names
    signature = inspect.signature(function)
    assert signature.return_annotation is not inspect.Signature.empty, name
    assert inspect.getdoc(getattr(function, "__wrapped__", function)), name


def test_report_and_serve_are_both_the_package_and_the_function() -> None:
    import edgekit.report.summary
    import edgekit.serve.config

    assert isinstance(edgekit.report, types.ModuleType) and callable(edgekit.report)
    assert "request" in inspect.signature(edgekit.report).parameters
    assert "config" in inspect.signature(edgekit.serve).parameters
    with pytest.raises(TypeError, match="not both"):
        edgekit.report(ReportRequest(model="m", output="o", val="v"), val="w")
    with pytest.raises(TypeError, match="unexpected keyword"):
        edgekit.report(model="m", output="o", val="v", targetz=("cpu",))
    with pytest.raises(TypeError, match="unexpected keyword"):
        edgekit.bench("b.edgekit", second=3)
    with pytest.raises(edgekit.EdgekitError, match="source"):
        edgekit.serve(bundle="b.edgekit")  # checked like the flags before anything starts


def test_inspect_returns_a_typed_summary_and_the_cli_prints_its_lines(tiny_onnx: Path, tmp_path: Path, capsys):
    from support import SAMPLE

    bundle = tmp_path / "tiny.edgekit"
    edgekit.compile_model(tiny_onnx, target="cpu", precision="fp32", calib=SAMPLE / "calib", calib_size=8,
                          output=bundle)  # fmt: skip
    summary = edgekit.inspect(bundle)
    assert isinstance(summary, edgekit.BundleSummary) and summary.target == "cpu" and summary.precision == "fp32"
    assert summary.backend == "onnxruntime" and "model.onnx" in summary.files and summary.selftest is None
    assert summary.lines()[0].startswith(f"bundle:       {bundle} (verified")
    assert main(["inspect", str(bundle)]) == 0
    assert capsys.readouterr().out.splitlines() == summary.lines()
    checked = edgekit.inspect(bundle, check=True)
    assert checked.selftest is not None and checked.selftest.passed
    assert main(["inspect", str(bundle), "--check"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == checked.selftest.describe()


def test_help_names_the_print_api_flag_on_every_command(capsys) -> None:
    for command in COMMANDS:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--print-api" in capsys.readouterr().out, command
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = capsys.readouterr().out
    defaults = edgekit.BenchOptions()
    assert f"(default {defaults.seconds:g})" in text and f"(default {defaults.warmup})" in text
