"""Turn combination records into report rows: every figure with how it was obtained, the Pareto front,
the recommendations under the user's budgets, and the estimator's error on this host.

Provenance kinds: ``measured`` (here, on the target itself), ``merged`` (a device's ``edgekit bench``
result), ``simulated`` (accuracy of the bundle's model run on a stand-in: ONNX Runtime or the OpenVINO CPU
plugin here), ``estimated`` (see estimate.py; always with its band) and ``none``.

Estimated latencies stay off the Pareto front and out of the recommendations unless the user asks
(``include_estimates``); even then a measured or merged figure beats an estimate: an estimate never knocks a
measured point off the front, and a target with any measured or merged row is recommended from those only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REPORT_SCHEMA = "edgekit.report"
REPORT_SCHEMA_VERSION = 1
DEFAULT_MAX_DROP = 1.0
KINDS = {
    "measured": "measured here, on the target itself",
    "merged": "measured on the device by edgekit bench and merged in (--merge)",
    "simulated": "the bundle's model run here on a stand-in for the absent device",
    "estimated": "estimate from the model's MACs and memory traffic and the target file's figures and fitted terms, "
    "with its band",
    "none": "not available",
}


# What a report calls each figure a task's metrics hold (a manifest's ``accuracy.value`` keys)
FIGURE_NAMES = {"top1": "top-1", "top5": "top-5", "map50_95": "mAP@[.5:.95]", "map50": "mAP@.5",
                "precision": "precision", "recall": "recall", "f1": "F1"}  # fmt: skip


@dataclass(frozen=True)
class Figures:
    """How the report shows a task's accuracy, chosen by its headline metric (a manifest's ``accuracy.metric``).

    ``name`` is the metric as a reader knows it; ``quantity`` what the chart's axis plots; ``columns`` the
    per-row figures besides it (key in the row's accuracy, column header, digits); ``per_class`` the heading of
    the per-class table. ``end_to_end`` marks a task whose postprocessing costs what the image holds (a
    detector's box decoding and NMS): its end-to-end p50 is measured on the validation images, stands beside the
    model-only p50 in the table and is drawn on the chart. ``latency_note`` says what each latency includes
    (None: the writers' own sentence, the classifier's).
    """

    metric: str
    name: str
    quantity: str
    per_class: str
    columns: tuple[tuple[str, str, int], ...] = ()
    end_to_end: bool = False
    latency_note: str | None = None


METRICS = {
    "top1": Figures("top1", "top-1", "top-1 accuracy", "Per-class accuracy (top-1 %)"),
    "map50_95": Figures(
        "map50_95",
        "mAP@[.5:.95]",
        "mAP@[.5:.95]",
        "Per-class AP@[.5:.95] (%)",
        columns=(("precision", "P %", 1), ("recall", "R %", 1), ("score_threshold", "thr", 3)),
        end_to_end=True,
        latency_note="model p50 ms is batch-1 p50 of model inference alone on a preprocessed input (no box "
        "decoding, no NMS); e2e p50 ms is one image end to end: JPEG decoding, letterbox, batch-1 inference, box "
        "decoding and NMS (boxes mapped to the image's pixels), each call on the next validation image. mAP is "
        "COCO's mAP@[.5:.95] (score 0.001, 100 detections an image); P % and R % are precision and recall at the "
        "row's shipped score threshold (thr: INT8 re-tunes it to keep FP32's precision and recall at the spec's "
        "threshold); agree % is the F1 of the row's detections against FP32's (IoU 0.5, same class)",
    ),
}


def figures(metric: str | None) -> Figures:
    """The ``Figures`` of a headline metric; an unknown one is shown under its own name."""
    metric = metric or "top1"
    return METRICS.get(metric) or Figures(metric, figure_name(metric), figure_name(metric), f"Per-class {metric} (%)")


def figure_name(key: str) -> str:
    return FIGURE_NAMES.get(key, key)


def doc_figures(doc: dict[str, Any]) -> Figures:
    """The ``Figures`` of a report document: its FP32 reference's metric (top-1 for a document without one)."""
    return figures((doc.get("fp32_reference") or {}).get("metric"))


def score_of(accuracy: dict[str, Any] | None) -> float | None:
    """The headline figure of a row's (or the FP32 reference's) accuracy: the value of its ``metric``."""
    if not accuracy:
        return None
    return accuracy.get(accuracy.get("metric") or "top1")


def _source(kind: str, how: str, machine: str | None = None) -> dict[str, Any]:
    return {"kind": kind, "how": how, "machine": machine}


def accuracy_of(record: dict[str, Any], fp32: dict[str, Any] | float, val_sha: str,
                host: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A row's accuracy: the metric's name (``metric``), the task's figures (a classifier's ``top1`` and ``top5``,
    a detector's ``map50_95``, ``map50``, ``precision``, ``recall``, ``f1`` and ``score_threshold``), the drop in
    points of the metric against FP32, agreement, per-class figures and the source. ``fp32`` is the report's FP32
    reference (or its top-1, for a classifier)."""
    if not isinstance(fp32, dict):
        fp32 = {"metric": "top1", "top1": fp32}
    metric = fp32.get("metric") or "top1"
    merged = (record.get("merged") or {}).get("bench") or {}
    device = merged.get("accuracy")
    if device and device.get("dataset", {}).get("sha256") == val_sha and device.get(metric) is not None:
        how = f"measured on the device by edgekit bench --val, from {record['merged']['file']}"
        values = {k: v for k, v in device.items() if k not in ("per_class", "dataset")}
        return {
            "metric": metric, **values, "drop_points": round(score_of(fp32) - device[metric], 3),
            "agreement_with_fp32": None, "per_class": device["per_class"],
            "source": _source("merged", how, merged["machine"]["summary"]),
        }  # fmt: skip
    acc = record["manifest"].get("accuracy")
    if not acc or not acc.get("value"):
        return {"metric": metric, metric: None, "per_class": {}, "source": _source("none", "not measured")}
    how = str(acc.get("measured_with") or "")
    on_target = bool((record["manifest"].get("latency") or {}).get("measured"))
    simulated = not on_target or "simulated" in how.lower() or bool(acc.get("simulated"))
    if simulated and not how.lower().startswith("simulated"):
        how = f"simulated: {how}"
    if simulated:
        from edgekit import registry

        how += registry.backend(record["backend"]).simulation_note(record["precision"])
    retuned = {"threshold_retune": acc["score_threshold"]} if isinstance(acc.get("score_threshold"), dict) else {}
    return {
        "metric": acc.get("metric") or metric, **acc["value"], "drop_points": acc["drop_points"],
        "agreement_with_fp32": acc["agreement_with_fp32"], "per_class": acc["per_class"], **retuned,
        "source": _source(
            "simulated" if simulated else "measured", how if simulated else f"measured here: {how}", host
        ),
    }  # fmt: skip


def _from_bench(bench: dict[str, Any], source: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    lat = {k: bench["latency"][k] for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")}
    tp = bench.get("throughput") or []
    best = max(tp, key=lambda t: t["images_per_s"]) if tp else None
    extra = {
        "throughput": tp,
        "best_throughput": {"batch": best["batch"], "images_per_s": best["images_per_s"]} if best else None,
        "decode_ms": (bench.get("decode") or {}).get("p50_ms"),
        "preprocess_ms": (bench.get("preprocess") or {}).get("p50_ms"),
        "end_to_end_ms": (bench.get("end_to_end") or {}).get("p50_ms"),
        "end_to_end_what": (bench.get("end_to_end") or {}).get("what"),
        "end_to_end_stages_ms": (bench.get("end_to_end") or {}).get("stages_p50_ms"),
        "peak_rss_mb": (bench.get("memory") or {}).get("peak_rss_mb"),
        "cpu_percent_of_one_core": (bench.get("cpu") or {}).get("percent_of_one_core"),
        "image": (bench.get("settings") or {}).get("image"),
        "source": source,
    }
    return {**lat, "source": source}, extra


def latency_of(record: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Batch-1 latency (p50/p90/p99/mean) and the other bench figures, from the best source there is."""
    if record.get("merged"):
        bench = record["merged"]["bench"]
        how = f"measured on the device by edgekit bench, merged from {record['merged']['file']}"
        return _from_bench(bench, _source("merged", how, bench["machine"]["summary"]))
    if record.get("bench"):
        bench = record["bench"]
        return _from_bench(bench, _source("measured", "measured here by edgekit bench", bench["machine"]["summary"]))
    lat = record["manifest"].get("latency") or {}
    if lat.get("measured"):
        src = _source("measured", "measured here at compile time", lat.get("machine"))
        return {**{k: lat.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")}, "source": src}, None
    est = record.get("estimate")
    if est:
        kind = "fitted roofline" if est.get("model") == "fitted" else "roofline"
        how = f"estimated: {kind} ({est['figures']} from the {record['target']} target file)"
        if est.get("band"):
            how += f"; band {est['low_ms']:.3g}-{est['high_ms']:.3g} ms (x/÷ {est['band']:g}: {est['band_source']})"
        return {"p50_ms": est["ms"], "p90_ms": None, "p99_ms": None, "mean_ms": None,
                "low_ms": est.get("low_ms"), "high_ms": est.get("high_ms"),
                "source": _source("estimated", how)}, None  # fmt: skip
    return {"p50_ms": None, "source": _source("none", "no measurement, and the target file gives no figures")}, None


def row_of(
    record: dict[str, Any], fp32: dict[str, Any] | float, val_sha: str, host: str | None = None
) -> dict[str, Any]:
    """One report row; ``fp32`` is the report's FP32 reference (or its top-1, for a classifier); ``host``
    describes this machine, where accuracy was measured or simulated."""
    row = {k: record.get(k) for k in ("id", "target", "backend", "device", "precision", "calibration_method")}
    row.update(status=record["status"], error=record.get("error"), estimate=record.get("estimate"), pareto=False)
    if record["status"] != "ok":
        return {**row, "accuracy": None, "latency": None, "bench": None, "notes": []}
    latency, bench = latency_of(record)
    return {
        **row,
        "accuracy": accuracy_of(record, fp32, val_sha, host),
        "latency": latency,
        "bench": bench,
        "compile_seconds": record.get("compile_seconds"),
        "timeline": record.get("timeline"),
        "bundle": record.get("bundle"),
        "inference_precision": record["manifest"]["precision"].get("inference"),
        "budget": (record["manifest"].get("quantization") or {}).get("budget") or record["manifest"].get("budget"),
        "notes": list(record.get("notes") or []) + list(record["manifest"].get("notes") or []),
    }


def _point(row: dict[str, Any]) -> tuple[float, float] | None:
    if row["status"] != "ok" or score_of(row["accuracy"]) is None or row["latency"]["p50_ms"] is None:
        return None
    return row["latency"]["p50_ms"], score_of(row["accuracy"])


def is_estimated(row: dict[str, Any]) -> bool:
    return bool(row.get("latency")) and row["latency"]["source"]["kind"] == "estimated"


def mark_pareto(rows: list[dict[str, Any]], include_estimates: bool = False) -> None:
    """A row is on the front when no other is at least as fast and as accurate, and better in one.

    Estimated rows take no part unless ``include_estimates``; then they join the front where no row dominates
    them, but never push a measured (or merged) row off it.
    """
    points = [(r, p) for r in rows if (p := _point(r)) and (include_estimates or not is_estimated(r))]
    for row, (lat, acc) in points:
        rivals = [(o, q) for o, q in points if o is not row and (is_estimated(row) or not is_estimated(o))]
        row["pareto"] = not any(lo <= lat and ao >= acc and (lo < lat or ao > acc) for _, (lo, ao) in rivals)


def recommend(
    rows: list[dict[str, Any]],
    targets: list[str],
    max_drop: float,
    max_ms: float | None,
    include_estimates: bool = False,
) -> list[dict]:
    """For each target, the fastest combination within the accuracy and latency budgets (``max_drop``: points
    of the task's metric, a classifier's top-1, a detector's mAP@[.5:.95]).

    From measured or merged latencies only; a target that has none is recommended from its estimates only
    with ``include_estimates`` (and the text says the figure is an estimate, with its band).
    """
    out = []
    for target in targets:
        cands = [r for r in rows if r["target"] == target and _point(r)]
        firm = [r for r in cands if not is_estimated(r)]
        if firm or not include_estimates:
            if cands and not firm:
                out.append({"target": target, "choice": None, "estimated_only": True, "text": (
                    f"{target}: latency is estimated only (no measured or merged run); not recommended without "
                    "--include-estimates (merge a device run with --merge)")})  # fmt: skip
                continue
            cands = firm
        ok = [
            r
            for r in cands
            if (r["accuracy"]["drop_points"] is None or r["accuracy"]["drop_points"] <= max_drop)
            and (max_ms is None or _budget_ms(r) <= max_ms)
        ]
        best = min(ok, key=lambda r: (r["latency"]["p50_ms"], -score_of(r["accuracy"]))) if ok else None
        out.append({"target": target, "choice": best["id"] if best else None, "text": _why(target, best, cands)})
    return out


def _budget_ms(row: dict[str, Any]) -> float:
    """The latency a budget is checked against: an estimate's high end, so that the band has to fit."""
    lat = row["latency"]
    return lat.get("high_ms") or lat["p50_ms"] if is_estimated(row) else lat["p50_ms"]


def _why(target: str, best: dict[str, Any] | None, cands: list[dict[str, Any]]) -> str:
    if not cands:
        return f"{target}: no combination finished with both accuracy and latency"
    if best is None:
        return f"{target}: no combination meets the budget"
    acc, lat = best["accuracy"], best["latency"]
    method = f" ({best['calibration_method']} calibration)" if best["calibration_method"] else ""
    kind = lat["source"]["kind"]
    if kind == "estimated" and lat.get("low_ms") is not None:
        kind = f"estimated, band {lat['low_ms']:.3g}-{lat['high_ms']:.3g} ms"
    return (
        f"{target}: {best['precision']}{method}: {figures(acc.get('metric')).name} {score_of(acc):.2f}% "
        f"({_delta(acc['drop_points'])} vs FP32, {acc['source']['kind']}), {lat['p50_ms']:.3g} ms batch-1 p50 ({kind})"
    )


def _delta(drop: float | None) -> str:
    return "no FP32 reference" if drop is None else f"{0.0 - drop:+.2f} points"


def measured_here(rows: list[dict[str, Any]]) -> list[tuple[str, str, float]]:
    """(id, precision, p50 ms) of the rows measured on this host: the estimator's check."""
    return [
        (r["id"], r["precision"], r["latency"]["p50_ms"])
        for r in rows
        if r["status"] == "ok" and r["latency"]["source"]["kind"] == "measured" and r["latency"]["p50_ms"]
    ]
