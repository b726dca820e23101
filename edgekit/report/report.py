"""``run_report``: compile a model for every target x precision (x calibration method), measure each, and
write report.json, report.csv, report.md and report.html into one folder.

The folder holds ``bundles/<id>.edgekit`` and ``runs/<id>.json`` (one record a finished combination,
written atomically), and the reports, rewritten after every combination. ``resume=True`` reuses every
record whose inputs (model, data, target file, precision, method, spec, edgekit version) are unchanged
and whose bundle is still there; ``merge`` folds device bench results in (and implies resume, since a
device result belongs to one bundle).
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit._version import __version__
from edgekit.bundle.manifest import MANIFEST, bundle_hash
from edgekit.errors import UsageError
from edgekit.measure.machine import describe_machine, describe_software
from edgekit.report import summary
from edgekit.report.combination import Combination, run_combination, skipped
from edgekit.report.estimate import FORMULA, GraphCost, best_of, host_hardware, validate
from edgekit.report.merge import attach, load_bench_file
from edgekit.report.prepare import Prepared, prepare
from edgekit.report.progress import Progress
from edgekit.report.writers import atomic_write, write_outputs
from edgekit.request import CALIB_SIZE
from edgekit.targets import CALIBRATION_METHODS, PRECISIONS, Target, get_target

METHODS = CALIBRATION_METHODS


@dataclass(frozen=True, kw_only=True)
class ReportOptions:
    """What to compile and measure. ``val`` is required; ``calib`` too when int8 is among the precisions."""

    val: Path
    targets: tuple[str, ...] = ("cpu", "intel-cpu")
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    calib: Path | None = None
    calib_size: int = CALIB_SIZE
    calib_methods: tuple[str, ...] = ("default",)  # "default": each target's own calibration_method
    spec: Path | None = None
    labels: Path | None = None
    name: str | None = None
    input_shape: tuple[int, ...] | None = None
    resume: bool = False
    merge: tuple[Path, ...] = ()
    max_accuracy_drop: float | None = None
    min_agreement: float | None = None
    budget_confidence: float | None = None
    max_latency_ms: float | None = None
    bench_seconds: float = 1.0
    bench: bool = True
    trust_model_code: bool = False  # load TorchScript / a .pt2 whose loader runs code stored in it

    def __post_init__(self) -> None:
        for p in self.precisions:
            if p not in PRECISIONS:
                raise UsageError(f"unknown precision '{p}'; choose from: {', '.join(PRECISIONS)}")
        for m in self.calib_methods:
            if m not in (*METHODS, "default"):
                raise UsageError(f"unknown calibration method '{m}'; choose from: default, {', '.join(METHODS)}")
        if not self.targets or not self.precisions or not self.calib_methods:
            raise UsageError("--targets, --precisions and --calib-methods each need at least one value")
        if self.max_accuracy_drop is not None and self.max_accuracy_drop < 0:
            raise UsageError(f"--max-accuracy-drop must be 0 or more points, not {self.max_accuracy_drop}")
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 100:
            raise UsageError(f"--min-agreement must be a percentage from 0 to 100, not {self.min_agreement}")
        if self.budget_confidence is not None and not 0.5 <= self.budget_confidence < 1:
            raise UsageError(f"--budget-confidence must be from 0.5 to 0.999, not {self.budget_confidence:g}")
        if self.max_latency_ms is not None and self.max_latency_ms <= 0:
            raise UsageError(f"--max-latency-ms must be positive, not {self.max_latency_ms}")
        if self.bench_seconds <= 0:
            raise UsageError(f"--bench-seconds must be positive, not {self.bench_seconds}")


def compile_budget(options: ReportOptions) -> tuple[tuple[str, str], ...]:
    """The accuracy budget the int8 "-budget" combinations compile with: --min-agreement, else an explicit
    --max-accuracy-drop (which also drives the recommendations); none when neither flag was given."""
    confidence = () if options.budget_confidence is None else (("budget_confidence", f"{options.budget_confidence:g}"),)
    if options.min_agreement is not None:
        return (("min_agreement", f"{options.min_agreement:g}"), *confidence)
    if options.max_accuracy_drop is not None:
        return (("max_accuracy_drop", f"{options.max_accuracy_drop:g}"), *confidence)
    return ()


def plan(targets: list[Target], options: ReportOptions) -> list[Combination]:
    """Every target x precision (x calibration method for int8), each once, in the order given; with a budget,
    one more int8 combination per target compiled under it (naive INT8 stays beside it for comparison)."""
    combos: dict[str, Combination] = {}
    budget = compile_budget(options)
    for target in targets:
        for precision in dict.fromkeys(options.precisions):
            methods = [_method(m, target) for m in options.calib_methods] if precision == "int8" else [None]
            for method in dict.fromkeys(methods):
                combo = Combination(target, precision, method)
                combos.setdefault(combo.id, combo)
            if precision == "int8" and budget:
                combo = Combination(target, precision, methods[0], budget)
                combos.setdefault(combo.id, combo)
    return list(combos.values())


def _method(method: str, target: Target) -> str:
    return target.calibration_method if method == "default" else method


def _check_output(out: Path) -> None:
    """Fail before any work if ``out`` cannot hold a report (a file, or someone else's folder)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o '{out}' is a file; a report is written into a folder, choose another -o")
    if out.is_dir() and any(out.iterdir()) and not ((out / "runs").is_dir() or (out / "report.json").is_file()):
        raise UsageError(f"-o '{out}' is a non-empty folder that is not an edgekit report; choose another -o")


def _make_output(out: Path) -> None:
    try:
        (out / "runs").mkdir(parents=True, exist_ok=True)
        (out / "bundles").mkdir(exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the report folder '{out}' ({exc.strerror}); choose another -o") from exc


def _key(prep: Prepared, combo: Combination) -> str:
    data = {
        "model": prep.model["sha256"], "target": combo.target.text, "precision": combo.precision,
        "method": combo.method, "budget": combo.budget, "calib": (prep.calib or {}).get("sha256"), "calib_size": prep.calib_size,
        "val": prep.val["sha256"], "spec": prep.request.spec, "edgekit": __version__,
    }  # fmt: skip
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _load_records(out: Path) -> dict[str, dict[str, Any]]:
    records = {}
    for path in sorted((out / "runs").glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue  # a damaged record is recomputed
        if isinstance(record, dict) and "id" in record:
            records[record["id"]] = record
    return records


def _reusable(record: dict[str, Any], key: str, out: Path) -> bool:
    if record.get("status") != "ok" or record.get("key") != key:
        return False
    manifest = out / record["bundle"]["path"] / MANIFEST
    return manifest.is_file() and bundle_hash(manifest.read_text(encoding="utf-8")) == record["bundle"]["hash"]


def _save(out: Path, record: dict[str, Any]) -> None:
    atomic_write(out / "runs" / f"{record['id']}.json", json.dumps(record, indent=1))


def _unsupported(combo: Combination) -> str | None:
    if combo.target.supports(combo.precision):
        return None
    return f"{combo.target.name} does not support {combo.precision} (it supports {', '.join(combo.target.precisions)})"


def _records(out: Path, prep: Prepared, combos: list[Combination], options: ReportOptions):
    """The reusable records of an earlier run (with any --merge folded in), and each combination's key."""
    resume = options.resume or bool(options.merge)
    keys = {c.id: _key(prep, c) for c in combos}
    found = _load_records(out) if resume else {}
    records = {i: r for i, r in found.items() if i in keys and _reusable(r, keys[i], out)}
    if not resume:
        for stale in (out / "runs").glob("*.json"):
            stale.unlink()
    return records, keys


def run_report(
    model: str | Path, *, output: str | Path, options: ReportOptions, progress: bool = True
) -> dict[str, Any]:
    """Compile and measure every combination, then write the reports; return the report.json document.

    The reports are rewritten after every combination, and once more if the run is interrupted, so an
    interrupted run leaves the outputs of what it finished.
    """
    out = Path(output)
    targets = [get_target(t) for t in options.targets]
    combos = plan(targets, options)
    bench_docs = [(Path(p), load_bench_file(p)) for p in options.merge]
    _check_output(out)
    bar = Progress(len(combos), enabled=progress)
    prep = prepare(model, options, log=bar.message, bundles=out / "bundles")
    _make_output(out)
    records, keys = _records(out, prep, combos, options)
    if bench_docs:
        for ident in attach(bench_docs, records, model_sha256=prep.model["sha256"], model=prep.model["file"]):
            _save(out, records[ident])
            bar.message(f"merged a device run into {ident}")
    host = host_hardware() if options.bench else None
    write = lambda: write_outputs(out, document(prep, options, targets, combos, records, host))  # noqa: E731
    try:
        for combo in combos:
            bar.start(combo.id)
            if combo.id in records:
                bar.advance("reused from the earlier run (--resume)")
                continue
            reason = _unsupported(combo)
            record = skipped(combo, reason, keys[combo.id]) if reason else run_combination(
                combo, prep.request, out=out, key=keys[combo.id], cost=prep.cost, note=bar.note,
                bench_seconds=options.bench_seconds if options.bench else None,
            )  # fmt: skip
            _save(out, record)
            records[combo.id] = record
            write()
            bar.advance(record["status"] if record["status"] == "ok" else f"{record['status']}: {record['error']}")
    except KeyboardInterrupt:
        write()
        bar.message(f"interrupted: {len(records)} of {len(combos)} combinations are in {out}; re-run with --resume")
        raise
    if host is not None:  # measured again at the end: the ceiling is the best of both
        host = best_of(host, host_hardware())
    doc = document(prep, options, targets, combos, records, host)
    write_outputs(out, doc)
    return doc


def _estimator(cost: GraphCost, host: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    import dataclasses

    check = validate(cost, host, summary.measured_here(rows)) if host else {"rows": [], "summary": None}
    return {
        "formula": "latency = " + FORMULA,
        "assumes": "every layer at the device's peak compute or DRAM bandwidth; no per-layer overhead, no cache",
        "host_ceilings": {k: v for k, v in dataclasses.asdict(host).items() if v} if host else None,
        "validation": check,
    }


def document(
    prep: Prepared,
    options: ReportOptions,
    targets: list[Target],
    combos: list[Combination],
    records: dict[str, dict[str, Any]],
    host: Any,
) -> dict[str, Any]:
    """The report.json document (schema ``edgekit.report`` version 1, documented in docs/report.md)."""
    fp32, machine = prep.fp32, describe_machine()
    rows = [
        summary.row_of(records[c.id], fp32["top1"], prep.val["sha256"], machine["summary"])
        for c in combos
        if c.id in records
    ]
    summary.mark_pareto(rows)
    max_drop = summary.DEFAULT_MAX_DROP if options.max_accuracy_drop is None else options.max_accuracy_drop
    names = list(dict.fromkeys(t.name for t in targets))
    return {
        "schema": summary.REPORT_SCHEMA,
        "schema_version": summary.REPORT_SCHEMA_VERSION,
        "edgekit_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "complete": len(rows) == len(combos),
        "progress": {"finished": len(rows), "total": len(combos)},
        "model": prep.model,
        "data": {"calib": prep.calib, "val": prep.val},
        "fp32_reference": fp32,
        "machine": machine,
        "software": describe_software(prep.runtimes),
        "budget": {
            "max_accuracy_drop": max_drop,
            "max_latency_ms": options.max_latency_ms,
            "accuracy_budget_defaulted": options.max_accuracy_drop is None,
        },
        "recommendations": summary.recommend(rows, names, max_drop, options.max_latency_ms),
        "results": rows,
        "estimator": _estimator(prep.cost, host, rows),
        "provenance": summary.KINDS,
    }
