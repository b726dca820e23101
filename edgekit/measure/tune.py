"""Runtime settings tuned on the device (issue 14): time the backend's knobs and the daemon's batch size here,
and record the best in the bundle (``runtime_settings``), the way trtexec picks tactics.

Two phases, a few seconds in all:

1. **Settings.** The runtime class offers its candidates (``Runtime.settings_candidates(cores)``, the
   default ``{}`` first: ONNX Runtime intra-op threads and the parallel executor, OpenVINO threads and the
   THROUGHPUT hint). One runtime a candidate is loaded (one the backend reports running exactly as the
   default, ``Runtime.applied_settings``, is not timed: ``same_as_default``); they are timed at batch 1 (a static-batch bundle: its
   batch) in ``ROUNDS`` interleaved rounds, each candidate a block of calls a round (the first calls of a
   block discarded: another session's spinning thread pool may still hold the cores), the order rotated each
   round. A candidate's figure is the median of its rounds' medians. A candidate beats the default when its
   figure is lower by more than ``NOISE_MARGIN`` and it was faster in at least ``MIN_ROUNDS_WON`` of the
   paired rounds (a round's drift in load hits both alike); the fastest such wins, else the default stays,
   and the record says so.
2. **Batch** (dynamic-batch bundles): with the chosen settings, batches of 1, 2, 4 and 8 are timed the same
   way, per frame (a batch's p50 / its size). Of the batches that beat batch 1 per frame (the same test), the
   smallest within the margin of the fastest of them is chosen; else batch 1.

``tune_runtime`` is what ``edgekit compile`` calls when the target is this machine (``Backend.measure_here``
says so); ``tune`` is ``edgekit bench --tune``: on an existing bundle, on the device, it verifies the bundle,
copies it into a staging folder (each file checked against its sha256), tunes there, runs the self-test with
the chosen settings and writes the bundle atomically, in place or to ``output``.

Runs on devices: numpy and the bundle's runtime only.
"""

from __future__ import annotations

import datetime
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgekit._version import __version__
from edgekit.errors import BundleError, EdgekitError, UsageError
from edgekit.measure.machine import describe_machine, usable_cores

NOISE_MARGIN = 0.05  # a candidate must be this much faster than the default (or batch 1) to replace it
ROUNDS = 7
MIN_ROUNDS_WON = 6  # and faster than it in at least this many of the ROUNDS paired rounds
SETTINGS_SECONDS = 2.0  # timed seconds for the settings phase, all candidates and rounds together
BATCH_SECONDS = 1.5  # and for the batch phase
BATCH_SIZES = (1, 2, 4, 8)
DISCARD = 2  # calls at the start of each block, not timed
MIN_RUNS, MAX_RUNS = 3, 200  # timed calls a block
Log = Callable[[str], None]


def _input(manifest: Mapping[str, Any], batch: int) -> np.ndarray:
    """A seeded input of the model's shape at ``batch``, in its dtype."""
    inp = manifest["input"]
    shape = (batch, *inp["shape"][1:])
    dtype = np.dtype(inp["dtype"])
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, 0), min(info.max, 255) + 1, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _block(fn: Callable[[], object], runs: int) -> tuple[float, int]:
    """One block: ``DISCARD`` calls, then the median of ``runs`` timed calls (ms)."""
    for _ in range(DISCARD):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000.0)
    return float(np.median(times)), runs


def _runs_per_block(estimates_s: list[float], seconds: float) -> int:
    """Timed calls a block so that ``ROUNDS`` rounds of every block take about ``seconds``."""
    per_round = max(sum(estimates_s), 1e-6)
    return int(np.clip(seconds / (ROUNDS * per_round), MIN_RUNS, MAX_RUNS))


def _estimate(fn: Callable[[], object]) -> float:
    """Seconds a call, from three calls after two warm-up calls."""
    for _ in range(2):
        fn()
    t = time.perf_counter()
    for _ in range(3):
        fn()
    return (time.perf_counter() - t) / 3


def interleaved(fns: list[Callable[[], object]], seconds: float) -> tuple[list[list[float]], int]:
    """Each round, a block of each function, the order rotated each round; every block's median (ms), per
    function, and the timed calls a block."""
    runs = _runs_per_block([_estimate(fn) for fn in fns], seconds)
    medians: list[list[float]] = [[] for _ in fns]
    for r in range(ROUNDS):
        for k in range(len(fns)):
            i = (r + k) % len(fns)
            ms, _ = _block(fns[i], runs)
            medians[i].append(round(ms, 4))
    return medians, runs


