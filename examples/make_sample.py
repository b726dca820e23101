"""Copy the small committed CIFAR-10 sample out of ../shared/datasets/cifar10 (see data/README.md).

    python examples/make_sample.py [--data ../shared/datasets/cifar10]

Takes, per class, the first 30 train images and the first 200 test images by file name: 300 calibration
and 2,000 test images, byte-for-byte copies of the JPEG files.
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def copy(archive: Path, split: str, per_class: int, dest: Path) -> int:
    count = 0
    with zipfile.ZipFile(archive) as zf:
        by_class: dict[str, list[str]] = {}
        for name in zf.namelist():
            parts = name.split("/")
            if len(parts) == 3 and parts[0] == split and parts[2].endswith(".jpg"):
                by_class.setdefault(parts[1], []).append(name)
        for cls, names in sorted(by_class.items()):
            (dest / cls).mkdir(parents=True, exist_ok=True)
            for name in sorted(names)[:per_class]:
                (dest / cls / Path(name).name).write_bytes(zf.read(name))
                count += 1
    return count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=HERE.parents[1] / "shared/datasets/cifar10")
    a = p.parse_args()
    out = HERE / "data" / "cifar10"
    print("calib:", copy(a.data / "train.zip", "train", 30, out / "calib"))
    print("test:", copy(a.data / "test.zip", "test", 200, out / "test"))


if __name__ == "__main__":
    main()
