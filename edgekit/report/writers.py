"""Write a report document as report.json, report.csv, report.md and report.html, each atomically."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from edgekit.report.summary import Figures, doc_figures, figure_name, score_of

TAGS = {"measured": "M", "merged": "D", "simulated": "S", "estimated": "E", "none": "-"}
CSV_COLUMNS = (
    "id", "target", "backend", "device", "precision", "calibration_method", "status", "top1", "top5",
    "drop_points", "agreement_with_fp32", "accuracy_source", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms",
    "latency_mean_ms", "latency_source", "latency_machine", "estimate_ms", "estimate_low_ms", "estimate_high_ms",
    "best_images_per_s", "best_batch",
    "decode_ms", "preprocess_ms", "end_to_end_ms", "peak_rss_mb", "cpu_percent_of_one_core", "compile_seconds",
    "bundle_bytes", "bundle_hash", "pareto", "error",
)  # fmt: skip


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it into place."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fmt(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def points(value: float) -> str:
    return f"{value:g} point{'' if value == 1 else 's'}"


def ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def value_keys(doc: dict[str, Any]) -> list[str]:
    """The figures of the task's metrics, as the FP32 reference holds them (a classifier's top1 and top5)."""
    skip = ("metric", "per_class", "how")
    return [k for k in doc.get("fp32_reference") or {"top1": 0, "top5": 0} if k not in skip]


def _csv_names(keys: list[str]) -> dict[str, str]:
    """The CSV column of each task figure: its own key, or with ``accuracy_`` before every key when one of them
    is a column already (a detector's ``precision`` beside the combination's ``precision``)."""
    clash = any(k in CSV_COLUMNS and k not in ("top1", "top5") for k in keys)
    return {k: f"accuracy_{k}" if clash else k for k in keys}


def csv_columns(doc: dict[str, Any]) -> tuple[str, ...]:
    """``CSV_COLUMNS`` with the task's figures in place of top1 and top5 (a detector's accuracy_map50_95 ...)."""
    i = CSV_COLUMNS.index("top1")
    return (*CSV_COLUMNS[:i], *_csv_names(value_keys(doc)).values(), *CSV_COLUMNS[i + 2 :])


def flat_row(row: dict[str, Any], keys: list[str] | None = None) -> dict[str, Any]:
    """One result flattened for report.csv; ``keys`` are the task's figures (default top1, top5)."""
    acc, lat, bench = row.get("accuracy") or {}, row.get("latency") or {}, row.get("bench") or {}
    best = bench.get("best_throughput") or {}
    names = _csv_names(list(keys or ("top1", "top5")))
    return {
        **{k: row.get(k) for k in ("id", "target", "backend", "device", "precision", "calibration_method", "status")},
        **{name: acc.get(k) for k, name in names.items()},
        **{k: acc.get(k) for k in ("drop_points", "agreement_with_fp32")},
        "accuracy_source": (acc.get("source") or {}).get("kind"),
        **{f"latency_{k}": lat.get(k) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms")},
        "latency_source": (lat.get("source") or {}).get("kind"),
        "latency_machine": (lat.get("source") or {}).get("machine"),
        "estimate_ms": (row.get("estimate") or {}).get("ms"),
        "estimate_low_ms": (row.get("estimate") or {}).get("low_ms"),
        "estimate_high_ms": (row.get("estimate") or {}).get("high_ms"),
        "best_images_per_s": best.get("images_per_s"),
        "best_batch": best.get("batch"),
        **{k: bench.get(k) for k in ("decode_ms", "preprocess_ms", "end_to_end_ms", "peak_rss_mb")},
        "cpu_percent_of_one_core": bench.get("cpu_percent_of_one_core"),
        "compile_seconds": row.get("compile_seconds"),
        "bundle_bytes": (row.get("bundle") or {}).get("size_bytes"),
        "bundle_hash": (row.get("bundle") or {}).get("hash"),
        "pareto": row.get("pareto"),
        "error": row.get("error"),
    }


def to_csv(doc: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=csv_columns(doc), lineterminator="\n")
    writer.writeheader()
    keys = value_keys(doc)
    for row in doc["results"]:
        writer.writerow({k: "" if v is None else v for k, v in flat_row(row, keys).items()})
    return buf.getvalue()


def estimate_cell(est: dict[str, Any] | None) -> str:
    """An estimate with its band: "0.41 (0.23-0.74)"."""
    if not est:
        return ms(None)
    if est.get("low_ms") is None:
        return ms(est["ms"])
    return f"{ms(est['ms'])} ({ms(est['low_ms'])}-{ms(est['high_ms'])})"


def columns(shown: Figures) -> list[tuple[str, str]]:
    """The main table's columns, (id, header): the task's figures after the metric, and for a task whose
    end-to-end latency matters (a detector's) the end-to-end p50 beside the model-only one."""
    acc = [("combination", "combination"), ("status", "status"), ("score", f"{shown.name} %"), ("drop", "drop"),
           ("agree", "agree %"), *((key, header) for key, header, _ in shown.columns)]  # fmt: skip
    if shown.end_to_end:
        lat = [("p50", "model p50 ms"), ("e2e", "e2e p50 ms"), ("p99", "p99 ms"), ("tput", "img/s")]
    else:
        lat = [("p50", "p50 ms"), ("p99", "p99 ms"), ("tput", "img/s"), ("e2e", "e2e ms")]
    return [*acc, *lat, ("est", "est. ms"), ("mb", "MB"), ("compile", "compile s"), ("pareto", "Pareto")]


def cells(row: dict[str, Any], shown: Figures) -> dict[str, str]:
    """An ok row's cells by column id, as text (the provenance tag after the metric and the latency)."""
    acc, lat, bench = row["accuracy"], row["latency"], row["bench"] or {}
    atag, ltag = TAGS[acc["source"]["kind"]], TAGS[lat["source"]["kind"]]
    best = bench.get("best_throughput") or {}
    out = {
        "combination": row["id"], "status": "ok", "score": f"{fmt(score_of(acc))} {atag}",
        "drop": fmt(acc.get("drop_points"), 2), "agree": fmt(acc.get("agreement_with_fp32"), 1),
        "p50": f"{ms(lat['p50_ms'])} {ltag}", "p99": ms(lat.get("p99_ms")), "tput": fmt(best.get("images_per_s"), 0),
        "e2e": ms(bench.get("end_to_end_ms")), "est": estimate_cell(row["estimate"]),
        "mb": fmt(bench.get("peak_rss_mb"), 0), "compile": fmt(row.get("compile_seconds"), 1),
        "pareto": "yes" if row["pareto"] else "",
    }  # fmt: skip
    for key, _, digits in shown.columns:
        out[key] = fmt(acc.get(key), digits)
    return out


def table(doc: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The main table: one row a combination, provenance tags after each figure."""
    shown = doc_figures(doc)
    cols = columns(shown)
    header = [h for _, h in cols]
    rows = []
    for r in doc["results"]:
        if r["status"] != "ok":
            rows.append([r["id"], f"{r['status']}: {r['error']}", *[""] * (len(header) - 2)])
            continue
        row = cells(r, shown)
        rows.append([row[key] for key, _ in cols])
    return header, rows


def latency_note(doc: dict[str, Any], *, html: bool = False) -> str:
    """What the table's latencies (and the task's figures) include, as one sentence."""
    shown = doc_figures(doc)
    if shown.latency_note:
        return shown.latency_note[0].upper() + shown.latency_note[1:]
    e2e = (
        "decoding a JPEG, preprocessing and postprocessing"
        if html
        else "JPEG decoding, preprocessing and postprocessing"
    )
    return f"Latency is batch-1 p50 of model inference on a preprocessed input; e2e adds {e2e}"


def end_to_end_text(bench: dict[str, Any]) -> str:
    """What a row's end-to-end p50 is, and the p50 of its parts within the same calls ('' without one)."""
    what, stages = bench.get("end_to_end_what"), bench.get("end_to_end_stages_ms") or {}
    if not what:
        return ""
    text = f"{what}, on {bench.get('image')}"
    if stages.get("inference") is not None:
        text += (
            f"; p50 of its parts: decode and preprocess {ms(stages['decode_preprocess'])} ms, inference "
            f"{ms(stages['inference'])} ms, postprocessing {ms(stages['postprocess'])} ms"
        )
    return text


def reference_text(fp32: dict[str, Any], *, every: bool = False) -> str:
    """The FP32 reference's headline figure ("top-1 91.20%"), or with ``every`` each of its figures, and the
    score threshold they were measured at, if any."""
    keys = [k for k in fp32 if k not in ("metric", "per_class", "how", "score_threshold")] if every else []
    keys = keys or [fp32.get("metric") or "top1"]
    text = ", ".join(f"{figure_name(k)} {fp32[k]:.2f}%" for k in keys if fp32.get(k) is not None)
    if every and fp32.get("score_threshold") is not None:
        text += f" (precision, recall and F1 at score threshold {fp32['score_threshold']:g})"
    return text


def text_table(doc: dict[str, Any]) -> str:
    header, rows = table(doc)
    widths = [max(len(str(x[i])) for x in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(x, widths, strict=True)).rstrip() for x in [header, *rows]
    )


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(esc(c) for c in row) + " |" for row in rows],
    ]


