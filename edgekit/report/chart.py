"""The accuracy-vs-latency chart as inline SVG: one point a combination, the Pareto front drawn through.

The vertical axis is the task's headline metric (a classifier's top-1, a detector's mAP@[.5:.95]). Colour is
the target, shape the precision; a filled point's latency was measured (here or on the device), a hollow
one's is an estimate, drawn with its band (a horizontal bar from low to high). For a task whose end-to-end
latency matters (a detector's decoding and NMS), a dotted line runs from each point's model-only latency to a
bar at its end-to-end latency. Latency is on a log axis. No script, no external file.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from edgekit.report.summary import Figures, doc_figures, score_of

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")
W, H = 820, 460
LEFT, RIGHT, TOP, BOTTOM = 70, 200, 20, 56
E2E_LINE = 'stroke-width="1.2" stroke-dasharray="2 3"'  # inline, so a classifier's page keeps its stylesheet
E2E_BELOW = 4  # px: the end-to-end line runs this far below its point


def _points(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        r for r in doc["results"]
        if r["status"] == "ok" and score_of(r["accuracy"]) is not None and r["latency"]["p50_ms"]
    ]  # fmt: skip


def _end_to_end(p: dict[str, Any]) -> float | None:
    return (p.get("bench") or {}).get("end_to_end_ms") or None


def _log_ticks(lo: float, hi: float) -> list[float]:
    ticks = []
    for exp in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        ticks += [m * 10.0**exp for m in (1, 2, 5) if lo <= m * 10.0**exp <= hi]
    return ticks


def _marker(shape: str, x: float, y: float, colour: str, hollow: bool) -> str:
    fill = "#ffffff" if hollow else colour
    style = f'fill="{fill}" stroke="{colour}" stroke-width="2"'
    if shape == "fp16":
        return f'<rect x="{x - 6:.1f}" y="{y - 6:.1f}" width="12" height="12" {style}/>'
    if shape == "int8":
        return f'<polygon points="{x:.1f},{y - 8:.1f} {x + 7:.1f},{y + 5:.1f} {x - 7:.1f},{y + 5:.1f}" {style}/>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="6.5" {style}/>'


class _Axes:
    def __init__(self, pts: list[dict[str, Any]], fp32: float | None, end_to_end: bool = False) -> None:
        lats = [p["latency"]["p50_ms"] for p in pts] + [e for p in pts if end_to_end and (e := _end_to_end(p))]
        accs = [score_of(p["accuracy"]) for p in pts] + ([fp32] if fp32 is not None else [])
        self.x0, self.x1 = min(lats) / 1.6, max(lats) * 1.6
        lo, hi = min(accs), max(accs)
        pad = max(0.25, (hi - lo) * 0.12, (1.0 - (hi - lo)) / 2)  # at least one point of the metric shown
        self.y0, self.y1 = max(0.0, lo - pad), min(100.0, hi + pad)

    def x(self, ms: float) -> float:
        span = math.log10(self.x1) - math.log10(self.x0)
        return LEFT + (math.log10(ms) - math.log10(self.x0)) / span * (W - LEFT - RIGHT)

    def y(self, acc: float) -> float:
        return TOP + (self.y1 - acc) / (self.y1 - self.y0) * (H - TOP - BOTTOM)


def _grid(ax: _Axes, shown: Figures) -> list[str]:
    out = []
    for t in _log_ticks(ax.x0, ax.x1):
        x = ax.x(t)
        out.append(f'<line x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{H - BOTTOM}" class="grid"/>')
        out.append(f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" class="tick">{t:g}</text>')
    step = next(s for s in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20) if (ax.y1 - ax.y0) / s <= 8)
    v = math.ceil(ax.y0 / step) * step
    while v <= ax.y1 + 1e-9:
        y = ax.y(v)
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{LEFT - 8}" y="{y + 4:.1f}" text-anchor="end" class="tick">{v:g}</text>')
        v += step
    out += [
        f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" class="frame"/>',
        f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 14}" text-anchor="middle" class="label">'
        "batch-1 latency, p50 (ms, log scale)</text>",
        f'<text transform="translate(18 {(TOP + H - BOTTOM) / 2}) rotate(-90)" text-anchor="middle" class="label">'
        f"{escape(shown.quantity)} (%)</text>",
    ]
    return out


def _front(ax: _Axes, pts: list[dict[str, Any]]) -> list[str]:
    front = sorted((p for p in pts if p["pareto"]), key=lambda p: p["latency"]["p50_ms"])
    if not front:
        return []
    coords, prev = [], None
    for p in front:
        x, y = ax.x(p["latency"]["p50_ms"]), ax.y(score_of(p["accuracy"]))
        if prev is not None:
            coords.append(f"{x:.1f},{prev:.1f}")
        coords.append(f"{x:.1f},{y:.1f}")
        prev = y
    coords.append(f"{W - RIGHT:.1f},{prev:.1f}")
    return [
        f'<polyline id="pareto-front" points="{" ".join(coords)}" class="front"><title>Pareto front</title></polyline>'
    ]


def _legend(colours: dict[str, str], end_to_end: bool = False) -> list[str]:
    x, y = W - RIGHT + 16, TOP + 8
    out = [f'<text x="{x}" y="{y}" class="legend-head">target</text>']
    for name, colour in colours.items():
        y += 18
        out.append(f'<circle cx="{x + 6}" cy="{y - 4}" r="5" fill="{colour}"/>')
        out.append(f'<text x="{x + 18}" y="{y}" class="legend">{escape(name)}</text>')
    y += 26
    out.append(f'<text x="{x}" y="{y}" class="legend-head">precision</text>')
    for shape in ("fp32", "fp16", "int8"):
        y += 18
        out.append(_marker(shape, x + 6, y - 4, "#555", False))
        out.append(f'<text x="{x + 18}" y="{y}" class="legend">{shape}</text>')
    y += 26
    out += [
        _marker("fp32", x + 6, y - 4, "#555", False),
        f'<text x="{x + 18}" y="{y}" class="legend">latency measured</text>',
        _marker("fp32", x + 6, y + 14, "#555", True),
        f'<text x="{x + 18}" y="{y + 18}" class="legend">latency estimated</text>',
        f'<line x1="{x}" y1="{y + 32}" x2="{x + 14}" y2="{y + 32}" class="front"/>',
        f'<text x="{x + 18}" y="{y + 36}" class="legend">Pareto front</text>',
        f'<line x1="{x}" y1="{y + 50}" x2="{x + 14}" y2="{y + 50}" class="fp32"/>',
        f'<text x="{x + 18}" y="{y + 54}" class="legend">FP32 reference</text>',
    ]
    if end_to_end:
        out += [
            f'<line x1="{x}" y1="{y + 68}" x2="{x + 14}" y2="{y + 68}" class="e2e-line" stroke="#555" {E2E_LINE}/>',
            f'<line x1="{x + 14}" y1="{y + 63}" x2="{x + 14}" y2="{y + 73}" class="e2e-end" stroke="#555" stroke-width="2"/>',
            f'<text x="{x + 18}" y="{y + 72}" class="legend">end to end</text>',
            f'<text x="{x + 18}" y="{y + 86}" class="legend">(+ decode, NMS)</text>',
        ]
    return out


# label positions tried around a point, nearest first: (dx, dy, text-anchor)
OFFSETS = tuple((dx, dy, "start" if dx > 0 else "end") for dy in (-8, 14, -20, 26, -32, 38, -44, 50) for dx in (9, -9))


def _overlaps(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(items: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Put each point's label where it hides the fewest other labels and points, inside the plot (greedy)."""
    taken = [(x - 8, y - 8, x + 8, y + 8) for x, y, _ in items]
    placed = []
    for x, y, text in items:
        width, mine = 6.2 * len(text), (x - 8, y - 8, x + 8, y + 8)
        best = None
        for dx, dy, anchor in OFFSETS:
            x0 = x + dx if anchor == "start" else x + dx - width
            box = (x0, y + dy - 9, x0 + width, y + dy + 2)
            inside = box[0] >= LEFT and box[2] <= W - RIGHT and box[1] >= TOP and box[3] <= H - BOTTOM
            score = (0 if inside else 100) + sum(_overlaps(box, t) for t in taken if t != mine)
            if best is None or score < best[0]:
                best = (score, (x + dx, y + dy, anchor), box)
            if score == 0:
                break
        taken.append(best[2])
        placed.append(best[1])
    return placed


