"""calibration/: the INT8 recipes as typed data, and the small real image set a bundle's self-test falls back to."""

from __future__ import annotations

import dataclasses
import hashlib

import cv2
import numpy as np
import pytest
from support import CIFAR_SPEC, LABELS

import edgekit
from edgekit import calibration, pipeline
from edgekit.errors import UsageError
from edgekit.imagesets import find_images, load_unlabelled
from edgekit.quantize import nncf_ov, onnxruntime_qdq
from edgekit.spec import InputSpec, ModelSpec, PreprocessSpec
from edgekit.targets import list_targets, parse_target

# The recipes as they were constants in the quantizers before they became data (issue 11, point 6).
OPS = ("Conv", "Gemm", "MatMul", "Add", "Mul", "Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool",
       "Concat", "Flatten", "Reshape")  # fmt: skip
BEFORE = {
    "ort-qdq-u8s8-per-channel": {
        "name": "ort-qdq-u8s8-per-channel", "activations": "uint8", "symmetric_activations": False,
        "method": "minmax", "percentile": 99.999, "per_channel": True, "op_types": OPS, "quantize_bias": True,
        "dedicated_qdq_pair": False, "outputs_unquantized": (),
    },
    "ort-qdq-s8s8-symmetric": {
        "name": "ort-qdq-s8s8-symmetric", "activations": "int8", "symmetric_activations": True,
        "method": "minmax", "percentile": 99.999, "per_channel": True, "op_types": ("Conv", "Gemm", "MatMul", "Add"),
        "quantize_bias": False, "dedicated_qdq_pair": True, "outputs_unquantized": ("Conv", "Gemm", "MatMul", "Add"),
    },
    # nncf_ov.quantize's defaults: method "mean-minmax", percentile 99.999, the PERFORMANCE preset, full bias correction
    "nncf-ptq-performance-full-bias-correction": {
        "name": "nncf-ptq-performance-full-bias-correction", "preset": "performance", "method": "mean-minmax",
        "percentile": 99.999, "fast_bias_correction": False,
    },
}  # fmt: skip


def _fields(recipe) -> dict:
    return {f.name: getattr(recipe, f.name) for f in dataclasses.fields(recipe) if f.name != "description"}


def test_recipes_load_typed_and_equal_the_former_constants():
    assert calibration.recipe_names() == tuple(sorted(BEFORE))
    for name, before in BEFORE.items():
        recipe = calibration.recipe(name)
        assert _fields(recipe) == before, name
        assert recipe.description
        for key, value in before.items():
            assert type(getattr(recipe, key)) is type(value), (name, key)
    assert isinstance(calibration.recipe("ort-qdq-u8s8-per-channel"), calibration.QDQRecipe)
    assert isinstance(calibration.recipe("nncf-ptq-performance-full-bias-correction"), calibration.NNCFRecipe)
    with pytest.raises(dataclasses.FrozenInstanceError):
        calibration.recipe("ort-qdq-s8s8-symmetric").method = "mse"  # type: ignore[misc]


def test_quantizers_take_their_recipes_from_the_data():
    assert onnxruntime_qdq.CPU_RECIPE == calibration.recipe("ort-qdq-u8s8-per-channel")
    assert onnxruntime_qdq.SYMMETRIC_RECIPE == calibration.recipe("ort-qdq-s8s8-symmetric")
    assert onnxruntime_qdq.OPS_TO_QUANTIZE == OPS
    assert onnxruntime_qdq.QDQRecipe is calibration.QDQRecipe
    assert nncf_ov.DEFAULT_RECIPE == calibration.recipe("nncf-ptq-performance-full-bias-correction")
    # the CPU recipe's quantize_static options are ONNX Runtime's defaults plus these four, as before
    assert onnxruntime_qdq._extra_options(onnxruntime_qdq.CPU_RECIPE) == {
        "ActivationSymmetric": False, "WeightSymmetric": True, "CalibPercentile": 99.999, "CalibNumBins": 2048,
    }  # fmt: skip
    assert onnxruntime_qdq._extra_options(onnxruntime_qdq.SYMMETRIC_RECIPE) == {
        "ActivationSymmetric": True, "WeightSymmetric": True, "CalibPercentile": 99.999, "CalibNumBins": 2048,
        "QuantizeBias": False, "DedicatedQDQPair": True, "OpTypesToExcludeOutputQuantization": list(OPS[:4]),
    }  # fmt: skip


def test_typed_lookups_refuse_the_other_quantizers_recipe_and_unknown_names():
    assert calibration.qdq_recipe("ort-qdq-s8s8-symmetric").activations == "int8"
    assert calibration.nncf_recipe("nncf-ptq-performance-full-bias-correction").preset == "performance"
    with pytest.raises(UsageError, match="is a nncf recipe, not a onnxruntime one; choose one of: ort-qdq-s8s8"):
        calibration.qdq_recipe("nncf-ptq-performance-full-bias-correction")
    with pytest.raises(UsageError, match="calibration recipe 'kl' not found; known recipes: nncf-ptq"):
        calibration.recipe("kl")