def to_markdown(doc: dict[str, Any]) -> str:
    m, fp32, budget, shown = doc["model"], doc["fp32_reference"], doc["budget"], doc_figures(doc)
    lines = [
        f"# edgekit report: {m['name']}",
        "",
        f"Model `{m['file']}` ({m['format']}, {m['macs'] / 1e6:.1f} M MACs, {m['parameters'] / 1e6:.2f} M parameters); "
        f"FP32 reference {reference_text(fp32, every=shown.end_to_end)} on {doc['data']['val']['images']} validation "
        f"images ({fp32['how']}). Measured here on: {doc['machine']['summary']}.",
        ""
        if doc["complete"]
        else f"\n**Partial report**: {doc['progress']['finished']} of {doc['progress']['total']} "
        "combinations finished (re-run with `--resume` to continue).\n",
        f"## Recommended (accuracy budget {points(budget['max_accuracy_drop'])} of {shown.name}"
        + (f", latency budget {budget['max_latency_ms']:g} ms" if budget["max_latency_ms"] else "")
        + ")",
        "",
        *[f"- {r['text']}" for r in doc["recommendations"]],
        "",
        "## Results",
        "",
        *_md_table(*table(doc)),
        "",
        "Tags: M measured here, D measured on the device (merged), S simulated (the bundle's model run here on a "
        f"stand-in), E estimated (with its band). {latency_note(doc)}; est. ms is the estimate for the target "
        "file's device, with its band (low-high). Estimated latencies are "
        + (
            "on the Pareto front and in the recommendations (--include-estimates)"
            if doc.get("include_estimates")
            else "kept off the Pareto front and out of the recommendations (--include-estimates lets them in)"
        )
        + ".",
        "",
        *_budget_lines(doc),
        *estimator_lines(doc["estimator"]),
    ]
    return "\n".join(lines) + "\n"