def _tooltip(p: dict[str, Any], shown: Figures) -> str:
    acc, lat = p["accuracy"], p["latency"]
    e2e = _end_to_end(p) if shown.end_to_end else None
    return escape(
        f"{p['id']}: {shown.name} {score_of(acc):.2f}% ({acc['source']['how']}); p50 {lat['p50_ms']:.4g} ms "
        f"({lat['source']['how']}{'; ' + lat['source']['machine'] if lat['source'].get('machine') else ''})"
        + (f"; end to end {e2e:.4g} ms ({p['bench'].get('end_to_end_what') or 'end to end'})" if e2e else "")
    )


def _end_to_end_mark(ax: _Axes, p: dict[str, Any], y: float, colour: str) -> str:
    """A dotted line from the model-only latency to a bar at the end-to-end one, just below the point (so that
    the Pareto front, drawn at the point's height, does not hide it)."""
    e2e = _end_to_end(p)
    if not e2e:
        return ""
    x0, x1, y = ax.x(p["latency"]["p50_ms"]) + 7, ax.x(e2e), y + E2E_BELOW
    return (
        f'<line x1="{x0:.1f}" y1="{y:.1f}" x2="{x1:.1f}" y2="{y:.1f}" class="e2e-line" stroke="{colour}" {E2E_LINE}/>'
        f'<line x1="{x1:.1f}" y1="{y - 5:.1f}" x2="{x1:.1f}" y2="{y + 5:.1f}" class="e2e-end" stroke="{colour}" stroke-width="2"/>'
    )


