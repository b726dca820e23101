from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from support import CIFAR_SPEC, run_cli, tiny_module

import edgekit
from edgekit.errors import ModelError, UsageError
from edgekit.frontends import load_model

X = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)


def _expected():
    with torch.no_grad():
        return tiny_module()(torch.from_numpy(X)).numpy()


def _run(loaded) -> np.ndarray:
    sess = ort.InferenceSession(loaded.onnx.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: X})[0]


def test_onnx_with_external_data(tiny_onnx, tmp_path):
    model = onnx.load(str(tiny_onnx))
    path = tmp_path / "ext" / "model.onnx"
    path.parent.mkdir()
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.data", size_threshold=0)  # fmt: skip
    assert (path.parent / "model.data").stat().st_size > 1000
    loaded = load_model(path)
    np.testing.assert_allclose(_run(loaded), _expected(), rtol=1e-4, atol=1e-4)
    assert loaded.input == {"name": "input", "shape": (-1, 3, 32, 32), "layout": "NCHW", "dtype": "float32"}
    (path.parent / "model.data").unlink()
    with pytest.raises(ModelError, match="external-data file that is missing"):
        load_model(path)


def test_torchscript_file(tmp_path):
    path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(tiny_module()), str(path))
    with pytest.raises(UsageError, match="--trust-model-code"):  # jit.load runs the archive's code
        load_model(path, input_shape=(1, 3, 32, 32))
    with pytest.raises(UsageError, match="--input-shape"):
        load_model(path, trust_model_code=True)
    loaded = load_model(path, input_shape=(1, 3, 32, 32), trust_model_code=True)
    assert loaded.source_format == "torchscript"
    assert loaded.input["shape"][0] == -1  # exported with a dynamic batch
    np.testing.assert_allclose(_run(loaded), _expected(), rtol=1e-4, atol=1e-4)


def test_exported_program_file(tmp_path):
    path = tmp_path / "model.pt2"
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(tiny_module(), (torch.zeros(2, 3, 32, 32),), dynamic_shapes=({0: batch},))
    program.example_inputs = None  # saved without its pickled example inputs: loadable without --trust-model-code
    torch.export.save(program, str(path))
    loaded = load_model(path)
    assert loaded.source_format == "exported_program"
    np.testing.assert_allclose(_run(loaded), _expected(), rtol=1e-4, atol=1e-4)


def test_nn_module_through_the_api(tmp_path, sample_calib):
    compiled = edgekit.compile_model(
        tiny_module(), target="cpu", precision="int8", output=tmp_path / "b", spec=CIFAR_SPEC,
        input_shape=(1, 3, 32, 32), calib=sample_calib, calib_size=16,
    )  # fmt: skip
    assert compiled.manifest["model"]["source"]["format"] == "torch.nn.Module"
    assert compiled.manifest["input"]["dynamic_batch"] is True


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["module", "state_dict"])
def test_pickled_checkpoint_is_refused_without_unpickling(tmp_path, kind):
    path = tmp_path / "model.pth"
    model = tiny_module()
    torch.save(model if kind == "module" else model.state_dict(), str(path))
    res = run_cli("compile", str(path), "--target", "cpu", "-p", "fp32", "--input-shape", "1,3,32,32",
                  "-o", str(tmp_path / "out"))  # fmt: skip
    assert res.returncode == 2
    assert "unpickling runs arbitrary code" in res.stderr and "torch.onnx.export" in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("edgekit: error:")]
    assert "Traceback" not in res.stderr and len(errors) == 1
    assert not (tmp_path / "out").exists()
