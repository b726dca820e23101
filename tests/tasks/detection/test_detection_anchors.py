"""SSD anchors: MediaPipe's BlazeFace (896) and TF's SSD MobileNet (1917) configurations, hand-computed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgekit.errors import UsageError
from edgekit.tasks.detection import AnchorGenerator, ssd_anchors

BLAZEFACE = AnchorGenerator(strides=(8, 16, 16, 16), min_scale=0.1484375, max_scale=0.75, fixed_anchor_size=True)
SSD_MOBILENET = AnchorGenerator(
    strides=(16, 32, 64, 128, 256, 512), min_scale=0.2, max_scale=0.95,
    aspect_ratios=(1.0, 2.0, 0.5, 3.0, 0.3333), reduce_boxes_in_lowest_layer=True,
)  # fmt: skip


def test_blazeface_anchors_merge_the_layers_of_equal_stride():
    a = ssd_anchors(BLAZEFACE, (128, 128))
    assert a.shape == (896, 4) and a.dtype == np.float32  # 16 x 16 x 2 + 8 x 8 x 6
    assert (a[:, 2:] == 1).all()  # fixed anchor size
    np.testing.assert_allclose(a[0], [0.5 / 16, 0.5 / 16, 1, 1])
    np.testing.assert_allclose(a[1], a[0])  # the interpolated anchor of the same cell
    np.testing.assert_allclose(a[2], [1.5 / 16, 0.5 / 16, 1, 1])  # next column
    np.testing.assert_allclose(a[32], [0.5 / 16, 1.5 / 16, 1, 1])  # next row
    np.testing.assert_allclose(a[512:518, :2], [[0.5 / 8, 0.5 / 8]] * 6)  # 3 layers x 2 anchors, one cell
    np.testing.assert_allclose(a[-1], [7.5 / 8, 7.5 / 8, 1, 1])


def test_ssd_mobilenet_anchors_have_scales_ratios_and_the_reduced_lowest_layer():
    a = ssd_anchors(SSD_MOBILENET, (300, 300))
    assert a.shape == (1917, 4)  # 19 x 19 x 3 + (10^2 + 5^2 + 3^2 + 2^2 + 1^2) x 6
    c0 = 0.5 / 19
    r2 = math.sqrt(2)
    np.testing.assert_allclose(a[:3], [[c0, c0, 0.1, 0.1], [c0, c0, 0.2 * r2, 0.2 / r2], [c0, c0, 0.2 / r2, 0.2 * r2]],
                               rtol=1e-6)  # fmt: skip
    layer1 = a[1083:1089]  # first cell of the 10 x 10 layer: scale 0.35, the interpolated one sqrt(0.35 * 0.5)
    r3, r13 = math.sqrt(3.0), math.sqrt(0.3333)
    expected_w = [0.35, 0.35 * r2, 0.35 / r2, 0.35 * r3, 0.35 * r13, math.sqrt(0.35 * 0.5)]
    expected_h = [0.35, 0.35 / r2, 0.35 * r2, 0.35 / r3, 0.35 / r13, math.sqrt(0.35 * 0.5)]
    np.testing.assert_allclose(layer1[:, 0:2], [[0.05, 0.05]] * 6, rtol=1e-6)
    np.testing.assert_allclose(layer1[:, 2], expected_w, rtol=1e-6)
    np.testing.assert_allclose(layer1[:, 3], expected_h, rtol=1e-6)
    last = a[-6:]  # the 1 x 1 layer: scale 0.95, the interpolated one sqrt(0.95 * 1.0)
    np.testing.assert_allclose(last[:, :2], [[0.5, 0.5]] * 6)
    np.testing.assert_allclose(last[[0, 5], 2], [0.95, math.sqrt(0.95)], rtol=1e-6)


def test_offsets_feature_map_sizes_input_size_and_one_layer():
    gen = AnchorGenerator(strides=(32,), min_scale=0.2, max_scale=0.4, anchor_offset_x=0.0, anchor_offset_y=1.0,
                          interpolated_scale_aspect_ratio=0.0)  # fmt: skip
    a = ssd_anchors(gen, (64, 96))  # grid 2 rows x 3 columns; one layer: scale (0.2 + 0.4) / 2
    np.testing.assert_allclose(a, [[x / 3, y / 2, 0.3, 0.3] for y in (1, 2) for x in (0, 1, 2)], rtol=1e-6)
    sized = AnchorGenerator(strides=(8, 16), min_scale=0.1, max_scale=0.5, feature_map_sizes=((3, 2), (1, 1)))
    assert ssd_anchors(sized, (999, 999)).shape == ((3 * 2 + 1) * 2, 4)
    fixed = AnchorGenerator(strides=(16,), min_scale=0.1, max_scale=0.5, input_size=(64, 32))
    assert ssd_anchors(fixed, (512, 512)).shape == (4 * 2 * 2, 4)  # the generator's own input size wins


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"strides": (), "min_scale": 0.1, "max_scale": 0.2}, "strides"),
    ({"strides": (8, 0), "min_scale": 0.1, "max_scale": 0.2}, "one positive stride a layer"),
    ({"strides": (8,), "min_scale": 0.5, "max_scale": 0.2}, "0 < min_scale <= max_scale"),
    ({"strides": (8,), "min_scale": 0.1, "max_scale": 0.2, "aspect_ratios": (1.0, -2.0)}, "positive ratios"),
    ({"strides": (8, 16), "min_scale": 0.1, "max_scale": 0.2, "feature_map_sizes": ((2, 2),)}, "one positive"),
])  # fmt: skip
def test_bad_generator_parameters_are_one_line_usage_errors(kwargs, message):
    with pytest.raises(UsageError, match=r"\[detection.anchor_generator\]") as err:
        AnchorGenerator(**kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)
