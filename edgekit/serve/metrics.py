"""Counters, gauges and histograms, rendered in the Prometheus text format (0.0.4).

Hand-written rather than prometheus_client: the daemon needs a dozen series, and this keeps its import
time and footprint small. Every method is thread-safe.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Labels = tuple[tuple[str, str], ...]
OTHER_CLASS = "unknown_class"  # the label of a detection whose class is beyond the bundle's label list

# Seconds. Inference on an edge CPU runs from ~0.5 ms (tiny nets) to ~1 s (big nets on a Pi).
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt_labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _fmt_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str) -> None:
        self.name = name
        self.help = help_text
        self._lock = threading.Lock()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    """A monotonically increasing count, optionally per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str) -> None:
        super().__init__(name, help_text)
        self._values: dict[Labels, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(tuple(sorted(labels.items())), 0.0)

    def inc_each(self, label: str, amounts: Mapping[str, float]) -> None:
        """Add ``amounts[v]`` to the series ``{label="v"}`` for every ``v``, under one lock (one frame's counts)."""
        with self._lock:
            for value, amount in amounts.items():
                key = ((label, value),)
                self._values[key] = self._values.get(key, 0.0) + amount

    def drop(self, label: str, value: str) -> None:
        """Forget every series with ``{label="value"}`` (a stream that was removed)."""
        with self._lock:
            self._values = {k: v for k, v in self._values.items() if (label, value) not in k}

    def total(self) -> float:
        with self._lock:
            return sum(self._values.values())

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items()) or [((), 0.0)]
        return [*self.header(), *(f"{self.name}{_fmt_labels(k)} {_fmt_value(v)}" for k, v in items)]


class Gauge(Counter):
    """A value that goes up and down."""

    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[tuple(sorted(labels.items()))] = float(value)

    def replace(self, value: float, **labels: str) -> None:
        """Drop every label set, then set this one (an info gauge that names the current state)."""
        with self._lock:
            self._values = {tuple(sorted(labels.items())): float(value)}

    def set_each(self, label: str, values: Mapping[str, float]) -> None:
        """Set the series ``{label="v"}`` to ``values[v]`` for every ``v``, under one lock."""
        with self._lock:
            for value, amount in values.items():
                self._values[((label, value),)] = float(amount)


