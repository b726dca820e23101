from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from support import CIFAR_SPEC, write_images

from edgekit import imagesets
from edgekit.errors import DataError, UsageError
from edgekit.imagesets import find_images, load_calibration, load_labelled, sample
from edgekit.spec import build_spec


def test_recursive_search_finds_every_format(tmp_path):
    import cv2
    import numpy as np

    img = np.zeros((8, 8, 3), np.uint8)
    for rel in ("a.jpg", "b/c.PNG", "b/d/e.bmp", "f.webp", "g.jpeg"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / rel.lower()) if rel.endswith("PNG") else str(tmp_path / rel), img)
    (tmp_path / "notes.txt").write_text("x")
    found = {p.name.lower() for p in find_images(tmp_path)}
    assert found == {"a.jpg", "c.png", "e.bmp", "f.webp", "g.jpeg"}


def test_sample_is_deterministic_and_independent_of_location(tmp_path):
    root = write_images(tmp_path / "a", per_class=20)
    first = sample(find_images(root), 15, root=root)
    assert len(first) == 15 and first == sample(find_images(root), 15, root=root)
    moved = shutil.copytree(root, tmp_path / "elsewhere" / "b")
    again = sample(find_images(moved), 15, root=moved)
    assert [p.relative_to(moved) for p in again] == [p.relative_to(root) for p in first]
    assert len(sample(find_images(root), 500, root=root)) == 60


def test_validation_folders_must_match_labels(tmp_path):
    root = write_images(tmp_path / "val", per_class=2, classes=("cat", "dog", "zebra"))
    spec = build_spec(model_input={"name": "input", "shape": (-1, 3, 32, 32), "layout": "NCHW", "dtype": "float32"},
                      overrides={**CIFAR_SPEC, "labels": ("cat", "dog", "bird")})  # fmt: skip
    with pytest.raises(DataError, match="not among the model's labels: zebra"):
        load_labelled(root, spec, spec.labels)
    shutil.rmtree(root / "zebra")
    loaded = load_labelled(root, spec, spec.labels)
    assert loaded.labels.tolist() == [0, 0, 1, 1]
    with pytest.raises(UsageError, match="does not exist"):
        load_labelled(tmp_path / "nope", spec, spec.labels)


# --- streamed image sets: read one batch at a time, never the whole set ---

ROOT = Path(__file__).resolve().parents[1]
RESNET = ROOT / "examples" / "models" / "resnet"
SAMPLE = ROOT / "examples" / "data" / "cifar10"


def _spec32(labels=("airplane", "automobile", "bird")):
    return build_spec(model_input={"name": "input", "shape": (-1, 3, 32, 32), "layout": "NCHW", "dtype": "float32"},
                      overrides={**CIFAR_SPEC, "labels": labels})  # fmt: skip


def _old_in_memory(paths, spec) -> np.ndarray:
    """What ImageSet.tensors held before streaming: every file preprocessed, stacked into one array."""
    from edgekit.runtime.preprocess import decode_image, preprocess

    return np.stack([
        preprocess(decode_image(p.read_bytes(), name=str(p)), spec.preprocess, spec.input, color_order="BGR")
        for p in paths
    ])  # fmt: skip