def render_chart(doc: dict[str, Any]) -> str:
    """The chart's <svg> element, or a short note when no combination has both figures."""
    pts = _points(doc)
    if not pts:
        return '<p id="chart-empty">No combination has both an accuracy and a latency yet.</p>'
    shown = doc_figures(doc)
    fp32 = score_of(doc.get("fp32_reference"))
    ax = _Axes(pts, fp32, shown.end_to_end)
    colours = {t: PALETTE[i % len(PALETTE)] for i, t in enumerate(dict.fromkeys(p["target"] for p in pts))}
    body = _grid(ax, shown)
    if fp32 is not None:
        y = ax.y(fp32)
        body.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" class="fp32"/>')
    body += _front(ax, pts)
    xy = [(ax.x(p["latency"]["p50_ms"]), ax.y(score_of(p["accuracy"])), p["id"]) for p in pts]
    for p, (x, y, _), (lx, ly, anchor) in zip(pts, xy, place_labels(xy), strict=True):
        hollow = p["latency"]["source"]["kind"] == "estimated"
        far = abs(ly - y) > 16  # a label moved away from its point gets a leader line
        leader = f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{lx:.1f}" y2="{ly - 4:.1f}" class="leader"/>' if far else ""
        low, high = p["latency"].get("low_ms"), p["latency"].get("high_ms")
        if hollow and low and high:
            x1, x2 = max(LEFT, ax.x(low)), min(W - RIGHT, ax.x(high))
            leader += (f'<line x1="{x1:.1f}" y1="{y:.1f}" x2="{x2:.1f}" y2="{y:.1f}" class="band" '
                       f'stroke="{colours[p["target"]]}" stroke-width="1.5" stroke-opacity="0.6"/>')  # fmt: skip
        if shown.end_to_end:
            leader += _end_to_end_mark(ax, p, y, colours[p["target"]])
        body.append(
            f'<g class="point" data-id="{escape(p["id"])}"><title>{_tooltip(p, shown)}</title>{leader}'
            f"{_marker(p['precision'], x, y, colours[p['target']], hollow)}"
            f'<text x="{lx:.1f}" y="{ly:.1f}" text-anchor="{anchor}" class="point-label">{escape(p["id"])}</text></g>'
        )
    body += _legend(colours, shown.end_to_end)
    return (
        f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
        f'role="img" aria-label="{escape(shown.quantity)} against batch-1 latency">' + "".join(body) + "</svg>"
    )
