"""report.html: one self-contained page (inline CSS and SVG, no script, nothing fetched) that answers
"which target and precision meet my budget?", and says how every figure on it was obtained."""

from __future__ import annotations

import re
from html import escape
from typing import Any

from edgekit.report.chart import render_chart
from edgekit.report.summary import doc_figures, score_of
from edgekit.report.writers import (
    TAGS,
    cells,
    columns,
    end_to_end_text,
    estimate_cell,
    estimator_lines,
    fmt,
    latency_note,
    ms,
    points,
    reference_text,
    speed_sentence,
)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.muted{color:#666}
.rec{background:#eef6ee;border:1px solid #9c9;padding:8px 14px;border-radius:6px}.rec li{margin:2px 0}
.partial{background:#fff4e0;border:1px solid #e0b060;padding:6px 12px;border-radius:6px}
.tag{font-size:10px;font-weight:600;border-radius:3px;padding:0 3px;margin-left:3px;color:#fff;vertical-align:1px}
.tag-M{background:#2a7d2a}.tag-D{background:#1f5fa8}.tag-S{background:#b8860b}.tag-E{background:#8a3ea8}.tag--{background:#999}
.failed td{color:#a00}.pareto{font-weight:600}
svg .grid{stroke:#eee}svg .frame{fill:none;stroke:#999}svg .tick{font-size:11px;fill:#555}
svg .label{font-size:12px;fill:#333}svg .legend{font-size:12px;fill:#333}svg .legend-head{font-size:12px;font-weight:600}
svg .front{fill:none;stroke:#222;stroke-width:1.5;stroke-dasharray:6 3}svg .fp32{stroke:#888;stroke-dasharray:2 3}
svg .point-label{font-size:10px;fill:#333}svg .leader{stroke:#999;stroke-width:0.8}
"""


def _tag(kind: str, how: str) -> str:
    t = TAGS.get(kind, "-")
    return f'<span class="tag tag-{t}" title="{escape(kind)}: {escape(how)}">{t}</span>'


def _header(doc: dict[str, Any]) -> str:
    m, fp32, val = doc["model"], doc["fp32_reference"], doc["data"]["val"]
    calib = doc["data"]["calib"]
    partial = (
        ""
        if doc["complete"]
        else f'<p class="partial">Partial report: {doc["progress"]["finished"]} of {doc["progress"]["total"]} '
        "combinations finished. Re-run with <code>--resume</code> to continue.</p>"
    )
    return (
        f"<h1>edgekit report: {escape(m['name'])}</h1>"
        f'<p class="muted">Model <code>{escape(m["file"])}</code> ({escape(m["format"])}, sha256 '
        f"{escape(m['sha256'][:16])}…), input {escape(str(m['input_shape']))}, {m['macs'] / 1e6:.1f} M MACs, "
        f"{m['parameters'] / 1e6:.3f} M parameters. Validation: {val['images']} images "
        f"(<code>{escape(val['path'])}</code>); calibration: "
        + (f"{calib['images']} images (<code>{escape(calib['path'])}</code>)" if calib else "none")
        + f". FP32 reference {escape(reference_text(fp32, every=True))} ({escape(fp32['how'])}).</p>"
        + partial
    )


def _recommendations(doc: dict[str, Any]) -> str:
    b = doc["budget"]
    budget = f"{doc_figures(doc).name} drop at most {points(b['max_accuracy_drop'])}" + (
        " (the default; set it with --max-accuracy-drop)" if b["accuracy_budget_defaulted"] else ""
    )
    if b["max_latency_ms"]:
        budget += f", batch-1 p50 latency at most {b['max_latency_ms']:g} ms"
    items = "".join(f"<li>{escape(r['text'])}</li>" for r in doc["recommendations"])
    return f'<div class="rec" id="recommendations"><b>Recommended</b> for each target under: {escape(budget)}<ul>{items}</ul></div>'


def _results(doc: dict[str, Any]) -> str:
    shown = doc_figures(doc)
    cols = columns(shown)
    body = []
    for r in doc["results"]:
        if r["status"] != "ok":
            body.append(
                f'<tr class="failed"><td>{escape(r["id"])}</td><td colspan="{len(cols) - 1}" style="text-align:left">'
                f"{escape(r['status'])}: {escape(str(r['error']))}</td></tr>"
            )
            continue
        acc, lat, bench = r["accuracy"], r["latency"], r["bench"] or {}
        best = bench.get("best_throughput") or {}
        btag = _tag(bench["source"]["kind"], bench["source"]["how"]) if bench else ""
        cell = {key: escape(text) for key, text in cells(r, shown).items()}
        cell.update({
            "score": f"{fmt(score_of(acc))}{_tag(acc['source']['kind'], acc['source']['how'])}",
            "drop": fmt(acc.get("drop_points")),
            "p50": f"{ms(lat['p50_ms'])}{_tag(lat['source']['kind'], lat['source']['how'])}",
            "tput": f"{fmt(best.get('images_per_s'), 0)}{btag if best else ''}" + (f" @{best['batch']}" if best else ""),
            "est": escape(estimate_cell(r["estimate"])) + (_tag("estimated", _est_how(r["estimate"])) if r["estimate"] else ""),
        })  # fmt: skip
        if bench.get("end_to_end_ms") is not None and bench.get("end_to_end_what") and shown.end_to_end:
            cell["e2e"] = f'<span title="{escape(end_to_end_text(bench))}">{cell["e2e"]}</span>'
        cls = ' class="pareto"' if r["pareto"] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{cell[key]}</td>" for key, _ in cols) + "</tr>")
    head = "".join(f"<th>{escape(h)}</th>" for _, h in cols)
    return f'<table id="results"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _est_how(est: dict[str, Any]) -> str:
    band = f"; band x/÷ {est['band']:g} ({est['band_source']})" if est.get("band") else ""
    return est["figures"] + band


def _per_class(doc: dict[str, Any]) -> str:
    rows = [r for r in doc["results"] if r["status"] == "ok" and r["accuracy"].get("per_class")]
    fp32 = doc["fp32_reference"]["per_class"]
    head = "<th>class</th><th>FP32</th>" + "".join(
        f"<th>{escape(r['id'])}{_tag(r['accuracy']['source']['kind'], r['accuracy']['source']['how'])}</th>"
        for r in rows
    )
    body = []
    for label, ref in fp32.items():
        cells = [f"<td>{escape(label)}</td><td>{ref:.1f}</td>"]
        for r in rows:
            v = r["accuracy"]["per_class"].get(label)
            shade = "" if v is None else f' style="background:rgba(214,39,40,{min(max(ref - v, 0) / 20, 0.6):.2f})"'
            cells.append(f"<td{shade}>{fmt(v, 1)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table id="per-class"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _budget_fig(f: dict[str, Any], name: str = "top-1") -> str:
    """A budget search's figures (its records call the task's metric ``top1``, whatever the task)."""
    text = f"{fmt(f['agreement_with_fp32'])}% agreement"
    return text if f.get("top1") is None else f"{text}, {name} {fmt(f['top1'])}% (drop {fmt(f['drop_points'])})"


def _budgets(doc: dict[str, Any]) -> str:
    """Per budgeted combination: the outcome, the curve of layers reverted, the sensitivity ranking."""
    parts, name = [], doc_figures(doc).name
    for r in doc["results"]:
        b = r.get("budget") if r["status"] == "ok" else None
        if not b:
            continue
        curve = "".join(
            f"<tr><td>{p['layers_reverted']}</td><td>{escape(p['last'] or '-')}</td>"
            f"<td>{fmt(p['agreement_with_fp32'])}</td><td>{fmt(p.get('top1'))}</td><td>{fmt(p.get('latency_ms'), 3)}</td></tr>"
            for p in b["curve"]
        )
        ranking = "".join(
            f"<tr><td>{i + 1}</td><td>{escape(x['layer'])}</td><td>{x.get('output_nmse', '-')}</td>"
            f"<td>{fmt(x['agreement_with_fp32'])}</td><td>{fmt(x.get('top1'))}</td></tr>"
            for i, x in enumerate(b["sensitivity_ranking"])
        )
        speed = speed_sentence(b).replace("**", "")
        parts.append(
            f"<h3>{escape(r['id'])}: {escape(b['budget']['text'])}, {'met' if b['met'] else 'NOT met'}</h3>"
            f"<p>Naive INT8 on the {b['search_images']} search images: {_budget_fig(b['naive_int8_on_search'], name)}. "
            f"With {len(b['layers_kept_in_higher_precision'])} of {b['quantized_layers']} layers in "
            f"{escape(b['higher_precision'])}: {_budget_fig(b['on_search'], name)}; on the {b['check_images']} check "
            f"images the search never used: {_budget_fig(b['on_check'], name)}. {b['trial_builds']} trial builds, "
            f"{b['search_seconds']} s, {escape(b['measured_with'])}. {escape(speed)}</p>"
            '<table class="budget-curve"><thead><tr><th>layers reverted</th><th>last reverted</th>'
            f"<th>agreement %</th><th>{escape(name)} %</th><th>batch-1 ms</th></tr></thead>"
            f"<tbody>{curve}</tbody></table>"
            '<table class="budget-ranking"><thead><tr><th>rank</th><th>layer (reverted alone)</th>'
            f"<th>output NMSE vs FP32</th><th>agreement %</th><th>{escape(name)} %</th></tr></thead>"
            f"<tbody>{ranking}</tbody></table>"
        )
    return "".join(parts)


def _provenance(doc: dict[str, Any]) -> str:
    kinds = "".join(f"<li>{_tag(k, v)} <b>{escape(k)}</b>: {escape(v)}</li>" for k, v in doc["provenance"].items())
    items = []
    for r in doc["results"]:
        if r["status"] != "ok":
            continue
        a, lat = r["accuracy"]["source"], r["latency"]["source"]
        machine = f" on {lat['machine']}" if lat.get("machine") else ""
        bench = r["bench"] or {}
        e2e = (
            f"; end to end: {end_to_end_text(bench)}"
            if doc_figures(doc).end_to_end and bench.get("end_to_end_what")
            else ""
        )
        items.append(
            f"<li><b>{escape(r['id'])}</b>: accuracy {_tag(a['kind'], a['how'])} {escape(a['how'])}; latency "
            f"{_tag(lat['kind'], lat['how'])} {escape(lat['how'] + machine + e2e)}</li>"
        )
    sw = doc["software"]
    versions = ", ".join(
        f"{k} {v}" for k, v in {**sw["runtime"], "edgekit": sw["edgekit"], "python": sw["python"]}.items()
    )
    return (
        f"<p>Measured here on <b>{escape(doc['machine']['summary'])}</b> ({escape(doc['machine']['os'])}; "
        f"{escape(versions)}).</p><ul>{kinds}</ul><ul id='figure-sources'>{''.join(items)}</ul>"
    )


def _estimator(doc: dict[str, Any]) -> str:
    est = doc["estimator"]
    lines = estimator_lines(est)[2:]  # the same text as report.md, without its heading
    rows = est["validation"]["rows"]
    text = escape(" ".join(line for line in lines if line and not line.startswith("|")))
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    band = lambda r: estimate_cell({"ms": r["estimated_ms"], "low_ms": r.get("low_ms"), "high_ms": r.get("high_ms")})  # noqa: E731
    tbl = "".join(
        f"<tr><td>{escape(r['id'])}</td><td>{ms(r['measured_ms'])}</td><td>{escape(band(r))}</td>"
        f"<td>{fmt(r['error_pct'], 1)}</td><td>{ms(r.get('roofline_ms'))}</td></tr>"
        for r in rows
    )
    head = (
        "<tr><th>combination</th><th>measured ms</th><th>estimated ms, band (host ceilings)</th><th>error %</th>"
        "<th>roofline ms</th></tr>"
    )
    classes = "".join(
        f"<tr><td>{escape(c['class'])}</td><td>{escape(', '.join(c['targets']))}</td>"
        f"<td>{fmt(c['median_abs_error_pct'], 1)}</td><td>x/÷ {c['band']:g}</td></tr>"
        for c in est.get("classes") or []
    )
    chead = "<tr><th>device class</th><th>targets</th><th>median error % (published)</th><th>band</th></tr>"
    return (
        f"<p>{text}</p>"
        + (f'<table id="estimator-classes">{chead}{classes}</table>' if classes else "")
        + (f'<table id="estimator">{head}{tbl}</table>' if rows else "")
    )


def render(doc: dict[str, Any]) -> str:
    """The whole page as one string."""
    title = f"edgekit report: {doc['model']['name']}"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{escape(title)}</title><style>{CSS}</style></head><body>'
        + _header(doc)
        + _recommendations(doc)
        + "<h2>Accuracy against latency</h2>"
        + render_chart(doc)
        + "<h2>Results</h2>"
        + _results(doc)
        + '<p class="muted">Tags: M measured here, D measured on the device (merged), S simulated, E estimated; '
        f"hover a tag for how. {escape(latency_note(doc, html=True))}; est. ms is the estimate for the target file's "
        "device with its band (low-high); MB is the bench process's peak RSS. Estimated latencies are "
        + (
            "on the Pareto front and in the recommendations (--include-estimates)."
            if doc.get("include_estimates")
            else "kept off the Pareto front and out of the recommendations unless --include-estimates."
        )
        + "</p>"
        + f"<h2>{escape(doc_figures(doc).per_class)}</h2>"
        + _per_class(doc)
        + ("<h2>Accuracy budget: sensitivity and fallback</h2>" + _budgets(doc) if _budgets(doc) else "")
        + "<h2>How each figure was obtained</h2>"
        + _provenance(doc)
        + "<h2>Latency estimates</h2>"
        + _estimator(doc)
        + f'<p class="muted">edgekit {escape(doc["edgekit_version"])}, report schema {doc["schema_version"]}, '
        f"created {escape(doc['created'])}.</p></body></html>\n"
    )
