"""EasyOCR pipeline pieces on hand-made inputs whose expected outputs were worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.ocr.easyocr import detect, group, recognize

pytestmark = pytest.mark.unit


def _maps(shape=(40, 60)) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(shape, np.float32), np.zeros(shape, np.float32)


def test_box_is_component_dilated_by_niter():
    text, link = _maps()
    text[10:15, 10:30] = 0.9  # 20 x 5 component, area 100
    # niter = int(sqrt(100 * 5 / (20 * 5)) * 2) = 4 -> 5x5 kernel grows the blob 2 px each way.
    found = detect.boxes(text, link)
    np.testing.assert_array_equal(found, [[[8, 8], [31, 8], [31, 16], [8, 16]]])


def test_weak_and_tiny_components_are_dropped():
    text, link = _maps()
    text[5:10, 5:25] = 0.6  # above low_text but never reaches text_threshold 0.7
    text[30:33, 40:43] = 0.9  # 9 pixels: below the minimum area of 10
    assert detect.boxes(text, link).shape == (0, 4, 2)


def test_link_joins_characters_into_one_box_but_link_only_pixels_are_cut():
    text, link = _maps()
    text[10:15, 10:20] = 0.9
    text[10:15, 30:40] = 0.9
    link[11:14, 20:30] = 0.8  # bridges the two characters
    # One component of 50 + 30 + 50 = 130 px, 30 x 5: niter = int(sqrt(130 * 5 / 150) * 2) = 4.
    # The bridge is removed before dilation, but the 2 px growth of each side leaves a 6 px gap
    # that the rectangle around all pixels still spans.
    found = detect.boxes(text, link)
    np.testing.assert_array_equal(found, [[[8, 8], [41, 8], [41, 16], [8, 16]]])


def test_near_square_box_becomes_upright_bounds():
    text, link = _maps()
    yy, xx = np.mgrid[:40, :60]
    text[np.abs(xx - 20) + np.abs(yy - 20) <= 6] = 0.9  # a diamond: minAreaRect would tilt it 45 degrees
    # area 85, 13 x 13: niter = int(sqrt(85 * 13 / 169) * 2) = 5 -> 6x6 kernel, anchor 3: grows 2 px
    # left/up and 3 px right/down, so x and y span 14-2 .. 26+3.
    found = detect.boxes(text, link)
    np.testing.assert_array_equal(found, [[[12, 12], [29, 12], [29, 29], [12, 29]]])


def test_boxes_scale_back_with_heatmap_stride_and_truncate():
    found = np.array([[[10.3, 5.0], [20.6, 5.0], [20.6, 9.9], [10.3, 9.9]]], np.float32)
    # ratio 0.5 (page shrunk by half) and stride 2: factor 4; 41.2 -> 41, 82.4 -> 82, 39.6 -> 39.
    np.testing.assert_array_equal(detect.to_image(found, 0.5), [[41, 20, 82, 20, 82, 39, 41, 39]])


def test_canvas_pads_to_multiples_of_32_and_never_enlarges():
    page = np.full((50, 70, 3), 200, np.uint8)
    canvas, ratio = detect.canvas(page)
    assert ratio == 1.0 and canvas.shape == (64, 96, 3)
    assert (canvas[:50, :70] == 200).all() and canvas[50:].max() == 0 and canvas[:, 70:].max() == 0
    big = np.zeros((100, 5120, 3), np.uint8)
    canvas, ratio = detect.canvas(big)
    assert ratio == 0.5 and canvas.shape == (64, 2560, 3)


def _poly(x1, y1, x2, y2, x3, y3, x4, y4):
    return [x1, y1, x2, y2, x3, y3, x4, y4]


def test_grouping_merges_rows_orders_lines_and_drops_small_boxes():
    polys = np.array([
        _poly(200, 62, 260, 62, 260, 80, 200, 80),  # D: row 2, far right of C
        _poly(10, 60, 40, 60, 40, 80, 10, 80),  # C: row 2
        _poly(55, 12, 95, 12, 95, 30, 55, 30),  # B: row 1, 5 px right of A
        _poly(10, 10, 50, 10, 50, 30, 10, 30),  # A: row 1
        _poly(300, 300, 310, 300, 310, 310, 300, 310),  # E: 10 x 10, too small even with its margin
    ], np.int32)
    lines, free = group.group(polys)
    assert free == []
    assert lines == [
        [8, 97, 8, 32],  # A + B: heights 20/18 alike, gap 5 < 0.5 * 18; margin int(0.1 * 20) = 2
        [8, 42, 58, 82],  # C alone: gap to D is 160 px; margin int(0.1 * min(30, 20)) = 2
        [199, 261, 61, 81],  # D: margin int(0.1 * 18) = 1
    ]


def test_grouping_keeps_different_heights_apart():
    polys = np.array([
        _poly(10, 10, 50, 10, 50, 30, 10, 30),  # height 20
        _poly(52, 5, 100, 5, 100, 35, 52, 35),  # height 30: |20 - 30| = 10 >= 0.5 * 20
    ], np.int32)
    lines, _ = group.group(polys)
    assert lines == [[8, 52, 8, 32], [49, 103, 2, 38]]  # margins int(0.1*20)=2 and int(0.1*30)=3


def test_tilted_box_goes_to_free_list_pushed_out_along_diagonals():
    polys = np.array([_poly(100, 200, 200, 230, 190, 263, 90, 233)], np.int32)  # top edge slope 0.3
    lines, free = group.group(polys)
    assert lines == []
    # margin = int(1.44 * 0.1 * |(-10, 33)|) = int(4.96) = 4; theta13 = atan(63 / 10), theta24 = atan(3 / 110).
    np.testing.assert_allclose(free[0], [[99.373, 196.050], [203.999, 229.891],
                                         [190.627, 266.950], [86.001, 233.109]], atol=1e-3)


def test_crops_are_clipped_to_the_page():
    grey = np.arange(100 * 120, dtype=np.uint32).reshape(100, 120).astype(np.uint8)
    crops = group.crops(grey, [[-5, 50, 90, 130]], [])
    assert crops[0].quad == [[0, 90], [50, 90], [50, 100], [0, 100]]
    np.testing.assert_array_equal(crops[0].pixels, grey[90:100, 0:50])


def test_resize_sets_height_64_and_width_class():
    scaled, width = recognize.resize(np.zeros((32, 100), np.uint8))  # aspect 3.125
    assert scaled.shape == (64, 200) and width == 256
    scaled, width = recognize.resize(np.zeros((100, 40), np.uint8))  # taller than wide: aspect 2.5
    assert scaled.shape == (160, 64) and width == 192


def test_input_is_scaled_to_unit_range_and_padded_with_last_column():
    img = np.zeros((64, 100), np.uint8)
    img[:, 99] = 255
    x = recognize.to_input(img, 128)
    assert x.shape == (64, 128)
    assert (x[:, :99] == -1).all() and (x[:, 99:] == 1).all()


def test_tall_input_is_squashed_to_height_64():
    x = recognize.to_input(np.full((160, 64), 255, np.uint8), 192)
    # resized width ceil(64 * 64 / 160) = 26, then padded to 192 with its last column.
    assert x.shape == (64, 192) and np.allclose(x, 1.0)


def test_contrast_adjust_stretches_low_contrast_only():
    low = np.array([100] * 5 + [140] * 5, np.uint8)
    # p90 = 140, p10 = 100: contrast 40 / 240 < 0.5; (v - 100 + 25) * 200 / 40 -> 125 and 325 -> 255.
    np.testing.assert_array_equal(recognize.adjust_contrast(low), [125] * 5 + [255] * 5)
    high = np.array([50] * 5 + [150] * 5, np.uint8)  # contrast 100 / 200 = 0.5: unchanged
    np.testing.assert_array_equal(recognize.adjust_contrast(high), high)


def _probs(steps: list[tuple[int, float]]) -> torch.Tensor:
    """One sequence whose step t has class c with probability p, the rest spread evenly."""
    probs = torch.zeros(1, len(steps), 97)
    for t, (c, p) in enumerate(steps):
        probs[0, t] = (1 - p) / 96
        probs[0, t, c] = p
    return probs


A, B = 45, 72  # 'A' and 'b' (class = index in the 96-character list + 1)


def test_greedy_decode_and_confidence_counts_repeats():
    steps = [(A, 0.9), (A, 0.8), (0, 0.99), (A, 0.7), (B, 0.6), (0, 0.95)]
    [(text, conf, _)] = recognize.read(lambda x: _probs(steps), [np.zeros((64, 128), np.uint8)])
    assert text == "AAb"  # the repeat is collapsed, the blank separates the second A
    # non-blank steps 0.9 * 0.8 * 0.7 * 0.6 = 0.3024, n = 4: 0.3024 ** (2 / 2)
    assert conf == pytest.approx(0.3024, abs=1e-6)


def test_single_character_confidence_is_squared():
    [(text, conf, _)] = recognize.read(lambda x: _probs([(B, 0.8), (0, 0.9)]), [np.zeros((64, 64), np.uint8)])
    assert text == "b" and conf == pytest.approx(0.64, abs=1e-6)  # 0.8 ** (2 / sqrt(1))


def test_low_confidence_crop_is_retried_with_contrast_and_better_read_kept():
    calls = []

    def forward(x):
        calls.append(x.shape[0])
        # First pass: all blank (confidence 0); second pass: 'A' at 0.5 -> 0.25.
        return _probs([(0, 0.9)] * 3) if len(calls) == 1 else _probs([(A, 0.5), (0, 0.9), (0, 0.9)])

    crop = np.array([[100] * 64 + [140] * 64] * 64, np.uint8)
    [(text, conf, _)] = recognize.read(forward, [crop])
    assert calls == [1, 1] and text == "A" and conf == pytest.approx(0.25, abs=1e-6)


def test_crops_are_batched_only_with_the_same_width():
    shapes = []

    def forward(x):
        shapes.append(tuple(x.shape))
        return _probs([(A, 0.9)]).repeat(x.shape[0], 1, 1)

    crops = [np.zeros((64, 100), np.uint8), np.zeros((64, 300), np.uint8), np.zeros((64, 120), np.uint8)]
    results = recognize.read(forward, crops)
    assert sorted(shapes) == [(1, 1, 64, 320), (2, 1, 64, 128)]
    assert [r.text for r in results] == ["A", "A", "A"]