GOOD = (calibration.recipes_folder() / "ort-qdq-s8s8-symmetric.toml").read_text(encoding="utf-8")
NNCF = (calibration.recipes_folder() / "nncf-ptq-performance-full-bias-correction.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (GOOD + "colour = 'red'\n", r"mine\.toml: unknown key 'colour'; allowed keys for a onnxruntime recipe"),
        (GOOD.replace('activations = "int8"', 'activations = "int4"'),
         r"mine\.toml: key 'activations' must be one of uint8, int8, not 'int4'"),
        (GOOD.replace("quantize_bias = false", 'quantize_bias = "no"'),
         r"mine\.toml: key 'quantize_bias' must be true or false, not 'no'"),
        (GOOD.replace("percentile = 99.999", "percentile = 101"),
         r"mine\.toml: key 'percentile' must be a number above 50 and at most 100, not 101"),
        (GOOD.replace('op_types = ["Conv", "Gemm", "MatMul", "Add"]', "op_types = []"),
         r"mine\.toml: key 'op_types' must name at least one op type"),
        (GOOD.replace('op_types = ["Conv", "Gemm", "MatMul", "Add"]', 'op_types = ["Conv", 3]'),
         r"mine\.toml: key 'op_types' must be a list of op type names"),
        (GOOD.replace('op_types = ["Conv", "Gemm", "MatMul", "Add"]', 'op_types = ["Conv"]'),
         r"mine\.toml: key 'outputs_unquantized' names 'Gemm', which is not in op_types"),
        (GOOD.replace("dedicated_qdq_pair = true\n", ""), r"mine\.toml: missing required key 'dedicated_qdq_pair'"),
        (GOOD.replace('tool = "onnxruntime"', 'tool = "tflite"'),
         r"mine\.toml: key 'tool' must be one of onnxruntime, nncf, not 'tflite'"),
        (GOOD.replace('tool = "onnxruntime"\n', ""), r"mine\.toml: missing required key 'tool'"),
        (NNCF.replace('method = "mean-minmax"', 'method = "entropy"'),
         r"mine\.toml: key 'method' must be one of minmax, mean-minmax, percentile, mse for a nncf recipe"),
        (NNCF.replace('preset = "performance"', 'preset = "fast"'),
         r"mine\.toml: key 'preset' must be one of performance, mixed, not 'fast'"),
        (NNCF + "op_types = ['Conv']\n", r"mine\.toml: unknown key 'op_types'; allowed keys for a nncf recipe"),
        ("name = \n", r"mine\.toml: not valid TOML"),
    ],
)  # fmt: skip
def test_bad_recipe_files_are_refused_with_one_line(text, expected):
    with pytest.raises(UsageError, match=expected) as err:
        calibration.parse_recipe(text, source="mine.toml")
    assert "\n" not in str(err.value)


def test_recipe_folder_files_are_named_after_their_recipe(tmp_path):
    (tmp_path / "ort-qdq-s8s8-symmetric.toml").write_text(GOOD, encoding="utf-8")
    assert list(calibration.load_recipes(tmp_path)) == ["ort-qdq-s8s8-symmetric"]
    (tmp_path / "mine.toml").write_text(GOOD, encoding="utf-8")
    with pytest.raises(UsageError, match="mine.toml: name 'ort-qdq-s8s8-symmetric' is not the file's name"):
        calibration.load_recipes(tmp_path)


def test_every_target_names_its_backends_recipe():
    want = {"cpu": "ort-qdq-u8s8-per-channel", "raspberry-pi-4": "ort-qdq-u8s8-per-channel",
            "raspberry-pi-5": "ort-qdq-u8s8-per-channel", "intel-cpu": "nncf-ptq-performance-full-bias-correction",
            "intel-igpu": "nncf-ptq-performance-full-bias-correction",
            "intel-npu": "nncf-ptq-performance-full-bias-correction"}  # fmt: skip
    for target in list_targets():
        expected = want.get(target.name, "ort-qdq-s8s8-symmetric" if target.backend == "tensorrt" else None)
        assert target.calibration_recipe == expected, target.name
        assert "calibration_recipe" in target.text, f"{target.name}: the file names its recipe itself"


