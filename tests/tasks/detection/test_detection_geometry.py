"""Letterbox and stretch: the forward parameters and the inverse mapping of boxes, hand-computed."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import UsageError
from edgekit.tasks.detection import fit_image, to_input, to_source


def test_letterbox_of_a_landscape_image_pads_top_and_bottom():
    fit = fit_image((480, 640), (640, 640))
    assert fit.resized_hw == (480, 640) and fit.padding == (80, 80, 0, 0)
    assert (fit.scale_x, fit.scale_y) == (1.0, 1.0)
    box = to_source(np.array([[100, 180, 200, 280]]), fit)
    assert box.dtype == np.float32 and box.tolist() == [[100, 100, 200, 200]]


def test_letterbox_of_a_full_hd_frame_scales_by_a_third():
    fit = fit_image((1080, 1920), (640, 640))
    assert fit.resized_hw == (360, 640) and fit.padding == (140, 140, 0, 0)
    assert fit.scale_x == pytest.approx(1 / 3) and fit.scale_y == pytest.approx(1 / 3)
    np.testing.assert_allclose(to_source(np.array([[64, 172, 128, 204]]), fit), [[192, 96, 384, 192]], rtol=1e-6)


def test_letterbox_puts_an_odd_pixel_at_the_bottom_and_scales_each_axis_by_its_rounded_size():
    fit = fit_image((100, 200), (65, 65))
    # r = min(65/100, 65/200) = 0.325: 200 -> 65, 100 -> round(32.5) = 32; 33 rows of padding, 16 above
    assert fit.resized_hw == (32, 65) and fit.padding == (16, 17, 0, 0)
    assert (fit.scale_x, fit.scale_y) == (65 / 200, 32 / 100)
    np.testing.assert_allclose(to_source(np.array([[0, 16, 65, 48]]), fit), [[0, 0, 200, 100]], rtol=1e-6)
    np.testing.assert_allclose(to_source(np.array([[13, 24, 26, 32]]), fit), [[40, 25, 80, 50]], rtol=1e-6)


def test_letterbox_of_a_portrait_image_pads_left_and_right():
    fit = fit_image((640, 320), (320, 320))
    assert fit.resized_hw == (320, 160) and fit.padding == (0, 0, 80, 80)
    np.testing.assert_allclose(to_source(np.array([[80, 0, 240, 320]]), fit), [[0, 0, 320, 640]])


def test_stretch_scales_each_axis_and_pads_nothing():
    fit = fit_image((480, 640), (320, 320), "stretch")
    assert fit.resized_hw == (320, 320) and fit.padding == (0, 0, 0, 0)
    assert (fit.scale_x, fit.scale_y) == (0.5, 320 / 480)
    np.testing.assert_allclose(to_source(np.array([[160, 160, 320, 320]]), fit), [[320, 240, 640, 480]], rtol=1e-6)


def test_boxes_are_clipped_to_the_source_image_unless_asked_not_to():
    fit = fit_image((480, 640), (640, 640))
    box = np.array([[-10, 50, 700, 600], [0, 0, 640, 60]], np.float32)  # the second lies in the top padding
    assert to_source(box, fit).tolist() == [[0, 0, 640, 480], [0, 0, 640, 0]]
    assert to_source(box, fit, clip=False).tolist() == [[-10, -30, 700, 520], [0, -80, 640, -20]]


def test_to_input_is_the_inverse_of_to_source():
    rng = np.random.default_rng(0)
    for source, mode in (((1080, 1920), "letterbox"), ((333, 517), "letterbox"), ((333, 517), "stretch")):
        fit = fit_image(source, (416, 640), mode)
        boxes = np.sort(rng.uniform(0, min(source), (20, 4)), axis=1).astype(np.float32)
        np.testing.assert_allclose(to_source(to_input(boxes, fit), fit, clip=False), boxes, rtol=1e-5, atol=1e-3)


def test_bad_sizes_and_modes_are_one_line_usage_errors():
    with pytest.raises(UsageError, match=r"source image size \[0, 10\] is not positive"):
        fit_image((0, 10), (64, 64))
    with pytest.raises(UsageError, match="input size"):
        fit_image((10, 10), (64,))
    with pytest.raises(UsageError, match="fit 'crop' is not one of letterbox, stretch"):
        fit_image((10, 10), (64, 64), "crop")
