"""The run-time side reads the typed manifest (``Bundle.info``, an ``edgekit.bundle.Manifest``).

Each test changes only the typed manifest of a real, opened bundle (its JSON object, ``manifest``, stays as
compiled) and checks that the runtime, its self-test, the daemon's summary and ``inspect`` see the change.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from serve.serve_support import serve_bundle  # noqa: F401
from support import SAMPLE

import edgekit
from edgekit.bundle import Manifest, open_bundle
from edgekit.errors import BundleError
from edgekit.inspection import summary_lines
from edgekit.runtime import selftest
from edgekit.runtime.session import Bundle
from edgekit.serve.engine import summary

IMAGE = SAMPLE / "test" / "dog" / "0001.jpg"


def _info(path: Path) -> Manifest:
    opened = open_bundle(path)
    opened.close()
    return opened.typed_manifest


def _load(path: Path, *, run_selftest: bool = True, **changes) -> Bundle:
    """The bundle at ``path``, loaded from a typed manifest with ``changes`` (the JSON object unchanged)."""
    opened = open_bundle(path)
    typed = dataclasses.replace(opened.typed_manifest, **changes)
    try:
        return Bundle(dataclasses.replace(opened, typed_manifest=typed), run_selftest=run_selftest)
    except BaseException:
        opened.close()
        raise


def test_bundle_info_is_the_typed_manifest(serve_bundle):  # noqa: F811
    with edgekit.load_bundle(serve_bundle) as b:
        assert isinstance(b.info, Manifest)
        assert b.info == Manifest.from_dict(b.manifest)
        assert b.manifest == b.info.to_dict()
        assert b.input.shape == b.info.input.shape and b.task.name == b.info.model.task


def test_the_runtime_reads_the_input_labels_and_task_from_the_typed_manifest(serve_bundle):  # noqa: F811
    info = _info(serve_bundle)
    static = dataclasses.replace(info.input, shape=(1, *info.input.shape[1:]))
    labels = tuple(f"typed-{i}" for i in range(len(info.labels)))
    with _load(serve_bundle, input=static, labels=labels) as b:
        assert b.manifest["input"]["shape"][0] == -1  # the JSON object is as compiled
        assert b.input.shape == static.shape and b.static_batch == 1
        assert b.predict(IMAGE).label in labels
        assert summary(b)["input"]["shape"] == [1, 3, 32, 32]
    with pytest.raises(BundleError, match=r"manifest field 'model\.task': task 'segmentation' is not supported yet"):
        _load(serve_bundle, model=dataclasses.replace(info.model, task="segmentation"))


def test_the_self_test_reads_the_typed_selftest(serve_bundle):  # noqa: F811
    info = _info(serve_bundle)
    fewer = dataclasses.replace(info.selftest, inputs=info.selftest.inputs - 1)
    with pytest.raises(BundleError, match=rf"manifest field 'selftest.inputs' says {fewer.inputs}"):
        _load(serve_bundle, selftest=fewer)
    with _load(serve_bundle, run_selftest=False) as b:  # a Selftest and its JSON object run the same
        typed = selftest.run(b.infer, serve_bundle, b.info.selftest, b.input.shape, task=b.task)
        as_dict = selftest.run(b.infer, serve_bundle, b.manifest["selftest"], b.input.shape, task=b.task)
    assert typed == as_dict and typed.passed


def test_inspect_and_the_daemon_summary_read_the_typed_manifest(serve_bundle):  # noqa: F811
    summary_ = edgekit.inspect(serve_bundle)
    assert summary_.info == Manifest.from_dict(summary_.manifest)
    assert summary_lines(summary_.info) == summary_lines(summary_.manifest)
    info = summary_.info
    with _load(serve_bundle, model=dataclasses.replace(info.model, name="renamed")) as b:
        assert summary(b)["model"] == {"name": "renamed", "task": "classification"}
    renamed = dataclasses.replace(info, model=dataclasses.replace(info.model, name="renamed"))
    assert summary_lines(renamed, brief=True)[0].startswith("model:        renamed (classification")