class Histogram(_Metric):
    """Observations counted into cumulative buckets, with their sum and count."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        super().__init__(name, help_text)
        self.buckets = tuple(sorted(buckets))
        self._counts = [0] * (len(self.buckets) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        index = next((i for i, b in enumerate(self.buckets) if value <= b), len(self.buckets))
        with self._lock:
            self._counts[index] += 1
            self._sum += value

    @property
    def count(self) -> int:
        with self._lock:
            return sum(self._counts)

    def render(self) -> list[str]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        lines, running = self.header(), 0
        for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
            running += n
            lines.append(f'{self.name}_bucket{{le="{_fmt_value(bound)}"}} {running}')
        lines += [f"{self.name}_sum {_fmt_value(total)}", f"{self.name}_count {running}"]
        return lines


class Metrics:
    """Every series the daemon exports, by attribute."""

    def __init__(self) -> None:
        self.frames_captured = Counter("edgekit_frames_captured_total", "Frames read from the source.")
        self.frames_dropped = Counter(
            "edgekit_frames_dropped_total", "Frames replaced by a newer one before inference (stale)."
        )
        self.frames_skipped = Counter(
            "edgekit_frames_skipped_total", "Frames a live source delivered above the --fps cap, not used."
        )
        self.frames_inferred = Counter("edgekit_frames_inferred_total", "Frames run through the model.")
        self.inference_errors = Counter("edgekit_inference_errors_total", "Frames whose inference raised.")
        self.inference_latency = Histogram(
            "edgekit_inference_latency_seconds", "Preprocess + infer + postprocess time of one frame."
        )
        self.e2e_latency = Histogram(
            "edgekit_e2e_latency_seconds", "Time from a frame's capture to its result being handed to publishers."
        )
        self.source_connected = Gauge(
            "edgekit_source_connected", "Streams whose source delivers frames (1 or 0 with one stream)."
        )
        self.source_reconnects = Counter(
            "edgekit_source_reconnects_total", "Times the source was lost (failed, or ended without --loop)."
        )
        self.source_errors = Counter(
            "edgekit_source_errors_total",
            "Exceptions caught in the capture thread (opening, reading or shaping a frame); each is retried.",
        )
        self.source_files_skipped = Counter(
            "edgekit_source_files_skipped_total",
            "Image-folder files skipped: too many pixels, too many bytes, unreadable header or undecodable.",
        )
        self.publish_failures = Counter(
            "edgekit_publish_failures_total", "Results a publisher failed to deliver, per publisher."
        )
        self.publish_dropped = Counter(
            "edgekit_publish_dropped_total", "Results dropped because a publisher's queue or buffer was full."
        )
        self.published = Counter(
            "edgekit_published_total",
            "Results a publisher delivered, per publisher (the stream counts frames sent to viewers).",
        )
        self.mqtt_connected = Gauge("edgekit_mqtt_connected", "1 while connected to the MQTT broker.")
        self.mqtt_buffered = Gauge("edgekit_mqtt_buffered", "Results waiting for the MQTT broker to come back.")
        self.mqtt_disconnects = Counter("edgekit_mqtt_disconnects_total", "Times the MQTT connection was lost.")
        self.predict_requests = Counter("edgekit_predict_requests_total", "POST /v1/predict requests, per status.")
        self.reloads = Counter("edgekit_bundle_reloads_total", "Bundle reloads, per result (ok, failed).")
        self.bundle_info = Gauge("edgekit_bundle_info", "The loaded bundle (value 1), by hash, model and backend.")
        # Per stream (label stream="ID"); the series above are the daemon's totals over its streams.
        self.stream_frames_captured = Counter("edgekit_stream_frames_captured_total", "Frames read, per stream.")
        self.stream_frames_dropped = Counter(
            "edgekit_stream_frames_dropped_total", "Frames replaced or pushed out before inference, per stream."
        )
        self.stream_frames_inferred = Counter("edgekit_stream_frames_inferred_total", "Frames inferred, per stream.")
        self.stream_reconnects = Counter("edgekit_stream_reconnects_total", "Times a stream's source was lost.")
        self.stream_connected = Gauge("edgekit_stream_connected", "1 while the stream's source delivers frames.")
        self.stream_frame_age = Gauge(
            "edgekit_stream_frame_age_seconds", "Age of the stream's last published result's frame at its publishing."
        )
        self.stream_last_frame_age = Gauge(
            "edgekit_stream_since_last_frame_seconds", "Seconds since the stream's source delivered a frame."
        )
        self.stream_fps = Gauge("edgekit_stream_inference_fps", "Results per second of the stream, last ~2 s.")
        self.batch_size = Histogram(
            "edgekit_batch_size", "Frames in one inference call (of one bundle, across streams).",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64),
        )  # fmt: skip
        self.collectors: list[Any] = []  # called before each render (the daemon sets the age gauges)
        # Detection bundles only (``note_bundle``): absent from /metrics while a classifier runs.
        self.detections: Counter | None = None
        self.frame_detections: Gauge | None = None
        self._detecting: tuple[frozenset[str], Gauge] | None = None  # the labels and the gauge, swapped as one

    def note_bundle(self, task: str, labels: Iterable[str]) -> None:
        """Called when a bundle is loaded: a detector's per-class series, one per label of its label list (at 0
        until counted), plus ``unknown_class`` for a class beyond the list. The labels come from the bundle
        alone, so the number of series is bounded by it. A later classifier leaves the series as they are."""
        if task != "detection":
            return
        if self.detections is None:
            self.detections = Counter("edgekit_detections_total",
                                      "Boxes in the results published from the source, per label (class).")  # fmt: skip
        # a new gauge: the labels of a bundle swapped out are no longer "in the last frame"
        frame = Gauge("edgekit_frame_detections", "Boxes in the last inferred frame from the source, per label.")
        names = frozenset(labels) | {OTHER_CLASS}
        zeros = dict.fromkeys(sorted(names), 0.0)
        self.detections.inc_each("label", zeros)
        frame.set_each("label", zeros)
        self._detecting = (names, frame)
        self.frame_detections = frame

    def count_detections(self, detections: Iterable[Mapping[str, object]]) -> None:
        """One frame's detections (``{"label": ...}`` items): add them to the totals, and set the last frame's
        count of every known label (0 for those not seen)."""
        detecting = self._detecting
        if self.detections is None or detecting is None:
            return
        known, frame = detecting
        counts = dict.fromkeys(known, 0.0)
        for d in detections:
            label = d.get("label")
            key = label if isinstance(label, str) and label in known else OTHER_CLASS
            counts[key] += 1
        self.detections.inc_each("label", {k: v for k, v in counts.items() if v})
        frame.set_each("label", counts)

    def counted(self, name: str, stream: str, amount: float = 1.0) -> None:
        """Add to the daemon's total ``name`` (e.g. "frames_captured") and to its stream's series."""
        getattr(self, name).inc(amount)
        getattr(self, f"stream_{name}").inc(amount, stream=stream)

    def stream_removed(self, stream: str) -> None:
        for m in self.all():
            if isinstance(m, Counter) and m.name.startswith("edgekit_stream_"):
                m.drop("stream", stream)

    def all(self) -> list[_Metric]:
        return [m for m in vars(self).values() if isinstance(m, _Metric)]

    def render(self) -> str:
        for collect in list(self.collectors):
            collect()
        self.source_connected.set(self.stream_connected.total())
        return "\n".join(line for m in self.all() for line in m.render()) + "\n"
