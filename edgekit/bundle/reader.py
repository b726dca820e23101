"""Open and verify a bundle: schema, then the sha256 of every file. Packed bundles are extracted safely.

What "verified" means: the manifest validates (every field's type and range); every file name it lists is
a normalised relative path; every file the manifest names (model, self-test data, build plan files,
OpenVINO weights, ONNX external data) is one of the listed files; every listed file is a regular file with
its size and sha256; and the bundle holds nothing else: no unlisted file (dotfiles included), no symbolic
link, no special file. The folder is walked with ``os.walk``/``lstat`` and links are never followed.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.bundle.manifest import MANIFEST, TAMPERED, bundle_hash, named_files, safe_name, sha256_file
from edgekit.bundle.types import Manifest
from edgekit.errors import BundleError, UsageError

MAX_UNPACKED_BYTES = 8 << 30  # a packed bundle unpacks to at most this much in all
MAX_MEMBERS = 1000  # a real bundle has fewer than ten files
MAX_RATIO = 100  # uncompressed / compressed, per member and overall, above RATIO_FLOOR bytes
RATIO_FLOOR = 1 << 20  # small members (the manifest) may compress well; a ratio matters only past 1 MiB
MAX_MANIFEST_BYTES = 16 << 20
_CHUNK = 1 << 20


@dataclass
class OpenBundle:
    """A verified bundle on disk. ``close()`` removes the extraction folder of a packed bundle.

    ``typed_manifest`` is the validated, typed manifest; ``manifest`` is its JSON object
    (``typed_manifest.to_dict()``), which a backend's ``Runtime`` takes (see ``edgekit.backends.base.Runtime``)
    and which older callers read by key; edgekit's own readers use ``typed_manifest``.
    """

    path: Path
    root: Path
    manifest: dict[str, Any]
    hash: str
    typed_manifest: Manifest
    _tmp: Path | None = field(default=None, repr=False)

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def read_manifest(root: Path, *, source: str) -> tuple[Manifest, str]:
    """The bundle's validated, typed manifest and the bundle hash."""
    path = root / MANIFEST
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is None or stat.S_ISDIR(st.st_mode):
        raise BundleError(
            f"{source}: no manifest.json; this is not an edgekit bundle (compile one with edgekit compile)"
        )
    if stat.S_ISLNK(st.st_mode):
        raise BundleError(f"{source}: '{MANIFEST}' is a symbolic link; a bundle holds no links, {TAMPERED}")
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(f"{source}: '{MANIFEST}' is not a regular file; {TAMPERED}")
    if st.st_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"{source}: manifest.json is larger than {MAX_MANIFEST_BYTES >> 20} MiB; {TAMPERED}")
    try:
        text = path.read_bytes().decode("utf-8")
        manifest = json.loads(text)
    except UnicodeDecodeError as exc:
        raise BundleError(f"{source}: manifest.json is not UTF-8 text; the bundle is damaged, recompile it") from exc
    except json.JSONDecodeError as exc:
        raise BundleError(
            f"{source}: manifest.json is not valid JSON ({exc.msg}); the bundle is damaged, recompile it"
        ) from exc
    except RecursionError as exc:
        raise BundleError(f"{source}: manifest.json is nested too deeply; {TAMPERED}") from exc
    return Manifest.from_dict(manifest, source=source), bundle_hash(text)


def _walk(root: Path, *, source: str) -> list[str]:
    """Every regular file under ``root`` as a '/'-separated relative name; links and special files refused."""
    found = []

    def fail(exc: OSError) -> None:
        raise BundleError(f"{source}: cannot read the bundle folder ({exc.strerror}: {exc.filename})")

    for folder, dirs, files in os.walk(root, onerror=fail, followlinks=False):
        for name in sorted(dirs + files):
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                raise BundleError(f"{source}: '{rel}' is a symbolic link; a bundle holds no links, {TAMPERED}")
            if stat.S_ISREG(mode):
                found.append(rel)
            elif not stat.S_ISDIR(mode):
                raise BundleError(f"{source}: '{rel}' is not a regular file or folder; {TAMPERED}")
    return found


