"""The bundle on disk: the typed manifest and its JSON Schema, atomic writer, verifying reader."""

from typing import Any

from edgekit.bundle.manifest import MANIFEST, SCHEMA_VERSION
from edgekit.bundle.reader import OpenBundle, open_bundle
from edgekit.bundle.types import Manifest
from edgekit.bundle.writer import BundleWriter, check_output_path

__all__ = [
    "MANIFEST",
    "SCHEMA_VERSION",
    "BundleWriter",
    "Manifest",
    "OpenBundle",
    "check_output_path",
    "manifest_schema",
    "open_bundle",
]


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of manifest.json, generated from the typed manifest.

    The same schema ships as ``edgekit/bundle/manifest.schema.json``.
    """
    from edgekit.bundle import schema  # here, so that ``python -m edgekit.bundle.schema`` runs it cleanly

    return schema.manifest_schema()
