"""The [detection] spec section: every key checked (one UsageError line naming it and the fix), the manifest
record round-trips, and outputs that do not match are one ModelError line naming expected and actual shapes."""

from __future__ import annotations

import json

import pytest

from edgekit.errors import ModelError, UsageError
from edgekit.tasks.detection import AnchorGenerator, DetectionConfig

SSD = {"format": "ssd", "score_activation": "sigmoid", "anchors": [[0.5, 0.5, 0.1, 0.1]]}
GEN = {"strides": [8, 16, 16, 16], "min_scale": 0.1484375, "max_scale": 0.75, "fixed_anchor_size": True}


@pytest.mark.parametrize(("section", "message"), [
    ({"format": "yolov8", "iou": 0.5}, "unknown key '[detection] iou'; allowed: anchor_generator, anchors,"),
    ({}, "[detection] needs 'format', one of yolov8, yolov5, ssd, boxes"),
    ({"format": "yolo"}, "[detection] format 'yolo' is not one of yolov8, yolov5, ssd, boxes"),
    ({"format": "yolov8", "anchors": [[0.5, 0.5, 0.1, 0.1]]},
     "[detection] anchors applies to format 'ssd' only, not 'yolov8'; remove it or fix 'format'"),
    ({"format": "ssd", "score_activation": "none", "normalized": True, "anchors": [[0, 0, 1, 1]]},
     "[detection] normalized applies to formats 'boxes', 'yolov5', 'yolov8' only, not 'ssd'"),
    ({"format": "yolov8", "score_threshold": 1.5},
     "[detection] score_threshold 1.5 is out of range; it must be between 0 and 1"),
    ({"format": "yolov8", "score_threshold": "0.5"},
     "[detection] score_threshold '0.5' is not a number; write e.g. score_threshold = 0.25"),
    ({"format": "yolov8", "max_detections": 10.0},
     "[detection] max_detections 10.0 is not an integer; write e.g. max_detections = 100"),
    ({"format": "yolov8", "num_classes": True}, "[detection] num_classes True is not an integer"),
    ({"format": "yolov8", "num_classes": 0}, "[detection] num_classes 0 is out of range; it must be at least 1"),
    ({"format": "yolov8", "class_agnostic": 1}, "[detection] class_agnostic 1 is not true or false"),
    ({"format": "yolov8", "score_activation": "softmax"}, "score_activation 'softmax' applies to format 'ssd' only"),
    ({"format": "yolov8", "nms": "soft"}, "[detection] nms 'soft' is not one of hard, weighted"),
    ({"format": "yolov8", "fit": "crop"}, "[detection] fit 'crop' is not one of letterbox, stretch"),
    ({"format": "yolov8", "pad_value": 300}, "pad_value 300 is out of range; it must be a pixel value, 0 to 255"),
    ({"format": "yolov8", "max_candidates": 10}, "max_candidates 10 is below max_detections 100; raise max_cand"),
    ({"format": "ssd", "anchors": [[0.5, 0.5, 0.1, 0.1]]}, "[detection] format 'ssd' needs 'score_activation'"),
    ({"format": "ssd", "score_activation": "sigmoid"}, "format 'ssd' needs its anchors: add 'anchors'"),
    ({**SSD, "anchor_generator": GEN},
     "[detection] format 'ssd' needs its anchors: give 'anchors' or [detection.anchor_generator], not both"),
    ({**SSD, "anchors": [[0.5, 0.5, 0.1]]}, "[detection] anchors[0] [0.5, 0.5, 0.1] is not [x_centre, y_centre,"),
    ({**SSD, "anchors": [[0.5, 0.5, 0.1, 0]]}, "anchors[0] [0.5, 0.5, 0.1, 0] has a width or height that is not"),
    ({**SSD, "anchors": []}, "[detection] anchors must be a list of [x_centre"),
    ({**SSD, "variances": [0.1, 0.2]}, "[detection] variances [0.1, 0.2] must be a list of 4 numbers"),
    ({**SSD, "variances": [0.1, 0.1, 0.2, 0]}, "variances [0.1, 0.1, 0.2, 0.0] must be four positive numbers"),
    ({**SSD, "box_coding": "log"}, "[detection] box_coding 'log' is not one of exponential, linear"),
    ({**SSD, "box_order": "xyxy"}, "[detection] box_order 'xyxy' is not one of xywh, yxhw"),
    ({"format": "ssd", "score_activation": "none", "anchor_generator": {"strides": [8], "min_scale": 0.1}},
     "[detection.anchor_generator] needs 'max_scale'"),
    ({"format": "ssd", "score_activation": "none", "anchor_generator": {**GEN, "offset": 1}},
     "unknown key '[detection.anchor_generator] offset'; allowed: anchor_offset_x,"),
    ({"format": "ssd", "score_activation": "none", "anchor_generator": {**GEN, "strides": [8.5]}},
     "[detection.anchor_generator] strides 8.5 is not an integer"),
    ({"format": "ssd", "score_activation": "none", "anchor_generator": [8, 16]},
     "[detection] anchor_generator must be a table"),
    ({"format": "boxes", "iou_threshold": 0.5},
     "[detection] iou_threshold has no effect with nms_in_graph = true (the graph's NMS is used); remove it, or "
     "set nms_in_graph = false to run NMS on the host"),
    ({"format": "boxes", "graph_score_threshold": 0.5, "score_threshold": 0.25},
     "[detection] score_threshold 0.25 is below the graph's baked graph_score_threshold 0.5, which its NMS already "
     "applied; set score_threshold to 0.5 or above, or fix graph_score_threshold"),
    ({"format": "boxes", "graph_max_detections": 100, "max_detections": 300},
     "max_detections 300 is above the graph's baked graph_max_detections 100"),
    ({"format": "boxes", "nms_in_graph": False, "graph_iou_threshold": 0.5},
     "[detection] graph_* thresholds describe an NMS inside the graph; remove them or set nms_in_graph = true"),
    ({"format": "boxes", "graph_iou_threshold": 1.5}, "graph_iou_threshold 1.5 is out of range"),
    ({"format": "boxes", "graph_score_threshold": "high"}, "[detection] graph_score_threshold 'high' is not a number"),
    ({"format": "yolov8", "nms_in_graph": True}, "[detection] nms_in_graph applies to format 'boxes' only"),
])  # fmt: skip
def test_a_bad_section_is_one_usage_error_line_naming_the_key(section, message):
    with pytest.raises(UsageError) as err:
        DetectionConfig.from_dict(section)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_section_that_is_not_a_table_and_a_direct_constructor_are_checked_too():
    with pytest.raises(UsageError, match="must be a table of keys, not list"):
        DetectionConfig.from_dict([])  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="anchors applies to format 'ssd' only"):
        DetectionConfig(format="yolov8", anchors=((0.5, 0.5, 0.1, 0.1),))
    with pytest.raises(UsageError, match="iou_threshold 2 is out of range"):
        DetectionConfig(format="yolov5", iou_threshold=2)