def _label(settings: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items()) or "the default"


def rounds_won(mine: list[float], theirs: list[float], scale: float = 1.0) -> int:
    """In how many rounds ``mine`` (times ``scale``) was below ``theirs``: the same round, the same load."""
    return sum(1 for a, b in zip(mine, theirs, strict=True) if a * scale < b)


def beats(figure: float, won: int, reference: float, margin: float) -> bool:
    """A candidate beats the reference: its figure is lower by more than ``margin`` and it was faster in at
    least ``MIN_ROUNDS_WON`` of the ``ROUNDS`` paired rounds."""
    return figure * (1 + margin) < reference and won >= MIN_ROUNDS_WON


def _choose_settings(candidates: list[dict[str, Any]], margin: float) -> tuple[int, str]:
    """The index of the chosen candidate (0: the default) and why: the fastest of those that beat the default."""
    default = candidates[0]["p50_ms"]
    timed = [(c["p50_ms"], i) for i, c in enumerate(candidates) if c["p50_ms"] is not None]
    best_ms, best = min(timed)
    winners = [(ms, i) for ms, i in timed if i and beats(ms, candidates[i]["rounds_won"], default, margin)]
    if winners:
        ms, i = min(winners)
        return i, (f"{_label(candidates[i]['settings'])}: {default / ms - 1:.1%} faster than the default "
                   f"({ms:.4g} ms against {default:.4g} ms, faster in {candidates[i]['rounds_won']} of {ROUNDS} "
                   f"rounds), more than the {margin:.0%} noise margin")  # fmt: skip
    if best == 0:
        return 0, "the default: it was the fastest"
    return 0, (f"the default: the fastest, {_label(candidates[best]['settings'])} ({best_ms:.4g} ms against "
               f"{default:.4g} ms, faster in {candidates[best]['rounds_won']} of {ROUNDS} rounds), does not beat it "
               f"by more than the {margin:.0%} noise margin in {MIN_ROUNDS_WON} rounds or more")  # fmt: skip


def _choose_batch(rows: list[dict[str, Any]], margin: float) -> tuple[int, str]:
    """The chosen batch and why: of the batches that beat batch 1 per frame, the smallest within the margin of
    the fastest of them; else 1."""
    one = next(r for r in rows if r["batch"] == 1)["ms_per_frame"]
    winners = [r for r in rows if r["batch"] > 1 and beats(r["ms_per_frame"], r["rounds_won"], one, margin)]
    if not winners:
        return 1, (f"batch 1: no larger batch is faster per frame by more than the {margin:.0%} noise margin in "
                   f"{MIN_ROUNDS_WON} of {ROUNDS} rounds or more")  # fmt: skip
    best = min(r["ms_per_frame"] for r in winners)
    r = min((r for r in winners if r["ms_per_frame"] <= best * (1 + margin)), key=lambda r: r["batch"])
    return r["batch"], (
        f"batch {r['batch']}: {r['ms_per_frame']:.4g} ms a frame against {one:.4g} ms at batch 1 (faster in "
        f"{r['rounds_won']} of {ROUNDS} rounds), by more than the {margin:.0%} noise margin, and the smallest "
        f"such batch within it of the fastest ({best:.4g} ms a frame)"
    )


def _drop_duplicates(loaded: list[Any], rows: list[dict[str, Any]]) -> None:
    """Close and mark, untimed, each candidate the backend reports running exactly as the default does (OpenVINO
    on two cores: threads=2 is its default): timing it would only measure the noise."""
    reference = loaded[0].applied_settings() if loaded and loaded[0] is not None else {}
    if not reference:
        return
    for i in range(1, len(loaded)):
        if loaded[i] is not None and loaded[i].applied_settings() == reference:
            loaded[i].close()
            loaded[i] = None
            rows[i]["same_as_default"] = True