def verify_files(root: Path, manifest: Manifest, *, source: str) -> None:
    """Every named file is listed; every listed file exists with its size and sha256; nothing else is there."""
    listed = manifest.files
    for field_name, name in named_files(manifest.to_dict()):
        if name not in listed:
            raise BundleError(
                f"{source}: manifest field '{field_name}' names '{name}', which is not a listed, checksummed "
                f"file of the bundle; {TAMPERED}"
            )
    present = set(_walk(root, source=source))
    for name, entry in listed.items():
        path = root / name
        if name not in present:
            raise BundleError(f"{source}: file '{name}' is missing; the bundle is incomplete, copy or recompile it")
        if path.stat().st_size != entry.size or sha256_file(path) != entry.sha256:
            raise BundleError(
                f"{source}: checksum mismatch for '{name}'; the file was changed or damaged, recompile the bundle"
            )
    for rel in sorted(present - set(listed) - {MANIFEST}):
        raise BundleError(f"{source}: unexpected file '{rel}' not listed in the manifest; remove it or recompile")
    for name in listed:
        if _is_onnx(name, manifest):
            _check_external_data(root, name, listed, source=source)


def _is_onnx(name: str, manifest: Manifest) -> bool:
    """ONNX files the runtimes or a device's TensorRT may parse: every *.onnx and the named model files."""
    plan = manifest.backend.build_plan or {}
    model = manifest.backend.model_file
    return name.endswith(".onnx") or name == plan.get("onnx") or (name == model and not model.endswith(".xml"))


def _check_external_data(root: Path, name: str, listed: Mapping[str, object], *, source: str) -> None:
    try:
        locations = external_data_locations(root / name)
    except NotONNX as exc:
        raise BundleError(f"{source}: '{name}' is not a valid ONNX model ({exc}); {TAMPERED}") from exc
    folder = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
    for location in locations:
        target = folder + location
        if safe_name(location) is not None or target not in listed:
            raise BundleError(
                f"{source}: '{name}' reads external data from '{location}', which is not a listed file of the "
                f"bundle; {TAMPERED}"
            )


# -- ONNX external data, found by a small protobuf wire-format scan (the device has no onnx package)
class NotONNX(Exception):
    """The file does not parse as an ONNX ModelProto."""


