"""A second task plugs in without a change to the runtime, the daemon, evaluation or the budget: a toy task,
registered in-process, is what a bundle naming it is decoded, self-tested, published, drawn and scored by."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest
from serve.serve_support import serve_bundle  # noqa: F401
from support import SAMPLE

from edgekit.bundle.manifest import MANIFEST
from edgekit.errors import UsageError
from edgekit.measure import evaluate as ev
from edgekit.quantize import budget as bud
from edgekit.runtime import load_bundle
from edgekit.serve.capture import Frame
from edgekit.serve.engine import Engine
from edgekit.serve.live import LiveHub, StreamPublisher
from edgekit.serve.metrics import Metrics
from edgekit.serve.pipeline import BatchWorker, Item
from edgekit.tasks import register_task, task_names, unregister_task
from edgekit.tasks.base import Comparison, Task, TaskResult
from edgekit.tasks.base import Metrics as TaskMetrics

IMAGE = next(p for p in sorted((SAMPLE / "test" / "cat").iterdir()))
RED = (0, 0, 255)


@dataclass(frozen=True)
class Peak(TaskResult):
    task: ClassVar[str] = "toy-peak"
    index: int
    value: float

    def to_json(self) -> dict[str, Any]:
        return {"peak": self.index, "value": round(self.value, 3)}

    def to_text(self) -> str:
        return f"peak at {self.index}"


@dataclass(frozen=True)
class Hits(TaskMetrics):
    hit: float

    def summary(self) -> dict[str, Any]:
        return {"hit": self.hit}

    @property
    def score(self) -> float:
        return self.hit


class PeakTask(Task):
    """The index of the largest output: not a classifier's result type, JSON, drawing or metrics."""

    name = "toy-peak"
    metric = "hit"
    mismatch_name = "peak mismatches"

    def __init__(self) -> None:
        self.selftests = 0

    def decode(self, outputs, postprocess, labels, *, top_k=5, sizes=None):
        return [Peak(int(row.argmax()), float(row.max())) for row in outputs]

    def postprocess_record(self, output_kind, output_shape, *, spec=None):
        return {"output": output_kind}

    def selftest_margin(self, outputs):
        return outputs.max(1) - outputs.min(1)

    def evaluate(self, outputs, labels, names):
        return Hits(100.0 * float((outputs.argmax(1) == labels).mean()))

    def agreement(self, outputs, reference):
        return 100.0 * float((outputs.argmax(1) == reference.argmax(1)).mean())

    def compare(self, outputs, reference, labels):
        return Comparison(self.agreement(outputs, reference))

    def selftest_mismatches(self, outputs, expected):
        self.selftests += 1
        return int((outputs.argmax(1) != expected.argmax(1)).sum())

    def draw(self, image, result):
        h, w = image.shape[:2]
        cv2.rectangle(image, (w - 40, h - 40), (w - 1, h - 1), RED, -1)  # a red square, bottom right
        return 0


@pytest.fixture
def peak_task():
    task = register_task(PeakTask())
    yield task
    unregister_task(task.name)


@pytest.fixture
def peak_bundle(serve_bundle, tmp_path):  # noqa: F811
    bundle = tmp_path / "peak.edgekit"
    shutil.copytree(serve_bundle, bundle)
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["model"]["task"] = "toy-peak"
    (bundle / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return bundle


def test_registering_needs_a_free_name_and_a_task(peak_task):
    assert task_names() == ("classification", "detection", "toy-peak")
    with pytest.raises(UsageError, match="already registered"):
        register_task(PeakTask())
    with pytest.raises(TypeError):
        register_task(PeakTask)  # the class, not an instance


def test_the_runtime_decodes_and_self_tests_through_the_bundles_task(peak_task, peak_bundle):
    with load_bundle(peak_bundle) as bundle:
        assert bundle.task is peak_task and peak_task.selftests >= 1  # the float graph, then the frame graph
        assert bundle.selftest_result.passed and "0 peak mismatches" in bundle.selftest_result.describe()
        result = bundle.predict(IMAGE)
        outputs = bundle.infer(bundle.preprocess(IMAGE)[None])
    assert isinstance(result, Peak) and result.index == int(outputs.argmax())
    assert result.to_dict() == {"peak": result.index, "value": round(float(outputs.max()), 3)}


def test_the_daemon_publishes_and_draws_the_tasks_result(peak_task, peak_bundle):
    engine = Engine(str(peak_bundle))

    class Recorder:  # stands in for the Fanout: keeps what the worker publishes
        def __init__(self) -> None:
            self.published: list = []

        def publish(self, result, image=None):
            self.published.append((result, image))

    frame = Frame(cv2.imread(str(IMAGE)), seq=1, captured_at=time.time(), captured_mono=time.perf_counter())
    fanout = Recorder()
    worker = BatchWorker(engine=engine, board=None, streams=tuple, fanout=fanout, metrics=Metrics(), device_id="d",
                         stop=None)  # fmt: skip
    try:
        worker._handle([Item("cam0", frame)])
    finally:
        engine.close()
    ((result, image),) = fanout.published
    message = json.loads(result.json)
    assert result.task == "toy-peak" and {"peak", "value"} <= set(message) and "top_k" not in message
    assert message["device"] == "d" and message["seq"] == 1

    async def stream_one_frame() -> bytes:
        hub = LiveHub()
        viewer = hub.frames.subscribe()
        assert StreamPublisher(hub, fps=100, quality=95).deliver(dataclasses.replace(result, image=image))
        return await asyncio.wait_for(viewer.get(), 5)

    jpeg = cv2.imdecode(np.frombuffer(asyncio.run(stream_one_frame()), np.uint8), cv2.IMREAD_COLOR)
    corner = jpeg[-30:, -30:].astype(int)
    assert (np.abs(corner - RED).max(axis=2) < 60).mean() > 0.9  # the task's red square, bottom right
    assert (jpeg[:20, :100].max(axis=2) < 30).any()  # the daemon's own FPS line, top left


def test_evaluation_and_the_budget_go_through_the_task(peak_task):
    outputs = np.array([[0, 1], [1, 0], [1, 0]], np.float32)
    reference = np.array([[0, 1], [0, 1], [1, 0]], np.float32)
    hits = ev.evaluate(outputs, np.array([1, 1, 0]), ["a", "b"], task="toy-peak")
    assert hits.summary() == {"hit": pytest.approx(200 / 3)}
    assert ev.output_agreement(outputs, reference, task=peak_task) == pytest.approx(200 / 3)
    figures = bud.Part(np.zeros((3, 1)), None, reference, task=peak_task).figures(outputs)
    assert figures.agreement == pytest.approx(200 / 3)
