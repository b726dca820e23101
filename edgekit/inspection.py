"""``inspect``: what a bundle holds, verified and summarised (``edgekit inspect`` prints it).

    summary = edgekit.inspect("m.edgekit")            # verifies the schema and the sha256 of every file
    print(summary.target, summary.precision, summary.accuracy)
    print("\n".join(summary.lines()))

``summary_lines(manifest)`` is the text ``edgekit inspect`` and ``edgekit compile`` print.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgekit.bundle.types import Accuracy, Latency, Manifest, RuntimeSettings
    from edgekit.runtime.selftest import SelfTestResult


@dataclass(frozen=True)
class BundleSummary:
    """A verified bundle: where it is, its hash, the main facts of its manifest, and the manifest itself
    (``info``, typed, and ``manifest``, its JSON object).

    ``selftest`` is the self-test result when ``inspect(..., check=True)`` loaded the bundle, else None.
    """

    path: Path
    hash: str
    model: str
    task: str
    target: str
    device: str
    backend: str
    backend_version: str
    precision: str
    accuracy: dict[str, Any] | None
    latency: dict[str, Any] | None
    files: tuple[str, ...]
    manifest: dict[str, Any]
    info: Manifest
    selftest: SelfTestResult | None = None

    def lines(self, *, brief: bool = False) -> list[str]:
        """The text ``edgekit inspect`` prints (``brief``: the few lines ``edgekit compile`` prints)."""
        header = f"bundle:       {self.path} (verified: schema and sha256 of every file; hash {self.hash[:16]}…)"
        lines = [header, *summary_lines(self.info, brief=brief)]
        if self.selftest is not None:
            lines.append(self.selftest.describe())
        return lines


def inspect(path: str | Path, *, check: bool = False) -> BundleSummary:
    """Verify the bundle at ``path`` (a folder or packed file) and summarise it; ``check`` also loads it and
    runs its self-test (``BundleSummary.selftest``). Raises ``BundleError`` for a damaged bundle."""
    from edgekit.bundle import open_bundle

    opened = open_bundle(path)
    try:
        m = opened.typed_manifest
        summary = BundleSummary(
            path=opened.path, hash=opened.hash, model=m.model.name, task=m.model.task, target=m.target.name,
            device=m.target.device, backend=m.backend.name, backend_version=m.backend.version,
            precision=m.precision.requested, accuracy=None if m.accuracy is None else m.accuracy.to_dict(),
            latency=None if m.latency is None else m.latency.to_dict(), files=tuple(m.files),
            manifest=opened.manifest, info=m,
        )  # fmt: skip
    finally:
        opened.close()
    if not check:
        return summary
    import dataclasses

    from edgekit.runtime import load_bundle

    with load_bundle(path) as bundle:
        return dataclasses.replace(summary, selftest=bundle.selftest_result)


def _fmt_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _accuracy_lines(acc: Accuracy | None) -> list[str]:
    if acc is None:
        return ["accuracy:     not measured (compile with --val FOLDER)"]
    if acc.value is None:
        return [f"accuracy:     agreement with FP32 {acc.agreement_with_fp32:.2f}% on {acc.dataset.images} "
                f"unlabelled images, measured with {acc.measured_with}"]  # fmt: skip
    if not hasattr(acc.value, "top1"):  # a detector
        v, f = acc.value, acc.fp32
        return [
            f"accuracy:     mAP@[.5:.95] {v.map50_95:.2f}% (FP32 {f.map50_95:.2f}%, drop {acc.drop_points:+.2f} points), "
            f"mAP@.5 {v.map50:.2f}%; at score {v.score_threshold:g}: precision {v.precision:.2f}%, recall "
            f"{v.recall:.2f}%; agreement with FP32 (F1) {acc.agreement_with_fp32:.2f}%",
            f"              on {acc.dataset.images} images, measured with {acc.measured_with}",
        ]
    return [
        f"accuracy:     top-1 {acc.value.top1:.2f}% (FP32 {acc.fp32.top1:.2f}%, drop "
        f"{acc.drop_points:+.2f} points), top-5 {acc.value.top5:.2f}%, "
        f"agreement with FP32 {acc.agreement_with_fp32:.2f}%",
        f"              on {acc.dataset.images} images, measured with {acc.measured_with}",
    ]


def _latency_line(lat: Latency | None) -> str:
    if lat is None or not lat.measured:
        note = "no measurement" if lat is None or lat.note is None else lat.note
        return f"latency:      not measured here: {note}"
    return f"latency:      batch 1 p50 {lat.p50_ms:.3f} ms, p90 {lat.p90_ms:.3f} ms ({lat.what}, {lat.machine})"


def _build_plan_lines(plan: dict[str, Any] | None) -> list[str]:
    """The TensorRT build plan (how the device builds its engine) and the equivalent trtexec line."""
    if not plan:
        return []
    from edgekit.backends.tensorrt.build_plan import BuildPlan

    settings, quant = BuildPlan.from_dict(plan).describe()
    lines = [f"build plan:   {settings}", f"              {quant}", f"trtexec:      {plan['trtexec']}"]
    if plan.get("trtexec_implicit"):
        lines.append(f"              implicit INT8 (e.g. DLA): {plan['trtexec_implicit']}")
    return lines


def _budget_lines(b: dict[str, Any] | None) -> list[str]:
    if not b:
        return []

    def fig(f: dict[str, Any]) -> str:
        text = f"agreement {f['agreement_with_fp32']:.2f}%"
        return text if f["top1"] is None else f"{text}, top-1 {f['top1']:.2f}% (drop {f['drop_points']:+.2f})"

    margin = b.get("search_margin_points")
    spare = "" if margin is None else f" (searched with {margin:.2f} points to spare, {b.get('confidence', 0.95):.0%})"
    pooled, probability = b.get("naive_int8_on_all"), b.get("naive_int8_probability_meets_budget")
    lines = [f"budget:       {b['budget']['text']}: {'met' if b['met'] else 'NOT met on the check images'}{spare}"]
    if pooled and probability is not None:
        lines.append(f"              naive INT8 on all {pooled['images']} validation images: {fig(pooled)}; "
                     f"probability it meets the budget {probability:.3f}")  # fmt: skip
    lines.append(f"              naive INT8 on {b['search_images']} search images: {fig(b['naive_int8_on_search'])}")
    chosen = b.get("chosen")
    if chosen:
        lines.append(f"              ships: {chosen['label']}, chosen by {chosen['by']}")
    if b.get("stopped_at_naive"):
        lines.append("              the search stopped at naive INT8: no layer kept in higher precision")
    else:
        lines += [
            f"              with {len(b['layers_kept_in_higher_precision'])} of {b['quantized_layers']} layers in "
            f"{b['higher_precision']}: {fig(b['on_search'])}",
            f"              on {b['check_images']} check images the search never used: {fig(b['on_check'])}",
        ]
    lines.append(
        f"              search: {b['trial_builds']} trial builds in {b['search_seconds']} s, {b['measured_with']}"
    )
    speed = b.get("batch1_latency")
    if speed:
        lines.append(
            f"              batch 1: {speed['budgeted_ms']:.3f} ms, FP32 {speed['fp32_ms']:.3f} ms "
            f"({speed['budgeted_speedup_vs_fp32']:.2f}x; naive INT8 {speed['naive_int8_speedup_vs_fp32']:.2f}x)"
        )
    return lines


def settings_lines(rs: RuntimeSettings | Mapping[str, Any] | None) -> list[str]:
    """The runtime settings the bundle records (``runtime_settings``) and how they were chosen: where, by what,
    every candidate's figure, the rule; or that the runtime uses the backend's defaults."""
    if rs is None:
        return ["settings:     the backend's defaults (none tuned on the device: compile on the target, or run "
                "edgekit bench --tune there)"]  # fmt: skip
    if not isinstance(rs, Mapping):
        rs = rs.to_dict()
    how = rs["how"]
    knobs = ", ".join(f"{k}={v}" for k, v in rs.items() if k not in ("how", "batch")) or "the backend's defaults"
    batch = f"; daemon batch {rs['batch']}" if rs.get("batch") is not None else ""
    lines = [
        f"settings:     {knobs}{batch} (tuned by {how['by']} on {how['created']}, {how['backend']} {how['device']})",
        f"              on {how['measured_on']}; {how['rounds']} interleaved rounds, noise margin "
        f"{how['noise_margin']:.0%}, {how['seconds']:g} s",
        f"              chosen: {how['chosen']}",
        f"              {how['metric']}:",
    ]
    for c in how["candidates"]:
        label = ", ".join(f"{k}={v}" for k, v in c["settings"].items()) or "the default"
        if c["p50_ms"] is None and c.get("same_as_default"):
            lines.append(f"                {label:<36} not timed: the backend runs it exactly as the default")
        elif c["p50_ms"] is None:
            lines.append(f"                {label:<36} did not load: {c.get('error', '?')}")
        else:
            rounds = " ".join(f"{r:.4g}" for r in c["rounds_ms"])
            won = (
                "" if "rounds_won" not in c or not c["settings"] else f", faster than the default in {c['rounds_won']}"
            )
            lines.append(
                f"                {label:<36} {c['p50_ms']:>9.4g} ms  (rounds: {rounds}{won}; {c['runs']} runs)"
            )
    if how.get("batch_chosen"):
        lines.append(f"              batch: {how['batch_chosen']}")
    for b in how.get("batch_candidates") or ():
        won = f", faster than batch 1 in {b['rounds_won']} rounds" if "rounds_won" in b and b["batch"] > 1 else ""
        lines.append(f"                batch {b['batch']:<3} {b['ms_per_frame']:>9.4g} ms a frame, "
                     f"{b['frames_per_s']:.1f} frames/s ({b['runs']} runs{won})")  # fmt: skip
    return lines


def summary_lines(m: Manifest | Mapping[str, Any], *, brief: bool = False) -> list[str]:
    """The summary of a manifest (typed, or the JSON object of a complete manifest, which is validated)."""
    from edgekit.bundle.types import Manifest

    if not isinstance(m, Manifest):
        m = Manifest.from_dict(dict(m))
    t, pre, q = m.target, m.preprocess, m.quantization
    lines = [
        f"model:        {m.model.name} ({m.model.task}, from {m.model.source.format} {m.model.source.file})",
        f"target:       {t.name} ({m.backend.name} {m.backend.version}, device {t.device})",
        f"precision:    {m.precision.requested} (runs as: {m.precision.inference})",
        *_accuracy_lines(m.accuracy),
        _latency_line(m.latency),
    ]
    if brief:
        return lines
    inp = m.input
    resize = pre.resize if isinstance(pre.resize, int) else "x".join(map(str, pre.resize or []))
    crop = list(pre.crop) if pre.crop else "none"
    lines += [
        f"input:        {inp.name} {list(inp.shape)} {inp.layout} {inp.dtype}"
        f"{' (dynamic batch)' if inp.dynamic_batch else ''}",
        f"preprocess:   resize {resize or 'none'} ({pre.resize_mode}), crop {crop}, "
        f"{pre.color_order}, x{pre.scale:.6g}, mean {_listed(pre.mean)}, std {_listed(pre.std)}",
        f"labels:       {len(m.labels)}: {', '.join(m.labels[:10])}{' ...' if len(m.labels) > 10 else ''}",
        f"output:       {m.postprocess.output} -> {m.postprocess.activation}, top-{m.postprocess.top_k}",
    ]
    if q is not None:
        images = "?" if q.calibration is None or q.calibration.images is None else q.calibration.images
        lines += [
            f"quantization: {q.recipe} via {q.tool}",
            f"              activations {q.activations}; weights {q.weights}; "
            f"calibration {q.calibration_method} on {images} images",
            f"              layers kept in higher precision: {', '.join(q.layers_kept_in_higher_precision) or 'none'}",
        ]
    lines += _budget_lines(m.budget_record)
    lines += _build_plan_lines(m.backend.build_plan)
    lines += settings_lines(m.runtime_settings)
    st = m.selftest
    lines.append(f"self-test:    {st.inputs} {st.source}, tolerance {st.tolerance} ({st.check})")
    lines.append(f"edgekit:      {m.edgekit_version}, schema {m.schema_version}, created {m.created}")
    lines.append("files:")
    lines += [f"  {name:<20} {_fmt_size(e.size):>10}  sha256 {e.sha256[:16]}…" for name, e in m.files.items()]
    lines += [f"note:         {note}" for note in m.notes or ()]
    return lines


def _listed(values: tuple[Any, ...] | None) -> list[Any] | None:
    """A tuple of the typed manifest printed as its JSON list was (``[0.5, 0.5, 0.5]``)."""
    return None if values is None else list(values)


__all__ = ["BundleSummary", "inspect", "settings_lines", "summary_lines"]
