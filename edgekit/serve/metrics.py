"""Counters, gauges and histograms, rendered in the Prometheus text format (0.0.4).

Hand-written rather than prometheus_client: the daemon needs a dozen series, and this keeps its import
time and footprint small. Every method is thread-safe.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

Labels = tuple[tuple[str, str], ...]

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
        self.source_connected = Gauge("edgekit_source_connected", "1 while the source delivers frames, else 0.")
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

    def all(self) -> list[_Metric]:
        return [m for m in vars(self).values() if isinstance(m, _Metric)]

    def render(self) -> str:
        return "\n".join(line for m in self.all() for line in m.render()) + "\n"
