"""The live dashboard at ``/``: one self-contained page (no external assets, works offline).

It shows /v1/stream.mjpg, and the latest result, FPS and latencies from /v1/events. A token given as
``?access_token=`` in the page's URL is passed on to the stream and event URLs. The result panel shows a
classifier's fields (label, score, top-k) where the result has them; what a task draws on the frame itself
comes from the task (``edgekit.tasks``), through the stream.
"""

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
  #view { background: #000; min-width: 320px; min-height: 240px; }
  #stream { display: block; max-width: 640px; width: 100%; }
  #panel { background: #fff; padding: 16px 20px; min-width: 280px; border-radius: 6px; }
  #label { font-size: 40px; font-weight: bold; margin: 4px 0 2px; }
  #score { font-size: 20px; color: #4a5468; }
  table { border-collapse: collapse; margin-top: 14px; font-size: 18px; }
  td { padding: 3px 14px 3px 0; }
  td.v { font-weight: bold; text-align: right; font-variant-numeric: tabular-nums; }
  #topk { margin-top: 12px; font-size: 16px; color: #4a5468; }
  #state { font-size: 14px; margin-top: 12px; color: #4a5468; }
</style>
</head>
<body>
<header>edgekit serve <span id="model">loading...</span></header>
<main>
  <div id="view"><img id="stream" alt="live stream"></div>
  <div id="panel">
    <div>Latest result</div>
    <div id="label">waiting</div>
    <div id="score">&nbsp;</div>
    <table>
      <tr><td>FPS</td><td class="v" id="fps">-</td></tr>
      <tr><td>Inference</td><td class="v" id="infer">-</td></tr>
      <tr><td>End to end</td><td class="v" id="e2e">-</td></tr>
      <tr><td>Frame</td><td class="v" id="seq">-</td></tr>
    </table>
    <div id="topk"></div>
    <div id="state">connecting</div>
  </div>
</main>
<script>
  const token = new URLSearchParams(location.search).get("access_token");
  const withToken = (url) => token ? url + "?access_token=" + encodeURIComponent(token) : url;
  const $ = (id) => document.getElementById(id);
  $("stream").src = withToken("v1/stream.mjpg");
  fetch(withToken("v1/info")).then((r) => r.json()).then((info) => {
    $("model").textContent = info.model.name + " | " + info.backend + " " + info.precision.requested +
      " | device " + info.device_id;
  }).catch(() => { $("model").textContent = "info unavailable"; });
  function show(r) {
    $("label").textContent = r.label ?? "";
    $("score").textContent = r.score === undefined ? "" : "score " + (r.score * 100).toFixed(1) + "%";
    $("fps").textContent = r.fps.toFixed(1);
    $("infer").textContent = r.inference_ms.toFixed(1) + " ms";
    $("e2e").textContent = r.e2e_ms.toFixed(1) + " ms";
    $("seq").textContent = r.seq;
    $("topk").textContent = (r.top_k || []).map((t) => t.label + " " + (t.score * 100).toFixed(0) + "%").join("  ");
  }
  const events = new EventSource(withToken("v1/events"));
  events.onmessage = (e) => { show(JSON.parse(e.data)); $("state").textContent = "live"; };
  events.onerror = () => { $("state").textContent = "reconnecting"; };
</script>
</body>
</html>
"""
