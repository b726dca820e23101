"""One report combination (target x precision x calibration method): compile, bench, estimate, record.

A record is the raw evidence for one combination (the bundle's accuracy and latency as compile_model
measured them, the bench run here, the latency estimate, any merged device run), kept as
``OUT/runs/<id>.json``; ``summary.py`` turns records into report rows.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.bundle.manifest import MANIFEST, bundle_hash
from edgekit.errors import EdgekitError
from edgekit.report.estimate import GraphCost, estimate
from edgekit.request import CompileRequest
from edgekit.targets import Target

Note = Callable[[str], None]


@dataclass(frozen=True)
class Combination:
    target: Target
    precision: str
    method: str | None = None  # calibration method, int8 only
    budget: tuple[tuple[str, str], ...] = ()  # CompileRequest's budget field and value, e.g. (("min_agreement", "99"),)

    @property
    def id(self) -> str:
        suffix = f"-{self.method}" if self.method and self.method != self.target.calibration_method else ""
        return f"{self.target.name}-{self.precision}{suffix}{'-budget' if self.budget else ''}"

    def describe(self) -> dict[str, Any]:
        t = self.target
        return {
            "target": t.name,
            "backend": t.backend,
            "device": t.device,
            "description": t.description,
            "hardware": dataclasses.asdict(t.hardware),
            "precision": self.precision,
            "calibration_method": self.method,
            "compile_budget": {k: v for k, v in self.budget} or None,
        }


def bundle_identity(bundle: Path) -> dict[str, Any]:
    text = (bundle / MANIFEST).read_text(encoding="utf-8")
    size = sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())
    return {"hash": bundle_hash(text), "size_bytes": size}


def run_bench(bundle: Path, seconds: float, timeout: float = 600, images: Path | None = None) -> dict[str, Any]:
    """``edgekit bench BUNDLE --json`` in a fresh process, so memory and CPU figures are the bundle's own;
    ``images`` (an image or a folder) is what its end-to-end phase runs on (default: bench's synthetic frame)."""
    cmd = [sys.executable, "-m", "edgekit", "bench", str(bundle), "--json", "-q", "--seconds", f"{seconds:g}"]
    if images is not None:
        cmd += ["--image", str(images)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise EdgekitError(f"edgekit bench failed on {bundle.name}: {last}")
    return json.loads(proc.stdout)


def _manifest_part(manifest: dict[str, Any]) -> dict[str, Any]:
    keep = ("accuracy", "latency", "precision", "backend", "quantization", "budget", "notes", "created")
    return {k: manifest.get(k) for k in keep}


def request_for(combo: Combination, base: CompileRequest, bundle: Path) -> CompileRequest:
    """The request one combination compiles: the report's shared ``base`` with this combination's target,
    precision, calibration method and budget, written to ``bundle``. The report measures FP32 itself, so an
    INT8 compile does not time FP32 again (``compare_int8_with_fp32``)."""
    return base.replace(
        target=combo.target, precision=combo.precision, calibration_method=combo.method, output=bundle,
        compare_int8_with_fp32=False, **dict(combo.budget),
    )  # fmt: skip


def _compile(request: CompileRequest, note: Note) -> tuple[dict, list, float]:
    from edgekit.pipeline import compile_request

    timeline: list[list[Any]] = []
    marks = [time.perf_counter()]

    def log(msg: str) -> None:
        now = time.perf_counter()
        if timeline:
            timeline[-1][1] = round(now - marks[-1], 2)
        timeline.append([msg, None])
        marks.append(now)
        note(msg)

    start = time.perf_counter()
    result = compile_request(request, log=log)
    end = time.perf_counter()
    if timeline:
        timeline[-1][1] = round(end - marks[-1], 2)
    return result.manifest, timeline, round(end - start, 2)


def run_combination(
    combo: Combination,
    base: CompileRequest,
    *,
    out: Path,
    key: str,
    cost: GraphCost,
    note: Note,
    bench_seconds: float | None = None,
    bench_images: Path | None = None,
) -> dict[str, Any]:
    """Compile, measure (where the target runs here) and estimate one combination; never raises for a failure.

    ``base`` holds what every combination compiles from (``request_for`` derives this one's request);
    ``bench_seconds`` runs ``edgekit bench`` that long on a bundle measured here (None: no bench), its
    end-to-end phase on ``bench_images`` (a detector's validation scenes) when given."""
    record: dict[str, Any] = {"id": combo.id, "key": key, **combo.describe(), "status": "failed", "error": None}
    record["estimate"] = estimate(cost, combo.target.hardware, combo.precision)
    bundle = out / "bundles" / f"{combo.id}.edgekit"
    try:
        manifest, timeline, seconds = _compile(request_for(combo, base, bundle), note)
    except Exception as exc:  # a failing combination is reported, not fatal
        record["error"] = _one_line(exc)
        record["traceback"] = None if isinstance(exc, EdgekitError) else traceback.format_exc(limit=8)
        return _finish(record)
    record.update(
        status="ok",
        bundle={"path": str(bundle.relative_to(out)), **bundle_identity(bundle)},
        compile_seconds=seconds,
        timeline=timeline,
        manifest=_manifest_part(manifest),
        bench=None,
        notes=[],
    )
    if bench_seconds is not None and (manifest.get("latency") or {}).get("measured"):
        note("benchmarking (edgekit bench)")
        try:
            record["bench"] = run_bench(bundle, bench_seconds, images=bench_images)
        except (EdgekitError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
            record["notes"].append(f"bench failed, the compile-time latency is used instead: {_one_line(exc)}")
    return _finish(record)


def skipped(combo: Combination, reason: str, key: str) -> dict[str, Any]:
    return _finish({"id": combo.id, "key": key, **combo.describe(), "status": "skipped", "error": reason})


def _one_line(exc: BaseException) -> str:
    """A user error's own message; for anything else (a bug in a backend), its type and first line."""
    lines = str(exc).strip().splitlines()
    first = lines[0] if lines else ""
    if isinstance(exc, EdgekitError):
        return first[:400] or type(exc).__name__
    return f"{type(exc).__name__}: {first[:300]}"


def _finish(record: dict[str, Any]) -> dict[str, Any]:
    record["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return record
