"""Peak memory of a compile with a large validation set: are the images streamed or held?

    python bench/bench_memory.py [--json]                 # writes bench/results/memory.json with --json
    PYTHONPATH=/tmp/old-tree python bench/bench_memory.py  # the same against another tree's edgekit

Runs a real ``edgekit compile`` subprocess (``python -m edgekit compile``, so PYTHONPATH picks the tree):
examples/models/resnet/model.onnx, --target cpu --precision int8, calibrated on examples/data/cifar10/calib
(300 images), with --val a folder of the 10,000 CIFAR-10 test images (one sub-folder a class), unpacked
from ../shared/datasets/cifar10/test.zip into --val-dir (default /tmp/edgekit-bench-memory/test). Where
that archive is absent, the folder is made of copies of the committed examples/data/cifar10/test images
(2,000), repeated under new names up to --images; the JSON says which.

The peak resident set size is the compile process's own ``ru_maxrss`` from ``os.wait4`` (the kernel's
high-water mark, VmHWM, of the process and any children it waited for); the wall time is the whole command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "memory.json"
SHARED_TEST = ROOT.parent / "shared" / "datasets" / "cifar10" / "test.zip"
COMMITTED_TEST = ROOT / "examples" / "data" / "cifar10" / "test"
MODEL = ROOT / "examples" / "models" / "resnet" / "model.onnx"
SPEC = ROOT / "examples" / "models" / "resnet" / "model.toml"
CALIB = ROOT / "examples" / "data" / "cifar10" / "calib"


def count_images(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*.jpg"))


def validation_folder(dest: Path, images: int) -> tuple[Path, str]:
    """A class-folder tree of ``images`` images at ``dest`` (made once, reused); and where they came from."""
    if dest.is_dir() and count_images(dest) == images:
        source = (dest / ".source").read_text().strip() if (dest / ".source").exists() else "existing folder"
        return dest, source
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if SHARED_TEST.exists() and images <= 10_000:
        with zipfile.ZipFile(SHARED_TEST) as archive:
            names = sorted(n for n in archive.namelist() if n.endswith(".jpg"))
            # every class alike: the first images/10 of each class folder
            per_class: dict[str, list[str]] = {}
            for name in names:
                per_class.setdefault(name.split("/")[1], []).append(name)
            for cls, files in per_class.items():
                (dest / cls).mkdir(exist_ok=True)
                for name in files[: images // len(per_class)]:
                    (dest / cls / Path(name).name).write_bytes(archive.read(name))
        source = f"CIFAR-10 test set, {SHARED_TEST.relative_to(ROOT.parent)} (real images)"
    else:
        originals = sorted(COMMITTED_TEST.rglob("*.jpg"))
        for i in range(images):
            src = originals[i % len(originals)]
            (dest / src.parent.name).mkdir(exist_ok=True)
            shutil.copyfile(src, dest / src.parent.name / f"{i // len(originals)}-{src.name}")
        source = f"copies of the {len(originals)} committed {COMMITTED_TEST.relative_to(ROOT)} images"
    (dest / ".source").write_text(source + "\n")
    return dest, source


def run_compile(val: Path, out: Path, extra: list[str]) -> dict:
    cmd = [
        sys.executable, "-m", "edgekit", "compile", str(MODEL), "--spec", str(SPEC), "--target", "cpu",
        "--precision", "int8", "--calib", str(CALIB), "--val", str(val), "-o", str(out), "--json", "-q", *extra,
    ]  # fmt: skip
    t0 = time.perf_counter()
    # not cwd=ROOT: ``python -m`` puts the working directory first on sys.path, which would shadow PYTHONPATH
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tempfile.gettempdir())
    stdout, stderr = proc.communicate()  # reaps the child: its rusage goes to RUSAGE_CHILDREN
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"edgekit compile failed ({proc.returncode}):\n{stderr.decode()[-2000:]}")
    manifest = json.loads(stdout)
    return {"seconds": round(seconds, 1), "accuracy": manifest["accuracy"], "command": " ".join(cmd[1:])}


def peak_rss_mb_of(fn):
    """Run ``fn`` (which starts and reaps one subprocess); the peak RSS of that subprocess, in MB.

    ``RUSAGE_CHILDREN.ru_maxrss`` is the largest of the reaped children's peaks, so each measured compile
    runs in a fresh helper process of its own that reports it."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = fn()
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if after <= before:  # the helper keeps one measurement per process, so this means a smaller child
        raise SystemExit("run one measurement a process (ru_maxrss of children only grows)")
    return after / 1024.0, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=10_000, help="validation images (default 10000)")
    ap.add_argument("--val-dir", type=Path, default=Path(tempfile.gettempdir()) / "edgekit-bench-memory" / "test")
    ap.add_argument("--label", default="", help="a name for this run in the JSON (e.g. before, after)")
    ap.add_argument("--json", action="store_true", help=f"add this run to {RESULTS.relative_to(ROOT)}")
    args = ap.parse_args()

    val, source = validation_folder(args.val_dir, args.images)
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-memory-") as tmp:
        rss_mb, result = peak_rss_mb_of(lambda: run_compile(val, Path(tmp) / "resnet.edgekit", []))
    acc = result["accuracy"]
    print(f"validation: {count_images(val)} images ({source})")
    print(f"edgekit compile: peak RSS {rss_mb:.0f} MB, wall {result['seconds']:.1f} s")
    print(f"accuracy: fp32 {acc['fp32']}, int8 {acc['value']}, {acc['dataset']['images']} images")
    if args.json:
        import edgekit

        runs = json.loads(RESULTS.read_text()) if RESULTS.exists() else {"runs": []}
        runs["runs"] = [r for r in runs["runs"] if r.get("label") != args.label or not args.label]
        runs["runs"].append({
            "label": args.label,
            "edgekit_tree": str(Path(edgekit.__file__).resolve().parents[1]),
            "validation_images": count_images(val),
            "validation_source": source,
            "peak_rss_mb": round(rss_mb, 1),
            "wall_seconds": result["seconds"],
            "accuracy": {k: acc[k] for k in ("dataset", "fp32", "value", "drop_points", "agreement_with_fp32")},
            "command": result["command"],
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        })  # fmt: skip
        RESULTS.write_text(json.dumps(runs, indent=2) + "\n")
        print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