def _budget_lines(doc: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    for r in doc["results"]:
        b = r.get("budget") if r["status"] == "ok" else None
        if not b:
            continue
        speed = speed_sentence(b)
        lines += [
            f"## {r['id']}: {b['budget']['text']} ({'met' if b['met'] else 'NOT met'})",
            "",
            *([speed, ""] if speed else []),
            f"{len(b['layers_kept_in_higher_precision'])} of {b['quantized_layers']} layers in {b['higher_precision']}; "
            f"check images: {fmt(b['on_check']['agreement_with_fp32'])}% agreement. Curve (layers reverted: "
            "agreement %, batch-1 ms): "
            + ", ".join(f"{p['layers_reverted']}: {fmt(p['agreement_with_fp32'])}, {fmt(p.get('latency_ms'), 3)}"
                        for p in b["curve"]),
            "",
            "Most sensitive layers (reverted alone: output NMSE against FP32, agreement %): "
            + ", ".join(f"`{x['layer']}` {x.get('output_nmse', '-')}, {fmt(x['agreement_with_fp32'])}"
                        for x in b["sensitivity_ranking"][:5]),
            "",
        ]  # fmt: skip
    return lines


def speed_sentence(b: dict[str, Any]) -> str:
    """The budget's batch-1 cost against FP32, said plainly when it eats INT8's speed-up ('' if not measured)."""
    from edgekit.budgeting import WORTHWHILE_SPEEDUP

    s = b.get("batch1_latency")
    if not s:
        return choice_sentence(b)
    text = choice_sentence(b) + (" " if choice_sentence(b) else "") + (f"Batch 1 on this machine: {s['budgeted_ms']:.3f} ms against FP32's {s['fp32_ms']:.3f} ms "
            f"({s['budgeted_speedup_vs_fp32']:.2f}x; naive INT8 {s['naive_int8_speedup_vs_fp32']:.2f}x).")  # fmt: skip
    if s["budgeted_speedup_vs_fp32"] < WORTHWHILE_SPEEDUP:
        text += f" **This budget costs the INT8 speed-up** (under {WORTHWHILE_SPEEDUP:g}x FP32)."
    return text


def choice_sentence(b: dict[str, Any]) -> str:
    """What the budget shipped and why, with the probability that naive INT8 meets it ('' for old records)."""
    chosen, p = b.get("chosen"), b.get("naive_int8_probability_meets_budget")
    if not chosen:
        return ""
    text = f"Ships {chosen['label']}, chosen by {chosen['by']}."
    if p is not None:
        text += f" Probability that naive INT8 meets the budget: {p:.3f}."
    return text


def estimator_lines(est: dict[str, Any]) -> list[str]:
    lines = ["## Latency estimates", "", f"Estimate: `{est['formula']}`; {est['assumes']}."]
    if est.get("classes"):
        lines += [
            "",
            f"Validation per device class on {est.get('validated_on', 'published figures')} (held-out median "
            "absolute error; an estimate's band is [ms / band, ms x band]):",
            "",
            *_md_table(
                ["device class", "targets", "median error %", "band"],
                [[c["class"], ", ".join(c["targets"]), fmt(c["median_abs_error_pct"], 1), f"x/÷ {c['band']:g}"]
                 for c in est["classes"]],
            ),
        ]  # fmt: skip
    check = est["validation"]
    if check["summary"]:
        s = check["summary"]
        lines += [
            "",
            f"Checked on this host with its measured ceilings ({_ceilings(est['host_ceilings'])}): over "
            f"{s['combinations']} measured combinations the estimate's median error is {s['median_abs_error_pct']:g}% "
            f"(max {s['max_abs_error_pct']:g}%); measured latency was {s['range_measured_over_estimate'][0]:g}x to "
            f"{s['range_measured_over_estimate'][1]:g}x the estimate (median {s['median_measured_over_estimate']:g}x)"
            + (
                f"; {s['within_band']} of {s['combinations']} within the band; the plain roofline's median error "
                f"{s['roofline_median_abs_error_pct']:g}%."
                if "within_band" in s
                else "."
            ),
            "",
            *_md_table(
                ["combination", "measured ms", "estimated ms (band)", "error %", "roofline ms"],
                [
                    [
                        r["id"],
                        ms(r["measured_ms"]),
                        estimate_cell(
                            {"ms": r["estimated_ms"], "low_ms": r.get("low_ms"), "high_ms": r.get("high_ms")}
                        ),
                        fmt(r["error_pct"], 1),
                        ms(r.get("roofline_ms")),
                    ]
                    for r in check["rows"]
                ],
            ),
        ]
    return lines


def _ceilings(c: dict[str, Any] | None) -> str:
    if not c:
        return "not measured"
    return (
        f"fp32 {c.get('fp32_tflops', 0) * 1e3:.0f} GFLOPS, int8 {c.get('int8_tops', 0) * 1e3:.0f} GOPS, "
        f"{c.get('memory_bandwidth_gbs', 0):.0f} GB/s"
    )


def write_outputs(out: Path, doc: dict[str, Any]) -> None:
    """report.json, report.csv, report.md and report.html in ``out``."""
    from edgekit.report.html import render

    atomic_write(out / "report.json", json.dumps(doc, indent=2) + "\n")
    atomic_write(out / "report.csv", to_csv(doc))
    atomic_write(out / "report.md", to_markdown(doc))
    atomic_write(out / "report.html", render(doc))
