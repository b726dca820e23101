"""The live dashboard at ``/``: one self-contained page (no external assets, works offline).

One card a stream (from /v1/streams, refreshed every 2 s: streams added or removed at run time appear and
go): its annotated frames (/v1/stream.mjpg?stream=ID), its latest result, FPS and latencies (from one
/v1/events connection, dispatched by the result's ``stream``) and its status (connected, reconnecting,
frame age, dropped frames, reconnects). A token given as ``?access_token=`` in the page's URL is passed on
to every URL. The result panel shows a classifier's fields (label, score, top-k) where the result has
them, and for a detector's result (one with ``detections``) the number of boxes, the count per label and a
list of the boxes' labels and scores (with a cascade's class), best first; what a task draws on the frame
itself comes from the task (``edgekit.tasks``), through the stream. Text from results is set as text
(``textContent``), never parsed as HTML.
"""

import json
from collections.abc import Iterable

STREAMS_MARK = "/*STREAMS*/[]"


def page(stream_ids: Iterable[str]) -> str:
    """The page with the current stream ids in it (ids are letters, digits, '.', '_' and '-': safe in a
    script), so each stream's card and image load with the page rather than after a fetch."""
    return PAGE.replace(STREAMS_MARK, json.dumps(list(stream_ids)))


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>edgekit serve</title>
<style>
  body { margin: 0; font-family: "DejaVu Sans", system-ui, sans-serif; background: #f4f5f7; color: #1d2330; }
  header { background: #1d2330; color: #fff; padding: 10px 18px; font-size: 18px; }
  header span { color: #9aa4b8; font-size: 14px; margin-left: 12px; }
  main { display: flex; flex-wrap: wrap; gap: 18px; padding: 18px; }
  .card { display: flex; flex-wrap: wrap; gap: 12px; background: #fff; border-radius: 6px; padding: 10px; }
  .view { background: #000; min-width: 320px; min-height: 240px; }
  .view img { display: block; max-width: 640px; width: 100%; }
  .panel { padding: 6px 12px; min-width: 260px; }
  .name { font-size: 14px; color: #4a5468; }
  .label { font-size: 40px; font-weight: bold; margin: 4px 0 2px; }
  .score { font-size: 20px; color: #4a5468; }
  table { border-collapse: collapse; margin-top: 14px; font-size: 18px; }
  td { padding: 3px 14px 3px 0; }
  td.v { font-weight: bold; text-align: right; font-variant-numeric: tabular-nums; }
  .topk { margin-top: 12px; font-size: 16px; color: #4a5468; }
  .detections { margin-top: 12px; font-size: 18px; }
  .detections td { padding: 2px 14px 2px 0; }
  .state { font-size: 14px; margin-top: 12px; color: #4a5468; }
  .state.bad { color: #b3261e; }
</style>
</head>
<body>
<header>edgekit serve <span id="model">loading...</span></header>
<main id="streams"></main>
<template id="card">
  <div class="card">
    <div class="view"><img alt="live stream"></div>
    <div class="panel">
      <div class="name"></div>
      <div>Latest result</div>
      <div class="label">waiting</div>
      <div class="score">&nbsp;</div>
      <table>
        <tr><td>FPS</td><td class="v fps">-</td></tr>
        <tr><td>Inference</td><td class="v infer">-</td></tr>
        <tr><td>End to end</td><td class="v e2e">-</td></tr>
        <tr><td>Frame</td><td class="v seq">-</td></tr>
      </table>
      <div class="topk"></div>
      <table class="detections"></table>
      <div class="state">connecting</div>
    </div>
  </div>
</template>
<script>
  const token = new URLSearchParams(location.search).get("access_token");
  const withToken = (url, params = {}) => {
    const q = new URLSearchParams(params);
    if (token) q.set("access_token", token);
    const text = q.toString();
    return text ? url + "?" + text : url;
  };
  const $ = (id) => document.getElementById(id);
  const cards = new Map();  // stream id -> its card's elements
  const INITIAL_STREAMS = /*STREAMS*/[];
  fetch(withToken("v1/info")).then((r) => r.json()).then((info) => {
    $("model").textContent = info.model.name + " | " + info.backend + " " + info.precision.requested +
      " | device " + info.device_id;
  }).catch(() => { $("model").textContent = "info unavailable"; });
  function card(id) {
    if (cards.has(id)) return cards.get(id);
    const node = $("card").content.firstElementChild.cloneNode(true);
    const q = (cls) => node.querySelector("." + cls);
    const c = { node, q };
    node.querySelector("img").src = withToken("v1/stream.mjpg", { stream: id });
    q("name").textContent = "stream " + id;
    cards.set(id, c);
    $("streams").appendChild(node);
    return c;
  }
  const MAX_ROWS = 12;  // boxes listed; the count line covers the rest
  function showDetections(c, items) {
    const counts = {};
    for (const d of items) counts[d.label] = (counts[d.label] || 0) + 1;
    c.q("label").textContent = items.length + (items.length === 1 ? " detection" : " detections");
    c.q("score").textContent = Object.keys(counts).sort().map((k) => k + " " + counts[k]).join(", ");
    const rows = items.slice(0, MAX_ROWS).map((d) => {
      const row = document.createElement("tr");
      const inner = d.classification ? " / " + d.classification.label : "";
      for (const [text, cls] of [[d.label + inner, ""], [(d.score * 100).toFixed(0) + "%", "v"]]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        if (cls) cell.className = cls;
        row.appendChild(cell);
      }
      return row;
    });
    if (items.length > MAX_ROWS) {
      const more = document.createElement("tr");
      more.appendChild(document.createElement("td")).textContent = "and " + (items.length - MAX_ROWS) + " more";
      rows.push(more);
    }
    c.q("detections").replaceChildren(...rows);
  }
  function show(r) {
    const c = card(r.stream || "cam0");
    if (Array.isArray(r.detections)) {
      showDetections(c, r.detections);
    } else {
      c.q("label").textContent = r.label ?? "";
      c.q("score").textContent = r.score === undefined ? "" : "score " + (r.score * 100).toFixed(1) + "%";
      c.q("detections").replaceChildren();  // a classifier swapped in for a detector
    }
    c.q("fps").textContent = r.fps.toFixed(1);
    c.q("infer").textContent = r.inference_ms.toFixed(1) + " ms";
    c.q("e2e").textContent = r.e2e_ms.toFixed(1) + " ms";
    c.q("seq").textContent = r.seq;
    c.q("topk").textContent = (r.top_k || []).map((t) => t.label + " " + (t.score * 100).toFixed(0) + "%").join("  ");
  }
  function status(s) {
    const c = card(s.id);
    const age = s.last_frame_age_s === null ? "no frame yet" : "frame age " + s.last_frame_age_s.toFixed(1) + " s";
    c.q("state").textContent = s.status + " | " + age + " | dropped " + s.frames_dropped + " | reconnects " +
      s.reconnects + (s.error ? " | " + s.error : "");
    c.q("state").className = "state" + (s.status === "ok" ? "" : " bad");
  }
  function refresh() {
    fetch(withToken("v1/streams")).then((r) => r.json()).then((doc) => {
      const ids = new Set(doc.streams.map((s) => s.id));
      for (const [id, c] of cards) if (!ids.has(id)) { c.node.remove(); cards.delete(id); }
      doc.streams.forEach(status);
    }).catch(() => {});
  }
  INITIAL_STREAMS.forEach(card);  // the streams when the page was served: their images load with the page
  refresh();
  setInterval(refresh, 2000);
  const events = new EventSource(withToken("v1/events"));
  events.onmessage = (e) => { show(JSON.parse(e.data)); };
  events.onerror = () => { for (const c of cards.values()) c.q("state").textContent = "reconnecting to the daemon"; };
</script>
</body>
</html>
"""
