"""Simulated INT8 accuracy of the Jetson (TensorRT) bundle beside the CPU targets' INT8, on the reference models.

    .venv/bin/python bench/tensorrt_sim.py                      # the table in docs/tensorrt.md
    .venv/bin/python bench/tensorrt_sim.py --models resnet --jetson-methods minmax entropy percentile

Each model is compiled at int8 for each target with the same calibration sample (examples/data/cifar10/calib,
300 images, minmax unless told) and measured on examples/data/cifar10/test (2,000 images) against ONNX
Runtime FP32 on the source model. The Jetson figure is simulated: the bundle's Q/DQ ONNX, run by ONNX
Runtime on this CPU, not TensorRT on a Jetson. Prints a Markdown table; --json also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data" / "cifar10"
MODELS = ROOT / "examples" / "models"


def measure(model: str, target: str, method: str, work: Path) -> dict:
    from edgekit.pipeline import compile_model

    src = MODELS / model / "model.onnx"
    result = compile_model(
        src, spec=src.with_name("model.toml"), target=target, precision="int8", calib=DATA / "calib",
        calib_size=300, calibration_method=method, val=DATA / "test", output=work / f"{model}-{target}-{method}",
    )  # fmt: skip
    acc = result.manifest["accuracy"]
    return {
        "model": model, "target": target, "method": method, "fp32_top1": acc["fp32"]["top1"],
        "int8_top1": acc["value"]["top1"], "drop_points": acc["drop_points"],
        "agreement": acc["agreement_with_fp32"], "measured_with": acc["measured_with"],
        "recipe": result.manifest["quantization"]["recipe"],
    }  # fmt: skip


def table(rows: list[dict]) -> str:
    lines = [
        "| model | FP32 top-1 | target (INT8 recipe, calibration) | INT8 top-1 | drop (points) | agreement with FP32 | measured with |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['fp32_top1']:.2f}% | {r['target']} ({r['recipe']}, {r['method']}) | "
            f"{r['int8_top1']:.2f}% | {r['drop_points']:+.2f} | {r['agreement']:.2f}% | {r['measured_with']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet", "mobilenetv2"])
    p.add_argument("--targets", nargs="+", default=["jetson-orin-nano", "cpu", "intel-cpu"])
    p.add_argument("--jetson-methods", nargs="+", default=["minmax"], help="calibration methods for jetson-* targets")
    p.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    missing = [m for m in args.models if not (MODELS / m / "model.onnx").is_file()]
    if missing:
        print(f"no reference model for {', '.join(missing)} under {MODELS}; train them first", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-trt-sim-") as tmp:
        for model in args.models:
            for target in args.targets:
                for method in args.jetson_methods if target.startswith("jetson") else ["minmax"]:
                    print(f"{model} -> {target} int8 ({method})", file=sys.stderr, flush=True)
                    rows.append(measure(model, target, method, Path(tmp)))
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