def test_target_recipe_is_validated_and_defaults_by_backend():
    base = 'name = "x"\nbackend = "{}"\ndevice = "CPU"\nprecisions = ["int8"]\n'
    assert parse_target(base.format("openvino"), source="t.toml").calibration_recipe == (
        "nncf-ptq-performance-full-bias-correction"
    )
    assert parse_target(base.format("tensorrt"), source="t.toml").calibration_recipe == "ort-qdq-s8s8-symmetric"
    with pytest.raises(UsageError, match=r"t\.toml: calibration_recipe 'ort-qdq' is not one of: nncf-ptq"):
        parse_target(base.format("onnxruntime") + 'calibration_recipe = "ort-qdq"\n', source="t.toml")
    with pytest.raises(UsageError, match="is a nncf recipe, which backend 'onnxruntime' does not use; choose one of"):
        parse_target(
            base.format("onnxruntime") + 'calibration_recipe = "nncf-ptq-performance-full-bias-correction"\n',
            source="t.toml",
        )
    # the symmetric recipe on an ONNX Runtime target: the same quantizer, so it is allowed
    mine = base.format("onnxruntime") + 'calibration_recipe = "ort-qdq-s8s8-symmetric"\n'
    assert parse_target(mine, source="t.toml").calibration_recipe == "ort-qdq-s8s8-symmetric"


# -- the shipped images


def _shipped_images():
    return find_images(calibration.images_folder())


def test_shipped_images_are_small_real_photographs_a_few_a_class():
    paths = _shipped_images()
    assert len(paths) == 30
    assert sorted({p.parent.name for p in paths}) == sorted(LABELS)
    assert all(sum(1 for p in paths if p.parent.name == label) == 3 for label in LABELS)
    assert sum(p.stat().st_size for p in paths) < 100_000
    assert len({hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}) == 30  # distinct files
    images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]
    pixels = np.stack([img.astype(np.float32) for img in images])
    assert pixels.shape == (30, 32, 32, 3)
    for path, img in zip(paths, pixels, strict=True):
        assert img.std() > 15, f"{path}: nearly constant"
        # a photograph is smooth: neighbouring pixels correlate strongly; noise's do not
        gray = img.mean(axis=2)
        corr = np.corrcoef(gray[:, :-1].ravel(), gray[:, 1:].ravel())[0, 1]
        assert corr > 0.5, f"{path}: neighbouring pixels correlate {corr:.2f}: noise, not a photograph"
    flat = pixels.reshape(30, -1)
    gaps = np.abs(flat[:, None, :] - flat[None, :, :]).mean(axis=2) + np.eye(30) * 1e9
    assert gaps.min() > 5, "two shipped images are nearly the same"


def test_selftest_pool_falls_back_to_resizing_or_noise():
    folder = calibration.images_folder()
    cifar = ModelSpec(input=InputSpec(shape=(-1, 3, 32, 32)))
    pool, source = pipeline._synthetic(cifar)
    assert source == "edgekit's shipped calibration images" and len(pool) == 30
    assert np.array_equal(pool.head(30), load_unlabelled(folder, cifar).head(30))
    # a 64x64 input whose spec does not resize: the images are resized to it, and the source says so
    big = ModelSpec(input=InputSpec(shape=(1, 64, 64, 3), layout="NHWC"), preprocess=PreprocessSpec(color_order="BGR"))
    pool, source = pipeline._synthetic(big)
    assert source == "edgekit's shipped calibration images, resized to 64x64"
    assert pool.head(4).shape == (4, 64, 64, 3) and pool.head(4).std() > 0.1
    # an input that is no 3-channel image: seeded noise, named as such
    gray = ModelSpec(input=InputSpec(shape=(-1, 1, 16, 16)))
    pool, source = pipeline._synthetic(gray)
    assert source == "seeded random inputs (the model's input has 1 channel(s), not 3)"
    assert pool.shape == (16, 1, 16, 16) and np.array_equal(pool, pipeline._synthetic(gray)[0])


def test_compile_without_images_self_tests_on_the_shipped_images(tiny_onnx, tmp_path):
    compiled = edgekit.compile_model(tiny_onnx, target="cpu", precision="fp32", output=tmp_path / "b", spec=CIFAR_SPEC)
    m = compiled.manifest
    assert m["selftest"]["source"] == "edgekit's shipped calibration images"
    with np.load(compiled.path / m["selftest"]["file"]) as stored:
        inputs = stored["inputs"]
    assert len(inputs) == m["selftest"]["inputs"] == 4
    shipped = load_unlabelled(calibration.images_folder(), _cifar_spec()).head(30)
    for x in inputs:  # each stored input is one of the shipped images, preprocessed as the model's spec says
        assert any(np.array_equal(x, s) for s in shipped)
    with edgekit.load_bundle(compiled.path) as bundle:
        assert bundle.selftest_result.passed


def _cifar_spec() -> ModelSpec:
    pre = CIFAR_SPEC["preprocess"]
    return ModelSpec(
        input=InputSpec(shape=(-1, 3, 32, 32)),
        preprocess=PreprocessSpec(resize=pre["resize"], mean=pre["mean"], std=pre["std"]),
    )
