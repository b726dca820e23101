"""Hostile bundles: hidden models, paths out of the bundle, links, special files, wrong-typed manifests,
zip bombs and lying archives, and ``compile -o`` over folders that are not edgekit bundles.

Every bundle here is a real one compiled once per session and copied per test before it is tampered with;
the CLI cases run the installed ``edgekit`` entry point.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from serve.serve_support import free_port, serve_bundle, serve_bundle_ov, write_video  # noqa: F401
from support import SAMPLE, run_cli, tiny_module

import edgekit
from edgekit.bundle.manifest import MANIFEST, file_entry
from edgekit.errors import BundleError

IMAGE = next(p for p in sorted((SAMPLE / "test" / "cat").iterdir()))


# -- real bundles, built once
# The daemon tests' bundles, shared (every test here tampers with a copy, never with these).
@pytest.fixture(scope="session")
def cpu_bundle(serve_bundle) -> Path:  # noqa: F811
    return serve_bundle


@pytest.fixture(scope="session")
def ov_bundle(serve_bundle_ov) -> Path:  # noqa: F811
    return serve_bundle_ov


@pytest.fixture(scope="session")
def trt_bundle(trt_int8_bundle) -> Path:
    return trt_int8_bundle


@pytest.fixture(scope="session")
def evil_onnx(tmp_path_factory) -> Path:
    """A second model with the same input and output but other weights: other predictions."""
    import torch

    path = tmp_path_factory.mktemp("evil") / "evil.onnx"
    torch.onnx.export(
        tiny_module(seed=7), (torch.zeros(1, 3, 32, 32),), str(path), input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False,
    )  # fmt: skip
    return path


def copy(src: Path, tmp_path: Path, name: str = "b.edgekit") -> Path:
    dst = tmp_path / name
    shutil.copytree(src, dst, symlinks=True)
    return dst


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / MANIFEST).read_text())


def rewrite(bundle: Path, change) -> None:
    m = manifest_of(bundle)
    change(m)
    (bundle / MANIFEST).write_text(json.dumps(m, indent=2))


def relist(bundle: Path, *names: str) -> None:
    """What an attacker does after changing a file: put its new checksum into the manifest."""
    rewrite(bundle, lambda m: m["files"].update({n: file_entry(bundle / n) for n in names}))


def assert_refused(bundle: Path, *needles: str, env: dict | None = None) -> str:
    """inspect exits non-zero with one line naming the problem; load_bundle raises BundleError."""
    res = run_cli("inspect", str(bundle), env=env)
    err = res.stderr.strip()
    assert res.returncode != 0, res.stdout
    assert "Traceback" not in res.stderr and len(err.splitlines()) == 1, res.stderr
    assert "verified" not in res.stdout
    for needle in needles:
        assert needle in err, err
    with pytest.raises(BundleError) as info:
        edgekit.load_bundle(bundle).close()
    assert "\n" not in str(info.value)
    return err


def predicted_logits(bundle: Path) -> np.ndarray:
    with edgekit.load_bundle(bundle) as loaded:
        return loaded.infer(loaded.preprocess(IMAGE)[None])


# -- 1. the manifest's paths: listed, checksummed, regular files inside the bundle
@pytest.mark.slow
def test_untampered_bundles_load_and_inspect(cpu_bundle, ov_bundle, trt_bundle):
    for bundle in (cpu_bundle, ov_bundle, trt_bundle):
        res = run_cli("inspect", str(bundle))
        assert res.returncode == 0 and "verified" in res.stdout, res.stderr
    for bundle in (cpu_bundle, ov_bundle):
        with edgekit.load_bundle(bundle) as loaded:
            assert loaded.selftest_result.passed


@pytest.mark.slow
@pytest.mark.parametrize("where", ["dotfile", "dotfolder", "parent", "absolute", "dotted-relative"])
def test_hidden_model_that_no_checksum_covers_is_refused(cpu_bundle, evil_onnx, tmp_path, where):
    bundle = copy(cpu_bundle, tmp_path)
    honest = predicted_logits(bundle)
    assert not np.allclose(honest, _session_logits(evil_onnx, bundle)), "the hidden model must predict otherwise"
    if where == "dotfile":
        shutil.copy(evil_onnx, bundle / ".model.onnx")
        name = ".model.onnx"
    elif where == "dotfolder":
        (bundle / ".cache").mkdir()
        shutil.copy(evil_onnx, bundle / ".cache" / "m.onnx")
        name = ".cache/m.onnx"
    elif where == "parent":
        shutil.copy(evil_onnx, tmp_path / "evil.onnx")
        name = "../evil.onnx"
    elif where == "absolute":
        shutil.copy(evil_onnx, tmp_path / "evil.onnx")
        name = str(tmp_path / "evil.onnx")
    else:
        shutil.copy(evil_onnx, tmp_path / "evil.onnx")
        name = "./../evil.onnx"
    rewrite(bundle, lambda m: m["backend"].update(model_file=name))
    err = assert_refused(bundle, "backend.model_file")
    assert "Traceback" not in err


def _session_logits(onnx: Path, bundle: Path) -> np.ndarray:
    import onnxruntime as ort

    with edgekit.load_bundle(bundle) as loaded:
        x = loaded.preprocess(IMAGE)[None]
    return ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


@pytest.mark.slow
def test_model_file_naming_a_listed_file_in_another_folder_spelling_is_refused(cpu_bundle, tmp_path):
    bundle = copy(cpu_bundle, tmp_path)
    rewrite(bundle, lambda m: m["backend"].update(model_file="./model.onnx"))
    assert_refused(bundle, "backend.model_file")


@pytest.mark.slow
def test_unlisted_dotfiles_and_dotfolders_are_not_exempt(cpu_bundle, tmp_path):
    bundle = copy(cpu_bundle, tmp_path)
    (bundle / ".hidden").write_bytes(b"x")
    assert_refused(bundle, "unexpected file '.hidden'")
    (bundle / ".hidden").unlink()
    (bundle / ".git").mkdir()
    (bundle / ".git" / "config").write_text("x")
    assert_refused(bundle, "unexpected file '.git/config'")


@pytest.mark.slow
def test_selftest_file_must_be_listed(cpu_bundle, tmp_path):
    bundle = copy(cpu_bundle, tmp_path)
    shutil.copy(bundle / "selftest.npz", bundle / ".st.npz")
    rewrite(bundle, lambda m: m["selftest"].update(file=".st.npz"))
    assert_refused(bundle, "selftest.file")


@pytest.mark.slow
@pytest.mark.parametrize(
    "bad", ["../model.onnx", "/etc/passwd", "a\\b.onnx", "C:model.onnx", "a//b", "./model.onnx", ""]
)
def test_unsafe_names_in_the_file_list_are_refused(cpu_bundle, tmp_path, bad):
    bundle = copy(cpu_bundle, tmp_path)
    rewrite(bundle, lambda m: m["files"].update({bad: m["files"]["model.onnx"]}))
    assert_refused(bundle, "files")


@pytest.mark.slow
def test_symlinked_file_is_refused_even_with_the_right_checksum(cpu_bundle, tmp_path):
    bundle = copy(cpu_bundle, tmp_path)
    outside = tmp_path / "outside.onnx"
    shutil.copy(bundle / "model.onnx", outside)
    (bundle / "model.onnx").unlink()
    (bundle / "model.onnx").symlink_to(outside)
    assert_refused(bundle, "symbolic link", "model.onnx")


@pytest.mark.slow
def test_symlinked_folder_is_refused(cpu_bundle, evil_onnx, tmp_path):
    bundle = copy(cpu_bundle, tmp_path)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(evil_onnx, outside / "m.onnx")
    (bundle / "extra").symlink_to(outside, target_is_directory=True)
    assert_refused(bundle, "symbolic link", "extra")


@pytest.mark.slow
def test_bundle_folder_that_is_a_symlink_is_refused(cpu_bundle, tmp_path):
    real = copy(cpu_bundle, tmp_path, "real")
    link = tmp_path / "link.edgekit"
    link.symlink_to(real, target_is_directory=True)
    assert_refused(link, "symbolic link")


@pytest.mark.slow
def test_special_file_in_the_bundle_is_refused(cpu_bundle, tmp_path):
    bundle = copy(cpu_bundle, tmp_path)
    os.mkfifo(bundle / "pipe")
    assert_refused(bundle, "'pipe'", "not a regular file")


@pytest.mark.slow
def test_manifest_that_is_a_symlink_is_refused(cpu_bundle, tmp_path):
    bundle = copy(cpu_bundle, tmp_path)
    shutil.move(bundle / MANIFEST, tmp_path / "m.json")
    (bundle / MANIFEST).symlink_to(tmp_path / "m.json")
    assert_refused(bundle, "symbolic link", MANIFEST)


@pytest.mark.slow
def test_openvino_weights_beside_the_ir_must_be_listed(ov_bundle, tmp_path):
    bundle = copy(ov_bundle, tmp_path)
    (bundle / "model.bin").unlink()
    rewrite(bundle, lambda m: m["files"].pop("model.bin"))
    assert_refused(bundle, "model.bin")


@pytest.mark.slow
@pytest.mark.parametrize(
    "field, change",
    [
        ("backend.build_plan.onnx", lambda m, p: m["backend"]["build_plan"].update(onnx=p)),
        ("backend.build_plan.calibration_cache", lambda m, p: m["backend"]["build_plan"].update(calibration_cache=p)),
        ("quantization.calibration_cache.file", lambda m, p: m["quantization"]["calibration_cache"].update(file=p)),
    ],
)
def test_tensorrt_plan_files_must_be_listed(trt_bundle, evil_onnx, tmp_path, field, change):
    bundle = copy(trt_bundle, tmp_path)
    shutil.copy(evil_onnx, tmp_path / "evil.onnx")
    rewrite(bundle, lambda m: change(m, "../evil.onnx"))
    assert_refused(bundle, field)


# -- ONNX external data pointing out of the bundle
def _with_external_data(src: Path, bundle: Path, location: str, real: Path) -> None:
    """Rewrite the bundle's model.onnx so its weights live in external data at ``location``."""
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    model = onnx.load(str(src))
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="w.bin", size_threshold=0)
    staging = bundle.parent / "staging"
    staging.mkdir(exist_ok=True)
    onnx.save_model(model, str(staging / "model.onnx"))
    shutil.move(staging / "w.bin", real)
    model = onnx.load(str(staging / "model.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(model, str(bundle / "model.onnx"))
    shutil.rmtree(staging)


def test_external_data_listed_in_the_bundle_loads(cpu_bundle, tmp_path):
    bundle = copy(cpu_bundle, tmp_path)
    _with_external_data(bundle / "model.onnx", bundle, "weights.bin", bundle / "weights.bin")
    relist(bundle, "model.onnx", "weights.bin")
    with edgekit.load_bundle(bundle) as loaded:
        assert loaded.selftest_result.passed


@pytest.mark.slow
@pytest.mark.parametrize("where", ["parent", "absolute", "unlisted"])
def test_external_data_outside_the_bundle_is_refused_at_verification(cpu_bundle, evil_onnx, tmp_path, where):
    bundle = copy(cpu_bundle, tmp_path)
    location = {"parent": "../secret.bin", "absolute": str(tmp_path / "secret.bin"), "unlisted": "w.bin"}[where]
    real = bundle / "w.bin" if where == "unlisted" else tmp_path / "secret.bin"
    _with_external_data(evil_onnx, bundle, location, real)
    if where == "unlisted":  # the file is in the bundle, but not in the list: hide it from the walk
        real.rename(tmp_path / "w.bin")
    relist(bundle, "model.onnx")
    assert_refused(bundle, "external data", "model.onnx")


@pytest.mark.parametrize("location", ["../secret.bin", "ABSOLUTE"])
def test_installed_runtimes_also_refuse_external_data_out_of_the_model_folder(evil_onnx, tmp_path, location):
    """Defence in depth: ONNX Runtime and OpenVINO as installed here refuse on their own (older ones may not)."""
    import onnxruntime as ort
    import openvino as ov

    folder = tmp_path / "m"
    folder.mkdir()
    location = str(tmp_path / "secret.bin") if location == "ABSOLUTE" else location
    _with_external_data(evil_onnx, folder, location, tmp_path / "secret.bin")
    with pytest.raises(Exception, match="(?i)external data|escapes|resolves|absolute"):
        ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="(?i)resolves|outside|escape|absolute"):
        ov.Core().read_model(str(folder / "model.onnx"))


# -- 11. every manifest field's type and range
WRONG_TYPES = [
    ("selftest.tolerance", lambda m: m["selftest"].update(tolerance=1e9), "0 to 0.5"),
    ("selftest.tolerance", lambda m: m["selftest"].update(tolerance="0.01"), "number"),
    ("selftest.tolerance", lambda m: m["selftest"].update(tolerance=0), "0 to 0.5"),
    ("selftest.inputs", lambda m: m["selftest"].update(inputs="4"), ""),
    ("selftest.file", lambda m: m["selftest"].update(file=5), ""),
    ("selftest", lambda m: m.update(selftest=[]), ""),
    ("input.shape", lambda m: m["input"].update(shape="1,3,32,32"), ""),
    ("input.shape", lambda m: m["input"].update(shape=[-1, 3, 0, 32]), ""),
    ("input.shape", lambda m: m["input"].update(shape=[-1, 3, 32]), ""),
    ("input.dtype", lambda m: m["input"].update(dtype="object"), ""),
    ("input.layout", lambda m: m["input"].update(layout=["NCHW"]), ""),
    ("input", lambda m: m.update(input=None), ""),
    ("preprocess.mean", lambda m: m["preprocess"].update(mean=[0.1, 0.2]), ""),
    ("preprocess.std", lambda m: m["preprocess"].update(std=[0, 1, 1]), ""),
    ("preprocess.resize", lambda m: m["preprocess"].update(resize="big"), ""),
    ("preprocess.scale", lambda m: m["preprocess"].update(scale=None), ""),
    ("preprocess.extra", lambda m: m["preprocess"].update(extra=1), ""),
    ("labels", lambda m: m.update(labels="cat,dog"), ""),
    ("labels[2]", lambda m: m["labels"].__setitem__(2, 7), ""),
    ("postprocess.output", lambda m: m["postprocess"].update(output=3), ""),
    ("postprocess.top_k", lambda m: m["postprocess"].update(top_k="5"), ""),
    ("backend.name", lambda m: m["backend"].update(name=["onnxruntime"]), ""),
    ("backend.model_file", lambda m: m["backend"].update(model_file=None), ""),
    (
        "target.backend_options.intra_op_threads",
        lambda m: m["target"]["backend_options"].update(intra_op_threads="x"),
        "",
    ),
    ("target.device", lambda m: m["target"].update(device=1), ""),
    ("files.model.onnx.size", lambda m: m["files"]["model.onnx"].update(size="13060"), ""),
    ("files.model.onnx.sha256", lambda m: m["files"]["model.onnx"].update(sha256="abc"), ""),
    ("files", lambda m: m.update(files=["model.onnx"]), ""),
    ("model.name", lambda m: m["model"].update(name={"a": 1}), ""),
    ("precision.requested", lambda m: m["precision"].update(requested=1), ""),
    ("latency", lambda m: m.update(latency=[1]), ""),
    ("accuracy", lambda m: m.update(accuracy="high"), ""),
    ("notes", lambda m: m.update(notes="x"), ""),
    ("created", lambda m: m.update(created=5), ""),
]


@pytest.mark.slow
@pytest.mark.parametrize("field, change, words", WRONG_TYPES, ids=[f"{c[0]}-{i}" for i, c in enumerate(WRONG_TYPES)])
def test_wrong_typed_manifest_field_is_one_line_naming_it(cpu_bundle, tmp_path, field, change, words):
    bundle = copy(cpu_bundle, tmp_path)
    rewrite(bundle, change)
    err = assert_refused(bundle, f"'{field}'", words, "recompile")
    assert "tampered" in err


@pytest.mark.slow
@pytest.mark.parametrize("name", ["os:system", "../onnxruntime", "fake\n\x1b[31mok\x1b[0m"])
def test_unregistered_backend_name_is_one_escaped_line_naming_the_bundle(cpu_bundle, tmp_path, name):
    """A manifest naming a backend this edgekit does not have (a module path, a path, terminal escapes) is refused
    when loaded, with the bundle's path and the name escaped; nothing is imported by that name."""
    bundle = copy(cpu_bundle, tmp_path)
    rewrite(bundle, lambda m: m["backend"].update(name=name))
    with pytest.raises(BundleError) as info:
        edgekit.load_bundle(bundle).close()
    text = str(info.value)
    assert "\n" not in text and "\x1b" not in text and str(bundle) in text and repr(name) in text
    res = run_cli("predict", str(bundle), str(min((SAMPLE / "calib" / "cat").iterdir())))
    assert res.returncode == 1 and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "which is not a backend registered here" in res.stderr and "\x1b" not in res.stderr


@pytest.mark.slow
def test_wrong_typed_build_plan_is_one_line(trt_bundle, tmp_path):
    bundle = copy(trt_bundle, tmp_path)
    rewrite(bundle, lambda m: m["backend"]["build_plan"].update(min_shape="1x3x32x32"))
    assert_refused(bundle, "'backend.build_plan.min_shape'")


@pytest.mark.slow
def test_nan_tolerance_is_refused(cpu_bundle, tmp_path):
    bundle = copy(cpu_bundle, tmp_path)
    text = (bundle / MANIFEST).read_text().replace('"tolerance": 0.01', '"tolerance": NaN')
    (bundle / MANIFEST).write_text(text)
    assert_refused(bundle, "'selftest.tolerance'")


@pytest.mark.slow
def test_serve_refuses_a_wrong_typed_manifest_at_start_up(cpu_bundle, tmp_path):
    bundle = copy(cpu_bundle, tmp_path)
    rewrite(bundle, lambda m: m["input"].update(shape=[-1, "3", 32, 32]))
    video = write_video(tmp_path / "clip.avi", frames=10)
    res = run_cli("serve", str(bundle), "--source", str(video), "--port", str(free_port()), timeout=120)
    assert res.returncode != 0 and "Traceback" not in res.stderr, res.stderr
    assert "'input.shape" in res.stderr


@pytest.mark.slow
def test_selftest_data_that_does_not_match_the_input_is_refused(cpu_bundle, tmp_path):
    bundle = copy(cpu_bundle, tmp_path)
    np.savez(bundle / "selftest.npz", inputs=np.zeros((4, 3, 8, 8), np.float32), expected=np.zeros((4, 10), np.float32))
    relist(bundle, "selftest.npz")
    res = run_cli("predict", str(bundle), str(IMAGE))
    assert res.returncode == 1 and "Traceback" not in res.stderr and "selftest" in res.stderr, res.stderr


@pytest.mark.slow
def test_model_file_naming_a_listed_non_model_is_one_line(cpu_bundle, tmp_path):
    bundle = copy(cpu_bundle, tmp_path)
    rewrite(bundle, lambda m: m["backend"].update(model_file="selftest.npz"))
    res = run_cli("predict", str(bundle), str(IMAGE))
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert "selftest.npz" in res.stderr


# -- 12. packed bundles: sizes, ratios, names, limits
def _pack(bundle: Path, out: Path, extra=(), *, skip=(), compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(out, "w", compression=compression) as zf:
        for p in sorted(bundle.iterdir()):
            if p.name not in skip:
                zf.write(p, p.name)
        for name, data in extra:
            zf.writestr(name, data)
    return out


@pytest.fixture(scope="session")
def zip_bomb(cpu_bundle, tmp_path_factory) -> Path:
    """A ~1 MB packed bundle whose selftest.npz member unpacks to 1 GiB of zeros."""
    out = tmp_path_factory.mktemp("bomb") / "bomb.edgekit"
    zero = bytes(1 << 20)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for p in sorted(cpu_bundle.iterdir()):
            if p.name != "selftest.npz":
                zf.write(p, p.name)
        with zf.open("selftest.npz", "w", force_zip64=True) as fh:
            for _ in range(1024):
                fh.write(zero)
    return out


def _private_tmp(tmp_path: Path, monkeypatch) -> Path:
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr("tempfile.tempdir", str(tmp))
    return tmp


@pytest.mark.slow
def test_zip_bomb_is_refused_before_extracting(zip_bomb, tmp_path, monkeypatch):
    assert zip_bomb.stat().st_size < 3 << 20
    tmp = _private_tmp(tmp_path, monkeypatch)
    assert_refused(zip_bomb, "selftest.npz", "compression ratio", env={"TMPDIR": str(tmp)})
    assert list(tmp.iterdir()) == []


def _lie_about_size(archive: Path, member: str, declared: int) -> None:
    """Patch the member's uncompressed size in its local header and the central directory."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(member)
    local = info.header_offset
    assert data[local : local + 4] == b"PK\x03\x04"
    struct.pack_into("<I", data, local + 22, declared)
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46 : pos + 46 + name_len].decode() == member:
            struct.pack_into("<I", data, pos + 24, declared)
        pos = data.find(b"PK\x01\x02", pos + 4)
    archive.write_bytes(bytes(data))


@pytest.mark.slow
def test_member_larger_than_it_declares_is_refused(cpu_bundle, tmp_path, monkeypatch):
    tmp = _private_tmp(tmp_path, monkeypatch)
    packed = _pack(cpu_bundle, tmp_path / "p.edgekit", compression=zipfile.ZIP_DEFLATED)
    _lie_about_size(packed, "model.onnx", 100)
    assert_refused(packed, "model.onnx", env={"TMPDIR": str(tmp)})
    assert list(tmp.iterdir()) == []


@pytest.mark.slow
def test_duplicate_member_names_are_refused(cpu_bundle, evil_onnx, tmp_path):
    packed = _pack(cpu_bundle, tmp_path / "p.edgekit", [("model.onnx", evil_onnx.read_bytes())])
    assert_refused(packed, "model.onnx", "more than once")


@pytest.mark.slow
def test_file_and_folder_of_the_same_name_are_refused(cpu_bundle, tmp_path):
    packed = _pack(cpu_bundle, tmp_path / "p.edgekit", [("model.onnx/x", b"x")])
    assert_refused(packed, "model.onnx")


@pytest.mark.slow
def test_too_many_members_are_refused(cpu_bundle, tmp_path, monkeypatch):
    tmp = _private_tmp(tmp_path, monkeypatch)
    packed = _pack(cpu_bundle, tmp_path / "p.edgekit", [(f"x/{i}", b"") for i in range(5000)])
    assert_refused(packed, "members, more than the", env={"TMPDIR": str(tmp)})
    assert list(tmp.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", ["a\\..\\..\\x", "C:/x", "a//b", "./manifest.json", "/abs"])
def test_unsafe_member_names_are_refused(cpu_bundle, tmp_path, name):
    packed = _pack(cpu_bundle, tmp_path / "p.edgekit", [(name, b"x")])
    assert_refused(packed)


@pytest.mark.slow
def test_packed_bundle_with_a_hidden_member_is_refused(cpu_bundle, evil_onnx, tmp_path):
    src = copy(cpu_bundle, tmp_path, "src")
    rewrite(src, lambda m: m["backend"].update(model_file=".m.onnx"))
    packed = _pack(src, tmp_path / "p.edgekit", [(".m.onnx", evil_onnx.read_bytes())])
    assert_refused(packed, ".m.onnx")


def test_untampered_packed_bundle_loads_and_cleans_up(cpu_bundle, tmp_path, monkeypatch):
    tmp = _private_tmp(tmp_path, monkeypatch)
    packed = _pack(cpu_bundle, tmp_path / "p.edgekit", compression=zipfile.ZIP_DEFLATED)
    with edgekit.load_bundle(packed) as loaded:
        assert loaded.selftest_result.passed
    assert list(tmp.iterdir()) == []


# -- 3. compile -o over folders and files that are not edgekit bundles
def _compile_cli(onnx: Path, out: Path, *extra: str):
    return run_cli("compile", str(onnx), "-t", "cpu", "-p", "fp32", "-o", str(out), "--resize", "32,32", *extra)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_compile_refuses_a_folder_with_a_foreign_manifest(tiny_onnx, tmp_path):
    app = tmp_path / "my-app"
    app.mkdir()
    (app / MANIFEST).write_text(json.dumps({"name": "my-app", "version": "1.0", "icons": []}))
    (app / "index.html").write_text("<html>mine</html>")
    (app / "src").mkdir()
    (app / "src" / "main.js").write_text("console.log(1)")
    before = _snapshot(app)
    res = _compile_cli(tiny_onnx, app)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert str(app) in res.stderr and "not a bundle" in res.stderr and "-o" in res.stderr
    assert _snapshot(app) == before


@pytest.mark.slow
def test_compile_refuses_a_bundle_folder_holding_other_files(cpu_bundle, tiny_onnx, tmp_path):
    bundle = copy(cpu_bundle, tmp_path)
    (bundle / "notes.txt").write_text("my notes")
    before = _snapshot(bundle)
    res = _compile_cli(tiny_onnx, bundle)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "notes.txt" in res.stderr and str(bundle) in res.stderr
    assert _snapshot(bundle) == before


@pytest.mark.slow
def test_compile_replaces_a_previous_bundle(cpu_bundle, tiny_onnx, tmp_path):
    bundle = copy(cpu_bundle, tmp_path)
    res = _compile_cli(tiny_onnx, bundle, "-p", "fp16")
    assert res.returncode == 0, res.stderr
    assert manifest_of(bundle)["precision"]["requested"] == "fp16"


@pytest.mark.slow
def test_pack_refuses_a_zip_that_is_not_a_bundle(tiny_onnx, tmp_path):
    other = tmp_path / "photos.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr(MANIFEST, json.dumps({"name": "photos"}))
        zf.writestr("a.jpg", b"\xff\xd8 not really")
    before = other.read_bytes()
    res = _compile_cli(tiny_onnx, other, "--pack")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert str(other) in res.stderr and "-o" in res.stderr
    assert other.read_bytes() == before


@pytest.mark.slow
def test_pack_replaces_a_previous_packed_bundle(cpu_bundle, tiny_onnx, tmp_path):
    packed = _pack(cpu_bundle, tmp_path / "p.edgekit")
    res = _compile_cli(tiny_onnx, packed, "--pack", "-p", "fp16")
    assert res.returncode == 0, res.stderr
    with zipfile.ZipFile(packed) as zf:
        assert json.loads(zf.read(MANIFEST))["precision"]["requested"] == "fp16"
