from __future__ import annotations

import shutil

import pytest
from support import CIFAR_SPEC, write_images

from edgekit.errors import DataError, UsageError
from edgekit.imagesets import find_images, load_labelled, sample
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
