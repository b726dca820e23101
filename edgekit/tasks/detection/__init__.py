"""Object detection's numerical core, in NumPy: the ``[detection]`` spec section, decoding of YOLOv8, YOLOv5,
SSD and already-decoded outputs, NMS, the letterbox geometry and the build-time metrics.

``DetectionConfig.from_dict`` reads and checks the spec section; ``Decoder(config, input_hw)`` turns a batch's
outputs into one ``Detections`` a image, in the original image's pixels; ``nms``/``weighted_nms`` and
``fit_image``/``to_source`` are the parts it is made of; ``metrics`` holds COCO mAP, precision/recall/F1,
agreement and the INT8 threshold re-tuning. Importing this imports numpy only (pycocotools on ``coco_map``).
"""

from __future__ import annotations

from edgekit.tasks.detection.anchors import AnchorGenerator, ssd_anchors
from edgekit.tasks.detection.config import FORMATS, DetectionConfig, OutputLayout
from edgekit.tasks.detection.decode import Candidates, Decoder
from edgekit.tasks.detection.geometry import FITS, Fit, fit_image, to_input, to_source
from edgekit.tasks.detection.result import Detections
from edgekit.tasks.detection.suppression import box_iou, nms, weighted_nms

__all__ = [
    "FITS",
    "FORMATS",
    "AnchorGenerator",
    "Candidates",
    "Decoder",
    "DetectionConfig",
    "Detections",
    "Fit",
    "OutputLayout",
    "box_iou",
    "fit_image",
    "nms",
    "ssd_anchors",
    "to_input",
    "to_source",
    "weighted_nms",
]
