"""TOML reading on every supported Python: the standard library's tomllib (3.11+), else tomli (3.10, JetPack 6)."""

from __future__ import annotations

try:
    import tomllib  # novermin: the 3.10 fallback is below
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

loads = tomllib.loads
TOMLDecodeError = tomllib.TOMLDecodeError

__all__ = ["TOMLDecodeError", "loads"]
