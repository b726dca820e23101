"""An unknown or not yet supported task is one clear line: in a model spec (file, dict or the CLI) and in a
bundle's manifest."""

from __future__ import annotations

import json
import shutil

import pytest
from serve.serve_support import serve_bundle  # noqa: F401
from support import CIFAR_SPEC, LABELS, SAMPLE, run_cli

import edgekit
from edgekit.bundle.manifest import MANIFEST
from edgekit.errors import BundleError, UsageError
from edgekit.runtime import load_bundle
from edgekit.spec import ModelSpec, build_spec, load_spec_file
from edgekit.tasks import get_task, task_names, unsupported

IMAGE = next(p for p in sorted((SAMPLE / "test" / "cat").iterdir()))
NOT_YET = "task 'segmentation' is not supported yet; supported: classification, detection"
UNKNOWN = "unknown task 'depth'; supported: classification, detection"


def test_get_task_names_the_supported_tasks():
    assert task_names() == ("classification", "detection") and get_task("classification").name == "classification"
    assert get_task("detection").name == "detection"
    for name, message in (("segmentation", NOT_YET), ("depth", UNKNOWN)):
        with pytest.raises(UsageError) as err:
            get_task(name)
        assert str(err.value) == message
    assert unsupported("classification") is None
    assert unsupported(3) == "task 3 is not a task name (a string); supported: classification, detection"


def _spec_file(tmp_path, task: str):
    path = tmp_path / "model.toml"
    path.write_text(f'name = "m"\ntask = "{task}"\nlabels = ["a", "b"]\n')
    return path


@pytest.mark.parametrize(("task", "message"), [("segmentation", NOT_YET), ("depth", UNKNOWN)])
def test_a_spec_file_naming_another_task_is_refused_at_load(tmp_path, task, message):
    path = _spec_file(tmp_path, task)
    with pytest.raises(UsageError) as err:
        load_spec_file(path)
    assert str(err.value) == f"{path}: {message}"


def test_a_spec_dict_or_override_naming_another_task_is_refused(tiny_onnx, tmp_path):
    with pytest.raises(UsageError) as err:
        build_spec(model_input={"shape": (-1, 3, 32, 32)}, overrides={"task": "segmentation"})
    assert str(err.value) == f"{NOT_YET}; fix the model spec's 'task'"
    with pytest.raises(UsageError, match="unknown task 'foo'; supported: classification, detection"):
        ModelSpec(task="foo")
    with pytest.raises(UsageError) as err:  # through the public API, before anything is compiled
        edgekit.compile_model(tiny_onnx, target="cpu", precision="fp32", output=tmp_path / "b",
                              spec={**CIFAR_SPEC, "task": "foo"}, labels=LABELS)  # fmt: skip
    assert "unknown task 'foo'; supported: classification, detection" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_cli_compile_refuses_a_segmentation_spec_in_one_line(tiny_onnx, tmp_path):
    path = _spec_file(tmp_path, "segmentation")
    res = run_cli("compile", str(tiny_onnx), "-t", "cpu", "--precision", "fp32", "--spec", str(path),
                  "-o", str(tmp_path / "b"))  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().splitlines()[-1] == f"edgekit: error: {path}: {NOT_YET}"
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("task", ["segmentation", "depth"])
def test_a_bundle_whose_manifest_names_an_unsupported_task_is_refused(serve_bundle, tmp_path, task):  # noqa: F811
    bundle = tmp_path / "b.edgekit"
    shutil.copytree(serve_bundle, bundle)
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["model"]["task"] = task  # the manifest holds every other file's checksum; no file changed
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2))
    with pytest.raises(BundleError) as err:
        load_bundle(bundle)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{bundle}: manifest field 'model.task': ")
    assert (NOT_YET if task == "segmentation" else UNKNOWN) in message
    with load_bundle(serve_bundle) as good:  # the original still loads and predicts
        assert good.task.name == "classification" and good.predict(IMAGE).label in LABELS
