"""A backend added through the entry point alone (no edit to edgekit) compiles, packs, loads, predicts and
serves through the real CLI, in subprocesses that find it as they would find an installed package."""

from __future__ import annotations

import json
import shutil

import pytest
from fake_plugin import TARGET_TOML, install
from serve.serve_support import start_daemon, video_file  # noqa: F401 - the fixtures
from support import LABELS, SAMPLE, run_cli

SPEC = """\
name = "tiny-fake"
labels = [{labels}]

[preprocess]
resize = [32, 32]
mean = [0.4914, 0.4822, 0.4465]
std = [0.247, 0.2435, 0.2616]
"""
CAT = SAMPLE / "test" / "cat" / "0000.jpg"


@pytest.fixture(scope="module")
def plugin(tmp_path_factory, tiny_onnx):
    """(environment that registers the fake backend, work folder with the model, its spec and the target)."""
    work = tmp_path_factory.mktemp("plugin")
    env = install(work / "site")
    shutil.copy(tiny_onnx, work / "tiny.onnx")
    (work / "tiny.toml").write_text(SPEC.format(labels=", ".join(f'"{label}"' for label in LABELS)))
    (work / "fake.toml").write_text(TARGET_TOML)
    return env, work


def _ok(res):
    assert res.returncode == 0, res.stdout + res.stderr
    return res


@pytest.mark.slow
def test_a_plugin_backend_compiles_packs_inspects_and_predicts_through_the_cli(plugin):
    env, work = plugin
    bundle = work / "b.edgekit"
    _ok(run_cli("compile", str(work / "tiny.onnx"), "--target", str(work / "fake.toml"), "-o", str(bundle),
                "--pack", "--val", str(SAMPLE / "test"), env=env))  # fmt: skip
    assert bundle.is_file()
    shown = _ok(run_cli("inspect", str(bundle), env=env)).stdout
    assert "fake-box (fake fake 0.1" in shown
    manifest = json.loads(_ok(run_cli("inspect", str(bundle), "--json", env=env)).stdout)
    assert manifest["backend"]["name"] == "fake" and manifest["target"]["backend_options"] == {"threads": 1}
    assert manifest["accuracy"]["agreement_with_fp32"] == 100.0 and manifest["latency"]["measured"] is True
    predicted = _ok(run_cli("predict", str(bundle), str(CAT), "--json", env=env)).stdout.splitlines()
    assert json.loads(predicted[0])["label"] in LABELS
    # without the plugin installed, the bundle still inspects, and loading it names the registered backends
    assert _ok(run_cli("inspect", str(bundle))).returncode == 0
    refused = run_cli("predict", str(bundle), str(CAT))
    assert (
        refused.returncode == 1
        and "manifest field 'backend.name' is 'fake', which is not a backend registered here (registered: onnxruntime"
        in refused.stderr
    )


@pytest.mark.slow
def test_a_plugin_backend_serves_predictions_over_http(plugin, start_daemon, video_file):  # noqa: F811
    env, work = plugin
    bundle = work / "served.edgekit"
    _ok(run_cli("compile", str(work / "tiny.onnx"), "--target", str(work / "fake.toml"), "-o", str(bundle), env=env))
    daemon = start_daemon([str(bundle), "--source", str(video_file), "--loop", "--realtime"], env=env)
    status, _, body = daemon.request("POST", "/v1/predict", CAT.read_bytes(), {"Content-Type": "image/jpeg"})
    assert status == 200, body[:300]
    assert json.loads(body)["label"] in LABELS
    assert '"backend": "fake"' in json.dumps(daemon.get_json("/v1/info"))
