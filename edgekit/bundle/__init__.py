"""The bundle on disk: manifest schema, atomic writer, verifying reader."""

from edgekit.bundle.manifest import MANIFEST, SCHEMA_VERSION
from edgekit.bundle.reader import OpenBundle, open_bundle
from edgekit.bundle.writer import BundleWriter, check_output_path

__all__ = ["MANIFEST", "SCHEMA_VERSION", "BundleWriter", "OpenBundle", "check_output_path", "open_bundle"]
