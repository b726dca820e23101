"""The registry: built-ins plus the edgekit.backends entry-point group, loaded lazily, one list for all."""

from __future__ import annotations

import sys

import pytest
from fake_plugin import ENTRY_POINT, PLUGIN, TARGET_TOML, write_dist_info

from edgekit import registry
from edgekit.backends.base import Backend, NoOptions
from edgekit.bundle.manifest import named_files
from edgekit.errors import DependencyError, UsageError
from edgekit.targets import get_target


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A fresh path for plugin metadata, the fake plugin's package importable, and a clean registry."""
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(PLUGIN))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_loaded", {})
    yield site
    for name in [m for m in sys.modules if m.startswith("edgekit_fake_backend")]:
        del sys.modules[name]


def test_the_built_ins_are_the_registry_and_each_class_carries_its_id():
    assert registry.backend_ids()[:3] == ["onnxruntime", "openvino", "tensorrt"]
    for backend_id in registry.BUILTINS:
        cls = registry.backend(backend_id)
        assert issubclass(cls, Backend) and cls.id == backend_id
        assert registry.find(backend_id) is cls


def test_an_unknown_backend_is_one_line_naming_the_registered_ones():
    with pytest.raises(UsageError, match=r"backend 'tensorrtt' is not registered; registered backends: onnxruntime, "
                                         r"openvino, tensorrt \(a third-party backend registers in the "
                                         r"'edgekit.backends' entry-point group"):  # fmt: skip
        registry.backend("tensorrtt")
    assert registry.find("tensorrtt") is None


def test_a_backend_is_a_class_never_an_instance():
    with pytest.raises(TypeError, match="never instantiated"):
        registry.backend("onnxruntime")()


def test_a_concrete_backend_without_an_id_is_refused_when_defined():
    with pytest.raises(TypeError, match="must set the class attribute id"):

        class NoId(Backend):  # defining it is the test
            compile = classmethod(lambda cls, job: None)
            runtime_class = classmethod(lambda cls: None)
            measure_here = classmethod(lambda cls, target, host, log: None)


def test_a_plugin_is_listed_without_being_imported_and_imported_when_asked_for(site):
    write_dist_info(site, {"fake": ENTRY_POINT})
    assert registry.backend_ids() == ["onnxruntime", "openvino", "tensorrt", "fake"]
    assert registry.is_registered("fake") and not registry.is_registered("faek") and not registry.is_registered(["x"])
    assert "edgekit_fake_backend" not in sys.modules
    cls = registry.backend("fake")
    assert cls.id == "fake" and cls.__module__ == "edgekit_fake_backend.backend"
    assert cls.options_type is not NoOptions and cls.runtime_class().__name__ == "FakeRuntime"


def test_a_target_file_naming_a_plugin_backend_loads_and_an_unknown_one_lists_the_plugins(site, tmp_path):
    write_dist_info(site, {"fake": ENTRY_POINT})
    (tmp_path / "fake.toml").write_text(TARGET_TOML)
    assert get_target(tmp_path / "fake.toml").backend == "fake"
    (tmp_path / "bad.toml").write_text(TARGET_TOML.replace('backend = "fake"', 'backend = "faek"'))
    with pytest.raises(UsageError, match="backend 'faek' is not one of: onnxruntime, openvino, tensorrt, fake"):
        get_target(tmp_path / "bad.toml")


def test_a_plugin_cannot_take_a_built_in_id(site):
    write_dist_info(site, {"onnxruntime": ENTRY_POINT})
    assert registry.backend_ids() == ["onnxruntime", "openvino", "tensorrt"]
    assert registry.backend("onnxruntime").__module__ == "edgekit.backends.onnxruntime.backend"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("edgekit_fake_backend.missing:FakeBackend", r"cannot be imported \(ModuleNotFoundError"),
        ("edgekit_fake_backend.runtime:FakeRuntime", "is not a concrete subclass of edgekit.backends.base.Backend"),
        ("edgekit.backends.base:Backend", "is not a concrete subclass"),
        (ENTRY_POINT, "has id 'fake', not 'other'; make the entry point's name its id"),
    ],
)
def test_a_broken_plugin_is_one_line_naming_it(site, value, message):
    write_dist_info(site, {"other": value})
    with pytest.raises(DependencyError, match=rf"backend plugin 'other' \({value}, entry-point group edgekit.backends\) "
                                              rf".*{message}"):  # fmt: skip
        registry.backend("other")


def test_the_manifest_names_a_backends_own_files_only_for_a_registered_backend():
    manifest = {"backend": {"name": "openvino", "model_file": "model.xml"}, "selftest": {"file": "selftest.npz"}}
    assert [name for _, name in named_files(manifest)] == ["model.xml", "selftest.npz", "model.bin"]
    manifest["backend"]["name"] = "not-installed-here"  # a plugin's bundle, inspected where it is absent
    assert [name for _, name in named_files(manifest)] == ["model.xml", "selftest.npz"]
