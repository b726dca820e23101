"""Image folders: find images, sample them deterministically, read class-folder trees, preprocess.

Used at build time for calibration and validation; preprocessing is the runtime's own, so calibration
sees exactly what the device will. Image sets are streamed: loading one checks and hashes every file but
keeps no pixels; consumers iterate ``ImageSet.batches(size)`` (or ``iter_batches``), which reads the files
again on demand, so memory stays bounded by one batch however many images a folder holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.errors import DataError, UsageError
from edgekit.spec import ModelSpec

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def find_images(root: str | Path, *, what: str = "image folder") -> list[Path]:
    """Every JPEG/PNG/BMP/WebP file below ``root``, recursively, in a stable order."""
    root = Path(root)
    if not root.exists():
        raise UsageError(f"{what} '{root}' does not exist; check the path")
    if root.is_file():
        return [root] if root.suffix.lower() in IMAGE_EXTENSIONS else []
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def sample(paths: list[Path], n: int, *, root: Path) -> list[Path]:
    """A deterministic sample of ``n`` paths: the same files on every machine and every run.

    Files are ranked by the sha256 of their path relative to ``root``, so the choice does not depend
    on numpy's random generator or the file system's listing order.
    """
    if n <= 0 or n >= len(paths):
        return list(paths)

    def rank(p: Path) -> str:
        rel = p.relative_to(root) if root.is_dir() else p.name
        return hashlib.sha256(str(rel).replace("\\", "/").encode()).hexdigest()

    return sorted(sorted(paths, key=rank)[:n])


def class_folders(root: str | Path) -> list[str]:
    """Sorted names of the sub-folders of ``root`` that hold images: the labels of a class-folder tree."""
    root = Path(root)
    return sorted(d.name for d in root.iterdir() if d.is_dir() and find_images(d))


@dataclass
class ImageSet:
    """Image files that decode and preprocess, their labels and digests: the pixels are not held.

    ``batches(size)`` reads, decodes and preprocesses the files ``size`` at a time, on demand, so a set of
    50,000 images costs its paths and hashes, not 50,000 tensors; every pass reads the files again.
    """

    paths: list[Path]
    spec: ModelSpec
    labels: np.ndarray | None = None
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    sha256: str = ""
    hashes: list[str] = field(default_factory=list)  # sha256 of each used file's bytes

    def __len__(self) -> int:
        return len(self.paths)

    def batches(self, size: int) -> Iterator[np.ndarray]:
        """The preprocessed images in order, ``size`` at a time (the last batch may be smaller)."""
        if size < 1:
            raise ValueError(f"batch size must be at least 1, not {size}")
        for start in range(0, len(self.paths), size):
            yield np.stack([self._read(i) for i in range(start, min(start + size, len(self.paths)))])

    def head(self, n: int) -> np.ndarray:
        """The first ``n`` preprocessed images (all of them if fewer), as one array."""
        return next(self.batches(max(1, min(n, len(self.paths)))))

    @property
    def tensors(self) -> np.ndarray:
        """Every preprocessed image as one array: holds the whole set, so only for small sets (tests, benches)."""
        return np.concatenate(list(self.batches(256)))

    def _read(self, i: int) -> np.ndarray:
        path = self.paths[i]
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(
                f"image '{path}' could not be read again ({exc}); keep the image folder in place while compiling"
            ) from exc
        if hashlib.sha256(data).hexdigest() != self.hashes[i]:
            raise DataError(
                f"image '{path}' changed while it was in use; keep the image folder unchanged while compiling"
            )
        return _preprocess(data, path, self.spec)

    def subset(self, indices: list[int]) -> ImageSet:
        """The images at ``indices`` (in that order), with a digest of their own."""
        digest = hashlib.sha256()
        for i in indices:
            digest.update(bytes.fromhex(self.hashes[i]))
        return ImageSet(
            [self.paths[i] for i in indices], self.spec, None if self.labels is None else self.labels[indices], [],
            digest.hexdigest(), [self.hashes[i] for i in indices],
        )  # fmt: skip

    def without(self, hashes: set[str]) -> tuple[ImageSet, int]:
        """Drop images whose bytes are in ``hashes`` (e.g. the calibration images); return how many went."""
        keep = [i for i, h in enumerate(self.hashes) if h not in hashes]
        return (self if len(keep) == len(self.hashes) else self.subset(keep)), len(self.hashes) - len(keep)


Images = np.ndarray | ImageSet


def iter_batches(images: Images, size: int) -> Iterator[np.ndarray]:
    """Batches of ``size`` from an array (slices of it) or an ``ImageSet`` (read on demand), in order."""
    if isinstance(images, np.ndarray):
        return (images[i : i + size] for i in range(0, len(images), size))
    return images.batches(size)


def _preprocess(data: bytes, path: Path, spec: ModelSpec) -> np.ndarray:
    from edgekit.runtime.preprocess import decode_image, preprocess

    image = decode_image(data, name=str(path))
    return preprocess(image, spec.preprocess, spec.input, color_order="BGR")


def _scan(paths: list[Path], spec: ModelSpec) -> tuple[list[Path], list[tuple[Path, str]], str, list[str]]:
    """Which files decode and preprocess (each is read once and its pixels dropped), and their digests."""
    ok, skipped, hashes = [], [], []
    digest = hashlib.sha256()
    for path in paths:
        try:
            data = path.read_bytes()
            _preprocess(data, path, spec)
        except (OSError, DataError) as exc:
            skipped.append((path, str(exc)))
            continue
        ok.append(path)
        file_hash = hashlib.sha256(data)
        hashes.append(file_hash.hexdigest())
        digest.update(file_hash.digest())
    return ok, skipped, digest.hexdigest(), hashes


def load_calibration(root: str | Path, spec: ModelSpec, *, size: int, min_images: int = 10) -> ImageSet:
    """Sample and preprocess calibration images; unreadable files are skipped and counted."""
    root = Path(root)
    paths = find_images(root, what="calibration folder")
    if not paths:
        raise DataError(
            f"calibration folder '{root}' holds no JPEG, PNG, BMP or WebP images; point --calib at a "
            "folder of images like those the model will see"
        )
    chosen = sample(paths, size, root=root)
    ok, skipped, sha, hashes = _scan(chosen, spec)
    if len(ok) < min(min_images, len(chosen)) or not ok:
        raise DataError(
            f"calibration folder '{root}': only {len(ok)} of {len(chosen)} images could be read "
            f"({len(skipped)} unreadable, e.g. {skipped[0][0].name}); at least {min_images} are needed"
        )
    return ImageSet(ok, spec, None, skipped, sha, hashes)


def load_labelled(root: str | Path, spec: ModelSpec, labels: tuple[str, ...]) -> ImageSet:
    """Preprocess a class-folder tree whose folder names are the model's labels."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"validation folder '{root}' does not exist; pass a folder with one sub-folder a class")
    folders = class_folders(root)
    if not folders:
        raise DataError(
            f"validation folder '{root}' has no class sub-folders with images; lay it out as {root}/<label>/<image>.jpg"
        )
    unknown = [f for f in folders if f not in labels]
    if unknown:
        raise DataError(
            f"validation folder '{root}' has class folders that are not among the model's labels: "
            f"{', '.join(unknown[:5])}; labels are: {', '.join(labels[:10])}{' ...' if len(labels) > 10 else ''}"
        )
    index = {lab: i for i, lab in enumerate(labels)}
    paths, ids = [], []
    for folder in folders:
        for p in find_images(root / folder):
            paths.append(p)
            ids.append(index[folder])
    ok, skipped, sha, hashes = _scan(paths, spec)
    if not ok:
        raise DataError(f"validation folder '{root}': none of its {len(paths)} images could be read")
    keep = set(ok)
    labels_arr = np.array([i for p, i in zip(paths, ids, strict=True) if p in keep], dtype=np.int64)
    return ImageSet(ok, spec, labels_arr, skipped, sha, hashes)