def tune_runtime(
    runtime_cls: type,
    root: Path,
    manifest: dict[str, Any],
    *,
    device: str | None = None,
    by: str = "edgekit compile",
    log: Log | None = None,
    noise_margin: float = NOISE_MARGIN,
) -> dict[str, Any] | None:
    """Time ``runtime_cls``'s candidate settings (and the batch, for a dynamic-batch bundle) on the bundle in
    ``root`` here; return the ``runtime_settings`` record, or None when the runtime takes no settings."""
    log = log or (lambda _msg: None)
    keys = tuple(getattr(runtime_cls, "settings_keys", ()))
    if not keys:
        return None
    start = time.perf_counter()
    cores = usable_cores()
    candidates = runtime_cls.settings_candidates(cores)
    dynamic = manifest["input"]["shape"][0] == -1 or bool(manifest["input"].get("dynamic_batch"))
    batch = 1 if dynamic else int(manifest["input"]["shape"][0])
    x = _input(manifest, batch)
    log(f"tuning runtime settings here: {len(candidates)} candidates ({'; '.join(map(_label, candidates))}), "
        f"{ROUNDS} interleaved rounds")  # fmt: skip
    loaded: list[Any] = []
    rows: list[dict[str, Any]] = []
    try:
        for settings in candidates:
            try:
                runtime = runtime_cls(root, manifest, device=device, settings=settings)
            except EdgekitError:
                raise
            except Exception as exc:  # the backend refuses this combination (a plugin without the property)
                if not settings:
                    raise
                text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                rows.append({"settings": dict(settings), "p50_ms": None, "rounds_ms": [], "runs": 0, "error": text})
                loaded.append(None)
                continue
            loaded.append(runtime)
            rows.append({"settings": dict(settings), "p50_ms": None, "rounds_ms": [], "runs": 0})
        _drop_duplicates(loaded, rows)
        live = [i for i, rt in enumerate(loaded) if rt is not None]
        medians, runs = interleaved([lambda rt=loaded[i]: rt.infer(x) for i in live], SETTINGS_SECONDS)
        for i, m in zip(live, medians, strict=True):
            rows[i].update(p50_ms=round(float(np.median(m)), 4), rounds_ms=m, runs=runs * ROUNDS)
        for row in rows:
            if row["p50_ms"] is not None:
                row["rounds_won"] = rounds_won(row["rounds_ms"], rows[0]["rounds_ms"])
        chosen, why = _choose_settings(rows, noise_margin)
        log(f"runtime settings: {why}")
        record: dict[str, Any] = {**rows[chosen]["settings"]}
        runtime = loaded[chosen]
        describe = runtime.describe()
        how: dict[str, Any] = {
            "by": by,
            "measured_on": describe_machine()["summary"],
            "device": str(runtime.device),
            "backend": f"{describe.get('backend', manifest['backend']['name'])} "
            f"{describe.get('backend_version', manifest['backend']['version'])}",
            "edgekit": __version__,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "metric": f"p50 ms at batch {batch} (the median of the rounds' medians), seeded input",
            "rule": "a candidate replaces the default only when its p50 is lower by more than the noise margin "
            f"and it was faster in at least {MIN_ROUNDS_WON} of the {ROUNDS} paired rounds (the fastest such wins); "
            "the batch: of those that beat batch 1 per frame so, the smallest within the margin of the fastest",
            "noise_margin": noise_margin,
            "rounds": ROUNDS,
            "min_rounds_won": MIN_ROUNDS_WON,
            "seconds": 0.0,
            "candidates": rows,
            "chosen": why,
        }
        if dynamic:
            sizes = BATCH_SIZES
            batches = [_input(manifest, b) for b in sizes]
            medians, runs = interleaved([lambda xb=xb: runtime.infer(xb) for xb in batches], BATCH_SECONDS)
            batch_rows = []
            for b, m in zip(sizes, medians, strict=True):
                per_frame = float(np.median(m)) / b
                batch_rows.append({"batch": b, "ms_per_frame": round(per_frame, 4),
                                   "frames_per_s": round(1000.0 / max(per_frame, 1e-9), 2), "rounds_ms": m,
                                   "runs": runs * ROUNDS, "rounds_won": rounds_won(m, medians[0], 1 / b)})  # fmt: skip
            record["batch"], how["batch_chosen"] = _choose_batch(batch_rows, noise_margin)
            how["batch_candidates"] = batch_rows
            log(f"daemon batch: {how['batch_chosen']}")
        else:
            how["batch_chosen"] = f"not tuned: the bundle's batch is static ({batch})"
    finally:
        for runtime in loaded:
            if runtime is not None:
                runtime.close()
    how["seconds"] = round(time.perf_counter() - start, 2)
    record["how"] = how
    return record


