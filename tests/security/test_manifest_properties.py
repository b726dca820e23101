"""Property-based tests of the manifest loader: whatever manifest.json holds, the only failure is a BundleError.

Arbitrary JSON values and mutations of a real bundle's manifest go through ``open_bundle`` on a folder and
through ``load_bundle`` (which also builds the runtime and runs the self-test); a handful of cases go through
the real ``edgekit inspect``.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serve.serve_support import compile_tiny
from support import json_paths, run_cli

import edgekit
from edgekit.bundle import open_bundle
from edgekit.bundle.manifest import MANIFEST
from edgekit.errors import BundleError

SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)  # fmt: skip


@pytest.fixture(scope="module")
def real_bundle(tiny_onnx, tmp_path_factory) -> Path:
    return compile_tiny(tiny_onnx, tmp_path_factory.mktemp("props") / "b.edgekit")


@pytest.fixture(scope="module")
def real_manifest(real_bundle) -> dict:
    return json.loads((real_bundle / MANIFEST).read_text())


@st.composite
def mutated(draw, manifest: dict) -> dict:
    """A real manifest with one to three subtrees replaced by arbitrary JSON, deleted, or set to a sibling's name."""
    m = copy.deepcopy(manifest)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in json_paths(m) if p]
        path = draw(st.sampled_from(paths))
        parent = m
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "filename"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "filename":
            parent[path[-1]] = draw(st.sampled_from(["model.onnx", "selftest.npz", "manifest.json", "../x", ".h", ""]))
        else:
            parent[path[-1]] = draw(json_values)
    return m


def _write(folder: Path, text: str) -> None:
    (folder / MANIFEST).write_text(text, encoding="utf-8")


def _only_bundle_errors(fn) -> None:
    try:
        fn()
    except BundleError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=150, **SETTINGS)
@given(value=json_values)
def test_arbitrary_json_manifest_is_only_ever_a_bundle_error(real_bundle, tmp_path_factory, value):
    folder = tmp_path_factory.mktemp("arb")
    for p in real_bundle.iterdir():
        shutil.copy(p, folder / p.name)
    _write(folder, json.dumps(value))
    with pytest.raises(BundleError):
        open_bundle(folder)


def _copy(bundle: Path, folder: Path) -> Path:
    for p in bundle.iterdir():
        shutil.copy(p, folder / p.name)
    return folder


@settings(max_examples=200, **SETTINGS)
@given(data=st.data())
def test_mutated_manifest_through_open_bundle(real_bundle, real_manifest, tmp_path_factory, data):
    folder = _copy(real_bundle, tmp_path_factory.mktemp("mut"))
    _write(folder, json.dumps(data.draw(mutated(real_manifest))))
    _only_bundle_errors(lambda: open_bundle(folder).close())


@settings(max_examples=40, **SETTINGS)
@given(data=st.data())
def test_mutated_manifest_through_load_bundle(real_bundle, real_manifest, tmp_path_factory, data):
    folder = _copy(real_bundle, tmp_path_factory.mktemp("load"))
    _write(folder, json.dumps(data.draw(mutated(real_manifest))))
    _only_bundle_errors(lambda: edgekit.load_bundle(folder).close())


CLI_CASES = [
    "[]",
    '{"schema_version": 1}',
    '{"schema_version": true}',
    "null",
    '"manifest"',
    "[" * 5000 + "]" * 5000,
    '{"schema_version": 1e400}',
]


@pytest.mark.slow
@pytest.mark.parametrize("text", CLI_CASES, ids=range(len(CLI_CASES)))
def test_inspect_never_prints_a_traceback(real_bundle, tmp_path, text):
    folder = tmp_path / "b"
    shutil.copytree(real_bundle, folder)
    _write(folder, text)
    res = run_cli("inspect", str(folder))
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4))
def test_inspect_of_mutated_manifests_never_prints_a_traceback(real_bundle, real_manifest, tmp_path, seed):
    import random

    rng = random.Random(seed)
    m = copy.deepcopy(real_manifest)
    for _ in range(3):
        path = rng.choice([p for p in json_paths(m) if len(p) >= 2])
        parent = m
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = rng.choice([None, "x", -1, 1e308, [], {}, True])
    folder = tmp_path / "b"
    shutil.copytree(real_bundle, folder)
    _write(folder, json.dumps(m))
    res = run_cli("inspect", str(folder))
    assert "Traceback" not in res.stderr, res.stderr