def load_unlabelled(root: str | Path, spec: ModelSpec) -> ImageSet:
    """Every image below ``root`` (no labels): for budgets measured as agreement with FP32."""
    root = Path(root)
    paths = find_images(root, what="validation folder")
    if not paths:
        raise DataError(f"validation folder '{root}' holds no JPEG, PNG, BMP or WebP images")
    ok, skipped, sha, hashes = _scan(paths, spec)
    if not ok:
        raise DataError(f"validation folder '{root}': none of its {len(paths)} images could be read")
    return ImageSet(ok, spec, None, skipped, sha, hashes)


def annotations_file(root: str | Path) -> Path | None:
    """A detection validation folder's COCO annotations: ``annotations.json`` in it, else its only ``*.json``."""
    root = Path(root)
    if not root.is_dir():
        return None
    if (root / "annotations.json").is_file():
        return root / "annotations.json"
    found = sorted(root.glob("*.json"))
    return found[0] if len(found) == 1 else None


# A COCO file of a validation folder is read whole: at most this big (the COCO 2017 val file is 25 MB)
MAX_ANNOTATIONS_BYTES = 256 << 20


def load_detection(root: str | Path, spec: ModelSpec) -> ImageSet:
    """A detector's validation folder: images and COCO annotations (``annotations_file``); each image's
    ground truth (``GroundTruth``, boxes mapped into the model's input pixels by the spec's fit) is its label.

    Categories are matched to the model's labels by name, else (all ids within the labels) by id order.
    An image the annotations do not list is refused: a missing entry would count its objects as misses.
    """
    import json

    from edgekit.tasks.detection.geometry import fit_image, to_input
    from edgekit.tasks.detection.metrics import GroundTruth

    root = Path(root)
    path = annotations_file(root)
    if path is None:
        raise DataError(f"validation folder '{root}' has no COCO annotations; put them in {root}/annotations.json")
    if path.stat().st_size > MAX_ANNOTATIONS_BYTES:
        raise DataError(f"{path} is over {MAX_ANNOTATIONS_BYTES >> 20} MiB; split the validation set")
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
        images = {im["file_name"]: (int(im["id"]), int(im["height"]), int(im["width"])) for im in coco["images"]}
        cats = {int(c["id"]): str(c["name"]) for c in coco["categories"]}
        anns = [(int(a["image_id"]), int(a["category_id"]), [float(v) for v in a["bbox"]]) for a in coco["annotations"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not COCO annotations ({type(exc).__name__}: {exc}); give images, annotations "
                        "(bbox [x, y, w, h]) and categories") from exc  # fmt: skip
    labels = list(spec.labels)
    if all(name in labels for name in cats.values()):
        class_of = {cid: labels.index(name) for cid, name in cats.items()}
    else:
        ordered = sorted(cats)
        if len(ordered) > len(labels):
            raise DataError(f"{path}: {len(ordered)} categories but the model has {len(labels)} labels; "
                            "name the categories as the model's labels")  # fmt: skip
        class_of = {cid: i for i, cid in enumerate(ordered)}
    boxes: dict[int, list[tuple[int, list[float]]]] = {}
    for image_id, cid, (x, y, w, h) in anns:
        if cid not in class_of:
            raise DataError(f"{path}: an annotation names category {cid}, which is not among the categories")
        boxes.setdefault(image_id, []).append((class_of[cid], [x, y, x + w, y + h]))
    paths = find_images(root, what="validation folder")
    unlisted = [p for p in paths if str(p.relative_to(root)).replace("\\", "/") not in images and p.name not in images]
    if unlisted:
        raise DataError(f"{path} does not list {len(unlisted)} of the folder's images (e.g. {unlisted[0].name}); "
                        "annotate every image, or move it out")  # fmt: skip
    ok, skipped, sha, hashes = _scan(paths, spec)
    if not ok:
        raise DataError(f"validation folder '{root}': none of its {len(paths)} images could be read")
    hw = spec.input.hw
    mode = "letterbox" if spec.preprocess.fit == "letterbox" else "stretch"
    truth = []
    for p in ok:
        image_id, h, w = images.get(str(p.relative_to(root)).replace("\\", "/")) or images[p.name]
        fit = fit_image((h, w), hw, mode)
        entries = boxes.get(image_id, [])
        b = np.array([e[1] for e in entries], np.float32).reshape(-1, 4)
        truth.append(GroundTruth(to_input(b, fit), np.array([e[0] for e in entries], np.int64)))
    labels_arr = np.empty(len(truth), dtype=object)
    labels_arr[:] = truth
    return ImageSet(ok, spec, labels_arr, skipped, sha, hashes)