def _target_of(m: Any):
    """The bundle's target, as ``Backend.measure_here`` takes it."""
    from edgekit.targets import Target

    t = m.target
    return Target(
        name=t.name, backend=m.backend.name, device=t.device, precisions=(m.precision.requested,),
        default_precision=m.precision.requested, arch=t.arch, static_shapes=bool(t.static_shapes),
        backend_options=dict(t.backend_options or {}),
    )  # fmt: skip


def _copy_verified(root: Path, files: Mapping[str, Any], staging: Path, source: str) -> None:
    """Copy every listed file into ``staging`` and check each copy's size and sha256 against the manifest."""
    from edgekit.bundle.manifest import sha256_file

    for name, entry in files.items():
        dst = staging / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / name, dst)
        if dst.stat().st_size != entry.size or sha256_file(dst) != entry.sha256:
            raise BundleError(f"{source}: the copy of '{name}' does not match its sha256; check the disk and retry")


def tune(bundle: str | Path, *, output: str | Path | None = None, log: Log | None = None) -> dict[str, Any]:
    """Measure the runtime settings of the bundle at ``bundle`` on this machine, its target, and record the best
    in it (``runtime_settings``): in place, or in a copy at ``output``. The bundle is verified first, the
    tuned one is self-tested with the chosen settings before it is written (atomically) and verified after.
    Returns ``{"bundle", "hash", "previous_hash", "runtime_settings"}``. The same as ``edgekit bench --tune``."""
    import platform

    from edgekit import registry
    from edgekit.bundle import BundleWriter, open_bundle
    from edgekit.measure.machine import cpu_model
    from edgekit.runtime import selftest
    from edgekit.tasks import get_task

    log = log or (lambda _msg: None)
    path = Path(bundle)
    out = Path(output) if output is not None else path
    opened = open_bundle(path)
    try:
        m, data, previous = opened.typed_manifest, opened.manifest, opened.hash
        if not registry.is_registered(m.backend.name):
            raise BundleError(f"{path}: backend {m.backend.name!r} is not registered here; install its package")
        backend = registry.backend(m.backend.name)
        runtime_cls = backend.runtime_class()
        if not getattr(runtime_cls, "settings_keys", ()):
            raise UsageError(
                f"backend {m.backend.name} takes no runtime settings edgekit tunes (see docs/design.md: TensorRT's "
                "builder times its tactics when the engine is built on the device); the bundle is unchanged"
            )
        host = f"{platform.machine()} host ({cpu_model()}, {usable_cores()} cores)"
        site = backend.measure_here(_target_of(m), host, log)
        if not site.on_target:
            raise UsageError(
                f"this machine is not the bundle's target {m.target.name} ({site.description}); run "
                "edgekit bench --tune on the device itself"
            )
        packed = path.is_file()
        with BundleWriter(out, pack=packed) as writer:
            _copy_verified(opened.root, m.files, writer.staging, str(path))
            opened.close()
            manifest = {k: v for k, v in data.items() if k != "runtime_settings"}
            record = tune_runtime(runtime_cls, writer.staging, manifest, device=site.device,
                                  by="edgekit bench --tune", log=log)  # fmt: skip
            manifest["runtime_settings"] = record
            task = get_task(m.model.task).bind(m.postprocess.to_dict())
            knobs = {k: v for k, v in record.items() if k not in ("batch", "how")}
            runtime = runtime_cls(writer.staging, manifest, device=site.device, settings=knobs)
            try:
                result = selftest.run(runtime.infer, writer.staging, m.selftest, tuple(m.input.shape),
                                      source=str(path), task=task)  # fmt: skip
            finally:
                runtime.close()
            if not result.passed:
                raise BundleError(
                    f"{path}: with the tuned settings ({_label(knobs)}) {result.describe()}; the bundle is unchanged "
                    "(report this: the settings should not change the results)"
                )
            written = writer.commit(manifest)
    finally:
        opened.close()
    check = open_bundle(written)  # verify what was written: schema and sha256 of every file
    try:
        digest = check.hash
    finally:
        check.close()
    log(f"wrote {written} (hash {digest[:16]}…, was {previous[:16]}…)")
    return {"bundle": str(written), "hash": digest, "previous_hash": previous, "runtime_settings": record}


__all__ = [
    "BATCH_SIZES",
    "MIN_ROUNDS_WON",
    "NOISE_MARGIN",
    "ROUNDS",
    "beats",
    "interleaved",
    "rounds_won",
    "tune",
    "tune_runtime",
]