def test_defaults_and_the_manifest_record_round_trip():
    c = DetectionConfig.from_dict({"format": "yolov8"})
    assert (c.fit, c.pad_value, c.score_threshold, c.iou_threshold, c.max_detections) == ("letterbox", 114, 0.25,
                                                                                          0.45, 100)  # fmt: skip
    assert (c.class_agnostic, c.nms, c.nms_in_graph, c.num_classes) == (False, "hard", False, None)
    sections = [
        {"format": "yolov8", "num_classes": 80, "fit": "stretch", "multi_label": True, "score_activation": "sigmoid"},
        {"format": "yolov5", "score_threshold": 0.001, "max_detections": 300, "nms": "weighted"},
        {**SSD, "box_coding": "linear", "variances": [0.01, 0.01, 0.02, 0.02], "background_class": True},
        {
            "format": "ssd",
            "score_activation": "softmax",
            "anchor_generator": {**GEN, "feature_map_sizes": [[2, 2]] * 4},
        },
        {"format": "boxes", "graph_score_threshold": 0.3, "graph_iou_threshold": 0.6, "graph_max_detections": 50},
        {"format": "boxes", "nms_in_graph": False, "normalized": True, "class_agnostic": True},
    ]
    for section in sections:
        c = DetectionConfig.from_dict(section)
        record = c.to_dict()
        assert json.loads(json.dumps(record)) == record  # JSON's types only
        assert DetectionConfig.from_dict(record) == c
        for key, value in section.items():
            assert record[key] == ({**record[key], **value} if isinstance(value, dict) else value)
    boxes = DetectionConfig.from_dict(sections[4]).to_dict()
    assert "iou_threshold" not in boxes and boxes["score_threshold"] == 0.3 and boxes["max_detections"] == 50
    gen = DetectionConfig.from_dict(sections[3]).anchor_generator
    assert isinstance(gen, AnchorGenerator) and gen.strides == (8, 16, 16, 16) and gen.feature_map_sizes[0] == (2, 2)


def test_effective_variances_and_graph_bounds():
    exp = DetectionConfig.from_dict(SSD)
    assert exp.effective_variances((100, 200)) == (0.1, 0.1, 0.2, 0.2)
    lin = DetectionConfig.from_dict({**SSD, "box_coding": "linear"})
    assert lin.effective_variances((100, 200)) == (1 / 200, 1 / 100, 1 / 200, 1 / 100)
    baked = DetectionConfig.from_dict({"format": "boxes", "graph_score_threshold": 0.3, "graph_max_detections": 50})
    assert baked.bounded(0.001, 100) == (0.3, 50) and baked.bounded(0.5, 10) == (0.5, 10)
    assert DetectionConfig(format="yolov8").bounded(0.001, 300) == (0.001, 300)


