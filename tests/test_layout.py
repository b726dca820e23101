"""The project's top-level layout, and its data folders (targets/, calibration/) found in a checkout and a wheel."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from support import ROOT

from edgekit import _paths, calibration
from edgekit import targets as targets_mod
from edgekit.targets import get_target, list_targets, parse_target

LAYOUT = ("pyproject.toml", "README.md", "edgekit/", "targets/", "calibration/", "tests/")


def test_top_level_holds_the_specified_layout():
    for entry in LAYOUT:
        path = ROOT / entry.rstrip("/")
        assert path.is_dir() if entry.endswith("/") else path.is_file(), f"{entry} is missing at the top level"
    assert not list((ROOT / "edgekit").rglob("*.toml")), "the target files live in targets/, not in the package"
    assert (ROOT / "calibration" / "recipes").is_dir() and (ROOT / "calibration" / "images").is_dir()


def test_a_checkout_reads_its_top_level_data_folders():
    assert targets_mod.targets_folder() == ROOT / "targets"
    assert calibration.recipes_folder() == ROOT / "calibration" / "recipes"
    assert calibration.images_folder() == ROOT / "calibration" / "images"


def test_every_target_file_loads_and_names_a_known_recipe():
    files = sorted((ROOT / "targets").glob("*.toml"))
    assert len(files) == len(list_targets()) >= 10
    for path in files:
        target = parse_target(path.read_text(encoding="utf-8"), source=path.name)
        assert target.calibration_recipe in calibration.recipe_names(), path.name
        assert get_target(target.name) == target


@pytest.fixture
def targets_copy(tmp_path, monkeypatch):
    """A copy of targets/ the loader reads instead of the repository's (its cache cleared on both sides)."""
    folder = tmp_path / "targets"
    shutil.copytree(ROOT / "targets", folder)
    monkeypatch.setattr(targets_mod, "targets_folder", lambda: folder)
    targets_mod._shipped.cache_clear()
    yield folder
    targets_mod._shipped.cache_clear()


def test_a_file_dropped_into_the_targets_folder_is_a_named_target(targets_copy):
    before = {t.name for t in list_targets()}
    text = (targets_copy / "cpu.toml").read_text(encoding="utf-8")
    mine = text.replace('name = "cpu"', 'name = "my-box"').replace(
        'aliases = ["onnxruntime", "x86"]', 'aliases = ["mb"]'
    )
    (targets_copy / "my-box.toml").write_text(mine, encoding="utf-8")
    targets_mod._shipped.cache_clear()
    assert {t.name for t in list_targets()} == before | {"my-box"}
    assert get_target("mb").name == "my-box" and get_target("my-box").source == "my-box.toml"
    assert get_target("my-box").calibration_recipe == "ort-qdq-u8s8-per-channel"


def test_a_target_file_elsewhere_is_taken_by_path(tmp_path):
    path = tmp_path / "lab" / "bench-pc.toml"
    path.parent.mkdir()
    path.write_text((ROOT / "targets" / "intel-cpu.toml").read_text(encoding="utf-8").replace("intel-cpu", "bench-pc"))
    target = get_target(str(path))
    assert target.name == "bench-pc" and target.source == str(path)
    assert target.calibration_recipe == "nncf-ptq-performance-full-bias-correction"
    assert "bench-pc" not in {t.name for t in list_targets()}


# -- the wheel

SOURCES = ("pyproject.toml", "setup.py", "README.md", "edgekit", "targets", "calibration")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built (without build isolation, as this venv has setuptools) from a copy of the sources."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
         str(src)],
        check=True, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    (found,) = (tmp / "dist").glob("edgekit-*.whl")
    return found


@pytest.mark.slow
def test_the_wheel_carries_the_data_folders_and_every_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = f"edgekit/{_paths.SHIPPED}/"
    for folder, pattern in (
        ("targets", "*.toml"),
        ("calibration", "recipes/*.toml"),
        ("calibration", "images/*/*.jpg"),
    ):
        files = sorted((ROOT / folder).glob(pattern))
        assert files
        for path in files:
            assert shipped + path.relative_to(ROOT).as_posix() in names, path
    assert shipped + "calibration/README.md" in names
    for module in (ROOT / "edgekit").rglob("*.py"):
        if "__pycache__" not in module.parts:
            assert module.relative_to(ROOT).as_posix() in names, f"{module} is not in the wheel"
    assert not any(n.startswith(("targets/", "calibration/", "tests/")) for n in names), "no top-level data packages"


@pytest.mark.slow
def test_an_installed_wheel_finds_its_data(wheel, tmp_path):
    """The wheel unpacked as site-packages would hold it: the loaders read edgekit/_shipped/, not the checkout."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    script = (
        "import edgekit, importlib.resources as r\n"
        "from edgekit import calibration, targets\n"
        f"assert edgekit.__file__.startswith({str(site)!r}), edgekit.__file__\n"
        "print(targets.targets_folder())\n"
        "print(len(targets.list_targets()), ','.join(calibration.recipe_names()))\n"
        "print(len(list(calibration.images_folder().rglob('*.jpg'))))\n"
        "print(sorted(p.name for p in (r.files('edgekit') / '_shipped' / 'targets').iterdir())[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout.split("\n")  # fmt: skip
    assert out[0] == str(site / "edgekit" / "_shipped" / "targets")
    assert out[1] == f"{len(list_targets())} {','.join(calibration.recipe_names())}"
    assert out[2] == "30" and out[3] == "cpu.toml"