def test_a_large_set_is_read_one_batch_at_a_time(tmp_path, monkeypatch):
    import tracemalloc

    root = tmp_path / "val"
    rng = np.random.default_rng(1)
    for c in ("airplane", "automobile"):
        (root / c).mkdir(parents=True)
        for i in range(1000):  # 2,000 tiny real PNG files
            cv2.imwrite(str(root / c / f"{i:04d}.png"), rng.integers(0, 255, (4, 4, 3), dtype=np.uint8))
    calls = []
    real = imagesets._preprocess
    monkeypatch.setattr(imagesets, "_preprocess", lambda *a: calls.append(1) or real(*a))
    spec = _spec32(("airplane", "automobile"))
    whole = 2000 * 3 * 32 * 32 * 4  # bytes of the 2,000 preprocessed tensors at once (24.6 MB)
    tracemalloc.start()
    try:
        images = load_labelled(root, spec, spec.labels)
        assert len(images) == 2000 and len(calls) == 2000 and images.labels.tolist() == [0] * 1000 + [1] * 1000
        _, load_peak = tracemalloc.get_traced_memory()
        calls.clear()
        tracemalloc.reset_peak()
        gen = images.batches(64)
        assert calls == []  # nothing is read before a batch is asked for
        sizes = []
        for batch in gen:
            assert len(calls) == len(batch)  # this batch's files only: none read ahead
            sizes.append(len(batch))
            calls.clear()
        _, iter_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sizes == [64] * 31 + [16]
    # a few batches' worth of working memory (one batch is 0.8 MB), not the 24.6 MB the whole set takes
    assert load_peak < whole / 4 and iter_peak < whole / 4, (load_peak, iter_peak)
    # a subset (the budget's search/check parts) is streamed the same way, from the same files
    sub = images.subset([5, 1999, 0])
    assert np.array_equal(
        np.concatenate(list(sub.batches(2))), _old_in_memory([images.paths[i] for i in (5, 1999, 0)], spec)
    )


def test_a_file_changed_after_loading_is_refused(tmp_path):
    root = write_images(tmp_path / "val", per_class=2)
    spec = _spec32()
    images = load_labelled(root, spec, spec.labels)
    cv2.imwrite(str(images.paths[1]), np.full((8, 8, 3), 7, np.uint8))
    with pytest.raises(DataError, match="changed while it was in use"):
        list(images.batches(4))


def test_streamed_accuracy_equals_the_in_memory_path_on_the_committed_sample():
    import onnxruntime as ort

    from edgekit.frontends import load_model
    from edgekit.measure import evaluate as ev
    from edgekit.spec import load_spec_file

    overrides = load_spec_file(RESNET / "model.toml")
    spec = build_spec(model_input=load_model(RESNET / "model.onnx").input, overrides=overrides)
    images = load_labelled(SAMPLE / "test", spec, spec.labels)
    session = ort.InferenceSession(str(RESNET / "model.onnx"), providers=["CPUExecutionProvider"])
    infer = lambda x: session.run(None, {spec.input.name: x})[0]  # noqa: E731
    held = _old_in_memory(images.paths, spec)
    pooled = lambda x: x.mean(axis=(2, 3))  # noqa: E731  (a cheap second "model": the per-channel means)
    old = ev.evaluate(ev.run_batches(infer, held, 64), images.labels, spec.labels)
    new_out, means = ev.run_batches(infer, images, 64), ev.run_batches(pooled, images, 64)
    new = ev.evaluate(new_out, images.labels, spec.labels)
    assert len(images) == 2000 and np.array_equal(new.outputs, old.outputs)
    assert np.array_equal(means, ev.run_batches(pooled, held, 64))
    assert (new.summary(), new.per_class) == (old.summary(), old.per_class)
    # the budget's figures and the calibration readers see the same images too
    from edgekit.quantize import budget as bud
    from edgekit.quantize import nncf_ov, onnxruntime_qdq

    part_old, part_new = bud.Part(held, images.labels, old.outputs), bud.Part(images, images.labels, old.outputs)
    assert bud._outputs(pooled, part_new.images, 64).tobytes() == bud._outputs(pooled, part_old.images, 64).tobytes()
    calib = load_calibration(SAMPLE / "calib", spec, size=300)
    stacked = _old_in_memory(calib.paths, spec)
    reader = onnxruntime_qdq._Reader("input", calib, 32)
    got = []
    while (item := reader.get_next()) is not None:
        got.append(item["input"])
    assert np.array_equal(np.concatenate(got), stacked)
    batches = nncf_ov._Batches(calib, 30)
    assert len(batches) == 10 and all(np.array_equal(a, b) for a, b in zip(batches, batches, strict=True))
    assert np.array_equal(np.concatenate(list(batches)), stacked)