# message -> {field number: message} for the fields that can lead to a TensorProto (onnx.proto)
_MESSAGES: dict[str, dict[int, str]] = {
    "Model": {7: "Graph", 20: "TrainingInfo", 25: "Function"},
    "TrainingInfo": {1: "Graph", 2: "Graph"},
    "Graph": {1: "Node", 5: "Tensor", 15: "SparseTensor"},
    "Node": {5: "Attribute"},
    "Function": {7: "Node", 11: "Attribute"},
    "Attribute": {5: "Tensor", 6: "Graph", 10: "Tensor", 11: "Graph", 22: "SparseTensor", 23: "SparseTensor"},
    "SparseTensor": {1: "Tensor", 2: "Tensor"},
    "Tensor": {13: "Entry"},
    "Entry": {},
}
_MAX_DEPTH = 64


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise NotONNX("truncated or malformed protobuf")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _scan(buf: memoryview, pos: int, end: int, message: str, depth: int, found: list[str]) -> None:
    if depth > _MAX_DEPTH:
        raise NotONNX("nested too deeply")
    subs = _MESSAGES[message]
    key = value = None
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise NotONNX("field number 0")
        if wire == 0:
            _, pos = _varint(buf, pos, end)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            start, pos = pos, pos + length
            if pos > end:
                raise NotONNX("truncated length-delimited field")
            if message == "Entry" and number in (1, 2):
                text = bytes(buf[start:pos]).decode("utf-8", errors="replace")
                key, value = (text, value) if number == 1 else (key, text)
            elif number in subs:
                _scan(buf, start, pos, subs[number], depth + 1, found)
        else:
            raise NotONNX(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise NotONNX("truncated field")
    if message == "Entry" and key == "location":
        found.append(value or "")


def external_data_locations(path: Path) -> list[str]:
    """The ``location`` of every external-data tensor in an ONNX file (graphs, subgraphs, functions)."""
    import mmap

    found: list[str] = []
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size == 0:
            raise NotONNX("empty file")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = memoryview(mm)
            try:
                _scan(view, 0, len(view), "Model", 0, found)
            finally:
                view.release()
    return found


# -- packed bundles
def _member_error(archive: Path, what: str) -> BundleError:
    return BundleError(f"{archive}: {what}; refusing to extract the packed bundle (copy or recompile it)")


def _plan_members(zf: zipfile.ZipFile, archive: Path) -> list[tuple[zipfile.ZipInfo, str, bool]]:
    """Check every member before anything is written: names, types, counts, declared sizes and ratios."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise _member_error(archive, f"it has {len(infos)} members, more than the {MAX_MEMBERS} a bundle may have")
    plan, files, folders = [], set(), set()
    total = packed = 0
    for info in infos:
        raw = info.filename
        is_dir = raw.endswith("/")
        name = raw[:-1] if is_dir else raw
        reason = safe_name(name)
        if reason:
            raise _member_error(archive, f"unsafe path '{raw}' ({reason})")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise _member_error(archive, f"symbolic link '{raw}'")
        if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)) and stat.S_IFMT(mode):
            raise _member_error(archive, f"'{raw}' is not a regular file or folder")
        if info.flag_bits & 0x1:
            raise _member_error(archive, f"'{raw}' is encrypted")
        if name in files or (not is_dir and name in folders):
            raise _member_error(archive, f"'{name}' appears more than once (or as both a file and a folder)")
        parents = name.split("/")[:-1]
        for i in range(len(parents)):
            parent = "/".join(parents[: i + 1])
            if parent in files:
                raise _member_error(archive, f"'{parent}' is both a file and a folder")
            folders.add(parent)
        if is_dir:
            folders.add(name)
        else:
            files.add(name)
        size, csize = info.file_size, max(info.compress_size, 1)
        if size > RATIO_FLOOR and size / csize > MAX_RATIO:
            raise _member_error(
                archive, f"member '{name}' has a compression ratio of {size / csize:.0f}:1 (limit {MAX_RATIO}:1)"
            )
        total += size
        packed += csize
        if total > MAX_UNPACKED_BYTES:
            raise _member_error(archive, f"it unpacks to more than {MAX_UNPACKED_BYTES >> 30} GiB")
        plan.append((info, name, is_dir))
    if total > RATIO_FLOOR and total / max(packed, 1) > MAX_RATIO:
        raise _member_error(archive, f"it has an overall compression ratio of {total / packed:.0f}:1")
    return plan


def _extract(archive: Path, dest: Path) -> None:
    """Extract member by member, writing at most each member's declared size (and the total limit)."""
    with zipfile.ZipFile(archive) as zf:
        plan = _plan_members(zf, archive)
        written = 0
        for info, name, is_dir in plan:
            target = dest.joinpath(*name.split("/"))
            if is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            limit = info.file_size
            count = 0
            with zf.open(info) as src, open(target, "xb") as out:
                while block := src.read(_CHUNK):
                    count += len(block)
                    written += len(block)
                    if count > limit or written > MAX_UNPACKED_BYTES:
                        raise _member_error(archive, f"member '{name}' holds more data than it declares")
                    out.write(block)
            if count != limit:
                raise _member_error(archive, f"member '{name}' holds less data than it declares")


def open_bundle(path: str | Path) -> OpenBundle:
    """Verify a bundle folder or packed file and return it; raise BundleError with the reason otherwise."""
    path = Path(path)
    source = str(path)
    if not os.path.lexists(path):
        raise UsageError(f"bundle '{path}' does not exist; compile one with: edgekit compile MODEL -o {path}")
    if path.is_symlink():
        raise BundleError(f"{source}: the bundle path is a symbolic link; give the bundle's real path")
    tmp = None
    root = path
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise BundleError(f"{source}: not a bundle (neither a bundle folder nor a packed .zip bundle)")
        tmp = Path(tempfile.mkdtemp(prefix="edgekit-bundle-"))
        root = tmp
        try:
            _extract(path, tmp)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise BundleError(f"{source}: the packed bundle is damaged ({reason}); copy or recompile it") from exc
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    elif not path.is_dir():
        raise BundleError(f"{source}: not a bundle (neither a bundle folder nor a packed .zip bundle)")
    try:
        manifest, digest = read_manifest(root, source=source)
        verify_files(root, manifest, source=source)
    except BaseException:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return OpenBundle(path=path, root=root, manifest=manifest.to_dict(), hash=digest, typed_manifest=manifest, _tmp=tmp)
