"""Calibration methods per target, on the reference models: what each target's default is chosen from.

    .venv/bin/python bench/bench_calibration.py [--models resnet mobilenetv2] [--targets cpu jetson-orin-nano intel-cpu]
                                                [--val cifar10-test|sample|FOLDER]

Each model is compiled at int8 for each target with every calibration method its backend offers (ONNX
Runtime's quantizer for cpu and Jetson: minmax, entropy, percentile at 99.99 and 99.999, mse; NNCF for
intel-cpu: minmax, mean-minmax, percentile at 99.99 and 99.999, mse), calibrated on the committed 300
images, and measured against FP32 on --val (by default the whole CIFAR-10 test split, 10,000 images). The
Jetson figures are the TensorRT simulation (the Q/DQ graph in ONNX Runtime on this CPU). Prints a Markdown
table and writes bench/results/calibration.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from bench_budget import DATA, ROOT, validation_folder

METHODS = {
    "onnxruntime": [("minmax", None), ("entropy", None), ("percentile", 99.99), ("percentile", 99.999), ("mse", None)],
    "tensorrt": [("minmax", None), ("entropy", None), ("percentile", 99.99), ("percentile", 99.999), ("mse", None)],
    "openvino": [("minmax", None), ("mean-minmax", None), ("percentile", 99.99), ("percentile", 99.999), ("mse", None)],
}


def measure(model: str, target: str, method: str, pct: float | None, val: Path, work: Path) -> dict:
    import edgekit

    d = ROOT / "examples" / "models" / model
    t = time.perf_counter()
    compiled = edgekit.compile_model(
        d / "model.onnx", spec=d / "model.toml", target=target, precision="int8", calib=DATA / "calib",
        calibration_method=method, calibration_percentile=pct or 99.999, val=val,
        output=work / f"{model}-{target}-{method}-{pct}",
    )  # fmt: skip
    acc = compiled.manifest["accuracy"]
    return {
        "model": model, "target": target, "method": method if pct is None else f"{method} {pct:g}",
        "fp32_top1": acc["fp32"]["top1"], "int8_top1": acc["value"]["top1"], "drop_points": acc["drop_points"],
        "agreement": acc["agreement_with_fp32"], "simulated": bool(acc.get("simulated")),
        "compile_seconds": round(time.perf_counter() - t, 1),
    }  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet", "mobilenetv2"])
    p.add_argument("--targets", nargs="+", default=["cpu", "jetson-orin-nano", "intel-cpu"])
    p.add_argument("--val", default="cifar10-test", help="cifar10-test (default), sample, or a folder")
    p.add_argument("--out", default="calibration.json", help="file name under bench/results/")
    a = p.parse_args()
    from edgekit.targets import get_target

    val = validation_folder(a.val)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-calib-bench-") as tmp:
        for model in a.models:
            for target in a.targets:
                for method, pct in METHODS[get_target(target).backend]:
                    rows.append(measure(model, target, method, pct, val, Path(tmp)))
                    print(json.dumps(rows[-1]), flush=True)
    print("| model | target | calibration | INT8 top-1 (FP32) | drop (points) | agreement with FP32 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        sim = " (simulated)" if r["simulated"] else ""
        print(f"| {r['model']} | {r['target']}{sim} | {r['method']} | {r['int8_top1']:.2f}% ({r['fp32_top1']:.2f}%) | "
              f"{r['drop_points']:+.2f} | {r['agreement']:.2f}% |")  # fmt: skip
    doc = {"val": str(val.relative_to(ROOT)) if ROOT in val.parents else a.val, "rows": rows}
    (ROOT / "bench" / "results" / a.out).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
