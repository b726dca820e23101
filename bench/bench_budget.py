"""The accuracy budget on the reference models: naive INT8 against --min-agreement 99 and 99.5.

    python bench/bench_budget.py [--models resnet mobilenetv2] [--targets cpu jetson-orin-nano intel-cpu]
                                 [--val cifar10-test|sample|FOLDER] [--budgets 99 99.5]

For each model and target: compiles naive INT8 and each budget with the committed 300 calibration images
(from CIFAR-10's train split) and --val: by default the whole CIFAR-10 test split (10,000 images, unpacked
from ../shared/datasets/cifar10/test.zip into ~/.cache/edgekit-bench), else the committed 2,000-image
sample. edgekit splits --val into search and check parts; the table reports agreement and top-1 on the
check part (images the search never used), the layers kept in higher precision, the search time, and on
the `cpu` target batch-1 latency of each bundle against FP32, measured interleaved.
Writes bench/results/<--out> (default budget.json).

    python bench/bench_budget.py --holdout 500 --models mobilenetv2 resnet --targets cpu --out budget-holdout.json

issue 12's check: --val is the first 500 images of each test class (5,000), and every budgeted bundle is
also measured on the other 5,000 (held-out images no part of the compile saw): agreement with FP32 there,
and what the budget shipped (naive INT8, INT8 with fallbacks, or another precision) with its batch-1 speed
against FP32, timed interleaved.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data" / "cifar10"
SHARED_TEST = ROOT.parent / "shared" / "datasets" / "cifar10" / "test.zip"


def validation_folder(choice: str) -> Path:
    """The --val folder: the full CIFAR-10 test split (unpacked once), the committed sample, or a folder."""
    if choice == "sample":
        return DATA / "test"
    if choice != "cifar10-test":
        return Path(choice)
    if not SHARED_TEST.exists():
        print(f"{SHARED_TEST} is absent: using the committed 2,000-image sample", file=sys.stderr)
        return DATA / "test"
    import zipfile

    cache = Path.home() / ".cache" / "edgekit-bench" / "cifar10"
    if not (cache / "test").is_dir():
        tmp = cache.with_name("cifar10.partial")
        with zipfile.ZipFile(SHARED_TEST) as z:
            z.extractall(tmp)
        tmp.rename(cache)
    return cache / "test"


def first_per_class(val: Path, n: int, *, rest: bool = False) -> Path:
    """A folder of links to the first ``n`` images (by name) of each class folder of ``val`` (``rest``: all
    the others)."""
    out = Path(tempfile.mkdtemp(prefix=f"edgekit-val{n}{'-rest' if rest else ''}-"))
    for folder in sorted(d for d in val.iterdir() if d.is_dir()):
        (out / folder.name).mkdir()
        images = sorted(folder.iterdir())
        for image in images[n:] if rest else images[:n]:
            (out / folder.name / image.name).symlink_to(image.resolve())
    return out


def holdout_agreement(bundle: Path, model: str, holdout: Path) -> dict:
    """Agreement with FP32 (ONNX Runtime on the source model) and top-1 on the held-out images."""
    import onnxruntime as ort

    import edgekit

    b = edgekit.load_bundle(bundle)
    src = ort.InferenceSession(str(ROOT / "examples" / "models" / model / "model.onnx"),
                               providers=["CPUExecutionProvider"])  # fmt: skip
    name = src.get_inputs()[0].name
    paths = sorted(p for p in holdout.rglob("*.jpg"))
    classes = sorted(d.name for d in holdout.iterdir() if d.is_dir())
    labels = np.array([classes.index(p.parent.name) for p in paths])
    agree = right = ref_right = 0
    for i in range(0, len(paths), 64):
        x = np.stack([b.preprocess(p) for p in paths[i : i + 64]])
        ours, ref = b.infer(x).argmax(1), src.run(None, {name: x})[0].argmax(1)
        agree += int((ours == ref).sum())
        right += int((ours == labels[i : i + 64]).sum())
        ref_right += int((ref == labels[i : i + 64]).sum())
    b.close()
    n = len(paths)
    return {"images": n, "agreement_with_fp32": round(100 * agree / n, 3), "top1": round(100 * right / n, 3),
            "fp32_top1": round(100 * ref_right / n, 3)}  # fmt: skip


def compile_one(model: str, target: str, precision: str, out: Path, budget: str | None, val: Path):
    import edgekit

    d = ROOT / "examples" / "models" / model
    t = time.perf_counter()
    compiled = edgekit.compile_model(
        d / "model.onnx", spec=d / "model.toml", target=target, precision=precision, output=out,
        calib=DATA / "calib", val=val, min_agreement=budget,
    )  # fmt: skip
    return compiled.manifest, time.perf_counter() - t


def latencies(paths: dict[str, Path], rounds: int = 8, runs: int = 200) -> dict[str, float]:
    import edgekit

    bundles = {k: edgekit.load_bundle(p) for k, p in paths.items()}
    x = np.stack([b.preprocess(DATA / "test" / "cat" / "0000.jpg") for b in bundles.values()][:1])
    times: dict[str, list[float]] = {k: [] for k in bundles}
    for _ in range(rounds):
        for k, b in bundles.items():
            for _ in range(runs):
                t = time.perf_counter()
                b.infer(x)
                times[k].append(time.perf_counter() - t)
    return {k: 1000 * float(np.median(v)) for k, v in times.items()}


def row(model: str, target: str, label: str, manifest: dict, seconds: float) -> dict:
    acc, q = manifest["accuracy"], manifest["quantization"] or {}
    b = q.get("budget") or manifest.get("budget")
    out = {"model": model, "target": target, "variant": label, "compile_seconds": round(seconds, 1),
           "agreement_all": acc["agreement_with_fp32"], "drop_all": acc["drop_points"],
           "simulated": bool(acc.get("simulated"))}  # fmt: skip
    if b:
        out.update(ships=(b.get("chosen") or {}).get("label"), precision=manifest["precision"]["inference"],
                   naive_probability=b.get("naive_int8_probability_meets_budget"))  # fmt: skip
        out.update(check=b["on_check"], search=b["on_search"], kept=len(b["layers_kept_in_higher_precision"]),
                   layers=b["quantized_layers"], search_seconds=b["search_seconds"], met=b["met"],
                   margin=b["search_margin_points"], search_images=b["search_images"], check_images=b["check_images"],
                   trial_builds=b["trial_builds"])  # fmt: skip
    return out


def table(doc: dict) -> str:
    """The README's Markdown table from a results document."""
    holdout = any("holdout" in r for r in doc["rows"])
    lines = [
        "| model | target | variant | ships | P(naive meets) | agreement, check images | top-1 drop, check images "
        "| layers kept in higher precision | search (trials) | batch-1 ms vs FP32 (cpu) |"
        + (" agreement, held-out images |" if holdout else ""),
        "|---|---|---|---|---|---|---|---|---|---|" + ("---|" if holdout else ""),
    ]
    for r in doc["rows"]:
        if r["variant"] == "fp32":
            continue
        target = r["target"] + (" (simulated)" if r.get("simulated") else "")
        speed = doc["cpu_b1_ms"].get(r["model"], {})
        ms = ""
        if r["target"] == "cpu" and r["variant"] in speed and "fp32" in speed:
            ms = f"{speed[r['variant']]:.3f} vs {speed['fp32']:.3f} ({speed['fp32'] / speed[r['variant']]:.2f}x)"
        held = f" {r['holdout']['agreement_with_fp32']:.2f}% |" if "holdout" in r else (" |" if holdout else "")
        if "error" in r:
            lines.append(f"| {r['model']} | {target} | `{r['variant']}` | refused: {r['error']} | | | | | | |"
                         + (" |" if holdout else ""))  # fmt: skip
        elif "check" not in r:
            lines.append(f"| {r['model']} | {target} | `{r['variant']}` | naive int8 | - | {r['agreement_all']:.2f}% "
                         f"(all) | {r['drop_all']:+.2f} (all) | 0 | - | {ms} |{held}")  # fmt: skip
        else:
            c = r["check"]
            met = "" if r["met"] else " **(not met)**"
            p = "-" if r.get("naive_probability") is None else f"{r['naive_probability']:.3f}"
            lines.append(f"| {r['model']} | {target} | `{r['variant']}` | {r.get('ships') or '-'} | {p} | "
                         f"{c['agreement_with_fp32']:.2f}%{met} | {c['drop_points']:+.2f} | {r['kept']} of {r['layers']} "
                         f"| {r['search_seconds']:.0f} s ({r.get('trial_builds', '?')}) | {ms} |{held}")  # fmt: skip
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet", "mobilenetv2"])
    p.add_argument("--targets", nargs="+", default=["cpu", "jetson-orin-nano", "intel-cpu"])
    p.add_argument("--budgets", nargs="+", default=["99", "99.5"])
    p.add_argument("--val", default="cifar10-test", help="cifar10-test (default), sample, or a folder")
    p.add_argument("--val-per-class", type=int, metavar="N", help="take only the first N images of each class")
    p.add_argument("--holdout", type=int, metavar="N", help="--val is the first N images a class; measure every "
                   "budgeted bundle on the rest too (held-out images)")  # fmt: skip
    p.add_argument("--skip-fp32-and-naive", action="store_true", help="compile only the budgeted variants")
    p.add_argument("--out", default="budget.json", help="file name under bench/results/ (default budget.json)")
    p.add_argument("--table", metavar="JSON", help="only print the Markdown table of an earlier results file")
    a = p.parse_args()
    if a.table:
        print(table(json.loads(Path(a.table).read_text())))
        return 0
    val = validation_folder(a.val)
    holdout = None
    if a.holdout:
        holdout, val = first_per_class(val, a.holdout, rest=True), first_per_class(val, a.holdout)
        a.val_per_class = a.holdout
    elif a.val_per_class:
        val = first_per_class(val, a.val_per_class)
    rows, speed = [], {}
    with tempfile.TemporaryDirectory(prefix="edgekit-budget-bench-") as tmp:
        for model in a.models:
            for target in a.targets:
                paths = {}
                for label, precision, budget in [("fp32", "fp32", None), ("int8", "int8", None)] + [
                    (f"int8 --min-agreement {b}", "int8", b) for b in a.budgets
                ]:
                    if label == "fp32" and target != "cpu":
                        continue
                    if a.skip_fp32_and_naive and budget is None:
                        continue
                    out = Path(tmp) / f"{model}-{target}-{label.replace(' ', '_')}"
                    try:
                        manifest, seconds = compile_one(model, target, precision, out, budget, val)
                    except EdgekitError as exc:  # a budget that cannot hold is a result, not a crash
                        rows.append({"model": model, "target": target, "variant": label, "error": str(exc)})
                        print(json.dumps(rows[-1]), flush=True)
                        continue
                    rows.append(row(model, target, label, manifest, seconds))
                    if holdout is not None and budget is not None and not rows[-1]["simulated"]:
                        rows[-1]["holdout"] = holdout_agreement(out, model, holdout)
                    paths[label] = out
                    print(json.dumps(rows[-1]), flush=True)
                if target == "cpu" and len(paths) > 1:
                    speed[model] = latencies(paths)
                    print(json.dumps({model: speed[model]}), flush=True)
    where = str(val.relative_to(ROOT)) if ROOT in val.parents else a.val
    doc = {"val": where + (f", first {a.val_per_class} a class" if a.val_per_class else ""), "rows": rows,
           "cpu_b1_ms": speed}  # fmt: skip
    (ROOT / "bench" / "results" / a.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
