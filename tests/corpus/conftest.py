"""The corpus fixtures: the models of corpus_models.py, written once a session, and the images they are
measured on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from corpus_models import CORPUS, build
from support import SAMPLE

from edgekit.imagesets import load_unlabelled
from edgekit.spec import InputSpec, ModelSpec, PreprocessSpec

# edgekit's default preprocessing for a 32x32 input (resize, RGB, x/255): what the compiles use too
SPEC = ModelSpec(input=InputSpec(shape=(-1, 3, 32, 32)), preprocess=PreprocessSpec(resize=(32, 32)))


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> dict[str, Path]:
    """Every corpus model, by name, its head standardised on 64 of the committed calibration images."""
    folder = tmp_path_factory.mktemp("corpus")
    images = load_unlabelled(SAMPLE / "calib", SPEC).head(64)
    return {name: build(name, folder, images) for name in CORPUS}


@pytest.fixture(scope="session")
def corpus_images(small_val) -> np.ndarray:
    """The 200 validation images (20 a class, committed CIFAR-10 test sample), preprocessed."""
    return load_unlabelled(small_val, SPEC).head(200)
