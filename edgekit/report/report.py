"""``report`` (the public entry, ``edgekit.report``) and ``run_report``: compile a model for every target x
precision (x calibration method), measure each, and write report.json, report.csv, report.md and
report.html into one folder.

The folder holds ``bundles/<id>.edgekit`` and ``runs/<id>.json`` (one record a finished combination,
written atomically), and the reports, rewritten after every combination. ``resume=True`` reuses every
record whose inputs (model, data, target file, precision, method, spec, edgekit version) are unchanged
and whose bundle is still there; ``merge`` folds device bench results in (and implies resume, since a
device result belongs to one bundle).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit import request as rq
from edgekit._version import __version__
from edgekit.bundle.manifest import MANIFEST, bundle_hash
from edgekit.errors import UsageError
from edgekit.measure.machine import describe_machine, describe_software
from edgekit.report import defaults, summary
from edgekit.report.combination import Combination, run_combination, skipped
from edgekit.report.estimate import FORMULA, UNCALIBRATED_BAND, GraphCost, best_of, host_hardware, validate
from edgekit.report.merge import attach, load_bench_file
from edgekit.report.prepare import Prepared, prepare
from edgekit.report.progress import Progress
from edgekit.report.writers import atomic_write, write_outputs
from edgekit.targets import CALIBRATION_METHODS, PRECISIONS, Target, get_target

METHODS = CALIBRATION_METHODS


# The fields a report shares with ``CompileRequest`` (same names, types, defaults and checks): every
# combination's request carries them; ``edgekit report`` and ``edgekit compile`` share their flags.
SHARED_FIELDS = (
    "calib", "val", "calib_size", "calibration_percentile", "max_accuracy_drop", "min_agreement",
    "budget_confidence", "spec", "name", "input_shape", "layout", "labels", "preprocess", "trust_model_code",
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class ReportOptions:
    """What to compile and measure. ``val`` is required; ``calib`` too when int8 is among the precisions.

    The fields of ``SHARED_FIELDS`` mean what ``CompileRequest``'s do (the same defaults and checks; a
    ``max_accuracy_drop`` of "B%" is relative to FP32); ``targets`` x ``precisions`` (x ``calib_methods``
    for int8) are the combinations; ``max_latency_ms`` and ``max_accuracy_drop`` drive the recommendations.
    ``include_estimates`` lets estimated latencies onto the Pareto front and into the recommendations (off:
    only measured or merged figures count; a measured or merged figure always beats an estimate).
    """

    val: Path
    targets: tuple[str, ...] = defaults.TARGETS
    precisions: tuple[str, ...] = defaults.PRECISIONS
    calib: Path | None = None
    calib_size: int = rq.CALIB_SIZE
    calib_methods: tuple[str, ...] = defaults.CALIB_METHODS  # "default": each target's own calibration_method
    calibration_percentile: float = rq.CALIBRATION_PERCENTILE
    spec: str | Path | None = None
    labels: Path | None = None
    name: str | None = None
    input_shape: tuple[int, ...] | None = None
    layout: str | None = None
    preprocess: Mapping[str, Any] | None = None
    resume: bool = False
    merge: tuple[Path, ...] = ()
    max_accuracy_drop: str | float | None = None
    min_agreement: str | float | None = None
    budget_confidence: float = rq.BUDGET_CONFIDENCE
    max_latency_ms: float | None = None
    bench_seconds: float = defaults.BENCH_SECONDS
    bench: bool = True
    include_estimates: bool = False
    trust_model_code: bool = False  # load TorchScript / a .pt2 whose loader runs code stored in it

    def __post_init__(self) -> None:
        for key in ("targets", "precisions", "calib_methods", "merge"):
            value = getattr(self, key)
            object.__setattr__(self, key, (value,) if isinstance(value, (str, Path)) else tuple(value))
        object.__setattr__(self, "merge", tuple(Path(m) for m in self.merge))
        for p in self.precisions:
            if p not in PRECISIONS:
                raise UsageError(f"unknown precision '{p}'; choose from: {', '.join(PRECISIONS)}")
        for m in self.calib_methods:
            if m not in (*METHODS, "default"):
                raise UsageError(f"unknown calibration method '{m}'; choose from: default, {', '.join(METHODS)}")
        if not self.targets or not self.precisions or not self.calib_methods:
            raise UsageError("--targets, --precisions and --calib-methods each need at least one value")
        if self.budget_confidence is None:  # "not given", as before the default was CompileRequest's
            object.__setattr__(self, "budget_confidence", rq.BUDGET_CONFIDENCE)
        # the shared fields are checked (and normalized) by CompileRequest itself, so they mean the same
        base = rq.CompileRequest(
            model="model", target=self.targets[0], output="report", **{k: getattr(self, k) for k in SHARED_FIELDS}
        )
        for key in SHARED_FIELDS:
            object.__setattr__(self, key, getattr(base, key))
        object.__setattr__(self, "max_accuracy_drop", _number_text(self.max_accuracy_drop))
        object.__setattr__(self, "min_agreement", _number_text(self.min_agreement))
        if self.max_latency_ms is not None and self.max_latency_ms <= 0:
            raise UsageError(f"--max-latency-ms must be positive, not {self.max_latency_ms}")
        if self.bench_seconds <= 0:
            raise UsageError(f"--bench-seconds must be positive, not {self.bench_seconds}")


@dataclass(frozen=True, kw_only=True)
class ReportRequest(ReportOptions):
    """One report: ``model`` (an ONNX/TorchScript/.pt2 path) over the combinations, written into ``output``."""

    model: str | Path
    output: Path

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "output", Path(self.output))

    def replace(self, **changes: Any) -> ReportRequest:
        """A copy with ``changes`` (``dataclasses.replace``); checked again."""
        return dataclasses.replace(self, **changes)


def _number_text(value: str | None) -> str | None:
    """A budget as CompileRequest holds it ("1.5", "2%"), plain numbers written the short way ("1.0" -> "1")."""
    if value is None:
        return None
    try:
        return f"{float(value):g}"
    except ValueError:
        return value


def report(request: ReportRequest | None = None, *, progress: bool = True, **fields: Any) -> dict[str, Any]:
    """Compile ``model`` for every target x precision (x calibration method), measure each, and write
    report.json, report.csv, report.md and report.html into ``output``; return the report.json document.

    Give a ``ReportRequest``, or its fields as keywords: ``edgekit.report(model="m.onnx", output="rep/",
    val="val/", calib="calib/", targets=("cpu",), precisions=("fp32", "int8"))``. ``progress`` prints one
    line a step on stderr. The same as ``edgekit report`` with the same flags.
    """
    if request is None:
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(ReportRequest)})
        if unknown:
            raise TypeError(f"report() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}")
        request = ReportRequest(**fields)
    elif fields:
        raise TypeError("report() takes a ReportRequest or its fields as keywords, not both")
    return run_report(request.model, output=request.output, options=request, progress=progress)


def compile_budget(options: ReportOptions) -> tuple[tuple[str, str], ...]:
    """The accuracy budget the int8 "-budget" combinations compile with: --min-agreement, else an explicit
    --max-accuracy-drop (which also drives the recommendations); none when neither flag was given."""
    given = options.budget_confidence != rq.BUDGET_CONFIDENCE
    confidence = (("budget_confidence", f"{options.budget_confidence:g}"),) if given else ()
    if options.min_agreement is not None:
        return (("min_agreement", options.min_agreement), *confidence)
    if options.max_accuracy_drop is not None:
        return (("max_accuracy_drop", options.max_accuracy_drop), *confidence)
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
    from edgekit.spec import spec_beside, spec_beside_note

    out = Path(output)
    targets = [get_target(t) for t in options.targets]
    combos = plan(targets, options)
    bar = Progress(len(combos), enabled=progress)
    if options.spec is None and (beside := spec_beside(model)) is not None:
        bar.message(spec_beside_note(beside))
        options = dataclasses.replace(options, spec=beside)
    bench_docs = [(Path(p), load_bench_file(p)) for p in options.merge]
    _check_output(out)
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
                bench_seconds=options.bench_seconds if options.bench else None, bench_images=prep.bench_images,
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


def _estimator(cost: GraphCost, host: Any, rows: list[dict[str, Any]], targets: list[Target]) -> dict[str, Any]:
    by_name = {t.name: t for t in targets}
    terms = {r["id"]: by_name[r["target"]].hardware for r in rows if r.get("target") in by_name}
    check = validate(cost, host, summary.measured_here(rows), terms) if host else {"rows": [], "summary": None}
    classes = {}
    for t in targets:
        hw = t.hardware
        entry = classes.setdefault(hw.estimate_class or "uncalibrated", {
            "class": hw.estimate_class or "uncalibrated", "targets": [],
            "median_abs_error_pct": hw.estimate_error_pct, "band": hw.estimate_band or UNCALIBRATED_BAND,
        })  # fmt: skip
        entry["targets"].append(t.name)
    return {
        "formula": "latency = " + FORMULA,
        "assumes": "per device class: a per-inference floor, a per-layer overhead and a fraction of peak per operator "
        "class and layer size, fitted to published figures (bench/bench_estimate.py); no cache model",
        "validated_on": "published batch-1 latencies, bench/data/published_latency.toml (sources and rows there)",
        "classes": list(classes.values()),
        "host_ceilings": {k: v for k, v in dataclasses.asdict(host).items() if v} if host else None,
        "validation": check,
    }


def _drop_points(options: ReportOptions, fp32_score: float) -> float:
    """--max-accuracy-drop in points of the task's metric (a classifier's top-1, a detector's mAP@[.5:.95]): "B"
    is B points, "B%" is B% of the FP32 figure."""
    from edgekit.quantize.budget import Budget

    return Budget.max_accuracy_drop(options.max_accuracy_drop).allowed_drop(fp32_score)


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
        summary.row_of(records[c.id], fp32, prep.val["sha256"], machine["summary"]) for c in combos if c.id in records
    ]
    summary.mark_pareto(rows, options.include_estimates)
    score = summary.score_of(fp32)
    max_drop = summary.DEFAULT_MAX_DROP if options.max_accuracy_drop is None else _drop_points(options, score)
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
        "include_estimates": options.include_estimates,
        "recommendations": summary.recommend(rows, names, max_drop, options.max_latency_ms, options.include_estimates),
        "results": rows,
        "estimator": _estimator(prep.cost, host, rows, targets),
        "provenance": summary.KINDS,
    }
