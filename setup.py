"""The build's one computed setting: edgekit's packages plus its data folders (the rest is in pyproject.toml).

The project's top-level ``targets/`` and ``calibration/`` are data, not Python; the wheel carries them inside
the package as ``edgekit/_shipped/targets/`` and ``edgekit/_shipped/calibration/`` (``edgekit._paths`` finds
them there, or beside the package in a checkout). Which files of them ship: package-data in pyproject.toml.
"""

from setuptools import find_namespace_packages, setup

DATA = {"edgekit._shipped.targets": "targets", "edgekit._shipped.calibration": "calibration"}
# Each data folder's sub-folders too (calibration/images/<class>/), so setuptools maps rather than warns about them.
FOLDERS = [f"{name}.{sub}" for name, path in DATA.items() for sub in find_namespace_packages(where=path)]

setup(packages=[*find_namespace_packages(include=["edgekit*"]), *DATA, *FOLDERS], package_dir=DATA)
