"""The classification task: decoding, its JSON form, its metrics, the budget's figures, the self-test check and
what the daemon draws, against hand-computed values (and, for the drawing, the daemon's drawing before the
task layer)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from edgekit.measure import evaluate as ev
from edgekit.quantize import budget as bud
from edgekit.serve.live import annotate
from edgekit.tasks import get_task
from edgekit.tasks.classification import Evaluation, Prediction, softmax

TASK = get_task("classification")
LOGITS = np.array([[1.0, 3.0, 2.0], [0.0, 0.0, 0.0], [5.0, -1.0, 4.0]], np.float32)


def test_decode_of_logits_is_softmax_then_stable_top_k():
    preds = TASK.decode(LOGITS, {"output": "logits", "activation": "softmax", "top_k": 3}, ["a", "b", "c"], top_k=2)
    e = np.exp([1.0 - 3.0, 0.0, 2.0 - 3.0])
    assert [p.class_ids for p in preds] == [[1, 2], [0, 1], [0, 2]]  # ties keep class order
    assert preds[0].top[0][0] == "b" and preds[0].score == pytest.approx(1 / e.sum(), rel=1e-6)
    assert preds[0].top[1][1] == pytest.approx(e[2] / e.sum(), rel=1e-6)
    assert preds[1].score == pytest.approx(1 / 3, rel=1e-6)
    assert isinstance(preds[0], Prediction) and preds[0].task == "classification"


def test_decode_of_probabilities_keeps_them_and_clamps_k_and_names_missing_labels():
    probs = np.array([[0.1, 0.2, 0.7]], np.float32)
    (pred,) = TASK.decode(probs, {"output": "probabilities"}, ["a"], top_k=10)
    assert pred.class_ids == [2, 1, 0] and [s for _, s in pred.top] == pytest.approx([0.7, 0.2, 0.1])
    assert [lab for lab, _ in pred.top] == ["class_2", "class_1", "a"]
    (one,) = TASK.decode(probs, {}, ["a", "b", "c"], top_k=0)  # no "output": logits, so softmax; k at least 1
    assert one.class_ids == [2] and one.score == pytest.approx(float(softmax(probs)[0, 2]))


def test_json_and_text_forms():
    pred = Prediction([("cat", 0.12345678), ("dog", 0.0000004)], [3, 5])
    expected = {"label": "cat", "score": 0.123457,
                "top_k": [{"label": "cat", "class_id": 3, "score": 0.123457},
                          {"label": "dog", "class_id": 5, "score": 0.0}]}  # fmt: skip
    assert pred.to_json() == expected and pred.to_dict() == expected
    assert pred.to_text() == "cat 0.123, dog 0.000"


def test_metrics_against_hand_computed_values():
    # 4 images, 6 classes; labels 0, 1, 1, 2
    outputs = np.array([
        [9, 1, 2, 3, 4, 5],  # top-1 0 (right)
        [0, 1, 9, 2, 3, 4],  # top-1 2 (wrong); class 1 is 5th of 6: in the top 5
        [0, 9, 1, 2, 3, 4],  # top-1 1 (right)
        [9, 8, 0, 7, 6, 5],  # top-1 0 (wrong); class 2 is last: not in the top 5
    ], np.float32)  # fmt: skip
    labels = np.array([0, 1, 1, 2])
    m = ev.evaluate(outputs, labels, ["a", "b", "c", "d"])
    assert isinstance(m, Evaluation) and ev.Evaluation is Evaluation
    assert m.top1 == 50.0 and m.top5 == 75.0 and m.score == 50.0
    assert m.per_class == {"a": 100.0, "b": 50.0, "c": 0.0}  # no image of "d": no entry
    assert m.summary() == {"top1": 50.0, "top5": 75.0} and m.predictions.tolist() == [0, 2, 1, 0]
    assert ev.evaluate(outputs, labels, ["a", "b", "c", "d"], task="classification").top1 == 50.0


def test_agreement_and_the_budget_figures():
    reference = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [1, 0]], np.float32)  # top-1 0 0 1 1 0
    outputs = np.array([[1, 0], [0, 1], [0, 1], [1, 0], [1, 0]], np.float32)  # top-1 0 1 1 0 0
    labels = np.array([0, 1, 1, 1, 1])
    assert TASK.agreement(outputs, reference) == 60.0
    assert ev.output_agreement(outputs, reference) == 60.0 and ev.agreement(np.array([1, 2]), np.array([1, 3])) == 50.0
    c = TASK.compare(outputs, reference, labels)
    # reference right on 0, 2, 3 (60%); outputs right on 0, 1, 2 (60%); exactly one right on 1 and 3
    assert (c.agreement, c.reference_score, c.score, c.discordance) == (60.0, 60.0, 60.0, 0.4)
    unlabelled = TASK.compare(outputs, reference, None)
    assert unlabelled.agreement == 60.0 and math.isnan(unlabelled.score) and math.isnan(unlabelled.discordance)

    part = bud.Part(np.zeros((5, 1), np.float32), labels, reference)
    f = part.figures(outputs)
    assert (f.agreement, f.fp32_top1, f.top1, f.discordance) == (60.0, 60.0, 60.0, 0.4)
    assert f.nmse == pytest.approx(4 / 5)  # four of five rows differ by a swap: |d|^2 = 2 each, |ref|^2 = 1 each
    f = bud.Part(np.zeros((5, 1), np.float32), None, reference).figures(outputs)
    assert f.agreement == 60.0 and math.isnan(f.top1) and f.to_dict()["top1"] is None


def test_selftest_mismatches_count_top1_and_the_margin_is_the_top2_gap_over_the_range():
    expected = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], np.float32)
    outputs = np.array([[0, 0.9, 0.1], [0.2, 0.8, 0], [0, 0, 1]], np.float32)
    assert TASK.selftest_mismatches(outputs, expected) == 1 and TASK.mismatch_name == "top-1 mismatches"
    assert TASK.selftest_margin(outputs) == pytest.approx([0.8 / 0.9, 0.6 / 0.8, 1.0])


def test_the_postprocess_record_is_the_manifests():
    assert TASK.postprocess_record("logits", (-1, 10)) == {"output": "logits", "activation": "softmax", "top_k": 5}
    assert TASK.postprocess_record("probabilities", (1, 3)) == {"output": "probabilities", "activation": "none",
                                                                "top_k": 3}  # fmt: skip


def _annotate_before_the_task_layer(image, result):
    """The daemon's drawing as it was before the task layer (a copy, to pin the pixels)."""
    h, w = image.shape[:2]
    if w < 480:
        factor = int(np.ceil(480 / w))
        image = cv2.resize(image, (w * factor, h * factor), interpolation=cv2.INTER_NEAREST)
        h, w = image.shape[:2]
    else:
        image = image.copy()
    scale = max(0.5, w / 800)
    thick = max(1, round(scale * 2))
    lines = [(f"{result['label']} {result['score'] * 100:.0f}%", (255, 255, 255)),
             (f"{result['fps']:.1f} FPS  infer {result['inference_ms']:.1f} ms  e2e {result['e2e_ms']:.1f} ms",
              (0, 255, 255))]  # fmt: skip
    y = 0
    for text, colour in lines:
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        cv2.rectangle(image, (0, y), (tw + 12, y + th + base + 12), (0, 0, 0), -1)
        cv2.putText(image, text, (6, y + th + 6), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
        y += th + base + 12
    return image


def test_draw_puts_the_label_band_top_left_and_nothing_else():
    image = np.full((300, 800, 3), 128, np.uint8)
    y = TASK.draw(image, {"label": "cat", "score": 0.87})
    assert 10 < y < 100
    band = image[:y, :150]
    assert (band == 0).all(axis=2).mean() > 0.5 and (band == 255).all(axis=2).any()  # black band, white text
    # below it (its rectangle's edge is row y, where the next band starts) and right of it: untouched
    assert (image[y + 1 :] == 128).all() and (image[:, 300:] == 128).all()


@pytest.mark.parametrize("size", [(32, 32), (240, 320), (480, 1280)])
def test_the_daemons_drawing_is_unchanged(size):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    result = {"label": "horse", "score": 0.4567, "fps": 29.97, "inference_ms": 1.234, "e2e_ms": 5.678}
    before = frame.copy()
    drawn = annotate(frame, result)
    assert (frame == before).all()  # a copy is drawn on
    assert np.array_equal(drawn, _annotate_before_the_task_layer(frame, result))