@pytest.mark.parametrize(("section", "shapes", "layout"), [
    ({"format": "yolov8"}, [[1, 84, 8400]], (0, None, 80, 8400)),
    ({"format": "yolov8", "num_classes": 80}, [[-1, 84, "anchors"]], (0, None, 80, None)),
    ({"format": "yolov5"}, [[1, 25200, 85]], (0, None, 80, 25200)),
    ({"format": "boxes"}, [[1, 300, 6]], (0, None, None, 300)),
    ({**SSD, "anchors": [[0.5, 0.5, 0.1, 0.1]] * 1917}, [[1, 1917, 4], [1, 1917, 91]], (0, 1, 91, 1917)),
    ({**SSD, "background_class": True}, [[1, 1, 91], [1, 1, 4]], (1, 0, 90, 1)),
    ({**SSD, "num_classes": 3, "background_class": True}, [[1, 1, 4], [1, 1, 4]], (0, 1, 3, 1)),
    ({**SSD, "num_classes": 1}, [[1, 1, 1], [1, 1, 16]], (1, 0, 1, 1)),
])  # fmt: skip
def test_check_outputs_says_which_output_is_which(section, shapes, layout):
    out = DetectionConfig.from_dict(section).check_outputs(shapes)
    assert (out.boxes, out.scores, out.num_classes, out.num_candidates) == layout


@pytest.mark.parametrize(("section", "shapes", "message"), [
    ({"format": "yolov8", "num_classes": 80}, [[1, 85, 8400]],
     "the model's outputs [1, 85, 8400] do not match [detection] format 'yolov8': expected one output "
     "[batch, 84, candidates] (4 box values, then 80 classes); fix num_classes (or the labels) or format"),
    ({"format": "yolov8", "num_classes": 80}, [[1, 8400, 84]],
     "the model's outputs [1, 8400, 84] (the output looks transposed) do not match [detection] format 'yolov8'"),
    ({"format": "yolov8"}, [[1, 84, 8400], [1, 32, 160, 160]],
     "the model's outputs [1, 84, 8400], [1, 32, 160, 160] do not match [detection] format 'yolov8': expected one "
     "output [batch, 4 + C, candidates] (4 box values, then C classes)"),
    ({"format": "yolov8"}, [[84, 8400]], "the model's outputs [84, 8400] do not match"),
    ({"format": "yolov8"}, [[1, 4, 8400]], "outputs [1, 4, 8400] do not match"),
    ({"format": "yolov5", "num_classes": 80}, [[1, 85, 25200]], "outputs [1, 85, 25200] (the output looks transposed)"),
    ({"format": "yolov5", "num_classes": 2}, [[1, 100, 6]],
     "expected one output [batch, candidates, 7] (4 box values, objectness, then 2 classes)"),
    ({"format": "boxes"}, [[1, 100, 7]],
     "outputs [1, 100, 7] do not match [detection] format 'boxes': expected one output [batch, candidates, 6] "
     "(x1, y1, x2, y2, score, class); fix format"),
    ({**SSD, "num_classes": 90, "background_class": True}, [[1, 1, 4], [1, 1, 90]],
     "outputs [1, 1, 4], [1, 1, 90] do not match [detection] format 'ssd': expected two outputs, box deltas "
     "[batch, candidates, 4 or more] and scores [batch, candidates, 91] (90 classes and the background); fix "
     "num_classes (or the labels), background_class or format"),
    ({**SSD}, [[1, 1, 4]], "outputs [1, 1, 4] do not match [detection] format 'ssd': expected two outputs"),
    ({**SSD}, [[1, 10, 4], [1, 12, 3]], "the same candidate count in both"),
    ({**SSD}, [[1, 10, 4], [1, 10, 3]],
     "the model's outputs [1, 10, 4], [1, 10, 3] have 10 candidates, but the [detection] anchors list gives 1 "
     "anchors; fix the anchors"),
    ({"format": "ssd", "score_activation": "sigmoid", "anchor_generator": GEN}, [[1, 900, 16], [1, 900, 1]],
     "have 900 candidates, but the [detection] anchor_generator makes 896 anchors"),
])  # fmt: skip
def test_outputs_that_do_not_match_are_one_model_error_line(section, shapes, message):
    with pytest.raises(ModelError) as err:
        DetectionConfig.from_dict(section).check_outputs(shapes, (128, 128))
    assert message in str(err.value) and "\n" not in str(err.value)
