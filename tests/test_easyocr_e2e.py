"""The whole EasyOCR pipeline on pages the tests render themselves: text, quads, batches."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from service import settings as settings_mod
from service.ocr.easyocr import winograd
from service.ocr.model import OcrModel, load_model

pytestmark = pytest.mark.model


LINES = ["Invoice 2024", "Total 42.50"]


@pytest.fixture(scope="module")
def easyocr(load_family) -> OcrModel:
    return load_family("easyocr", 2)


def tolerance(model: OcrModel) -> float:
    """Confidence tolerance between batch shapes: oneDNN's rounding on the CPU, cuDNN's algorithm choice on a GPU."""
    return 1e-5 if model.device.type == "cpu" else 2e-3


@pytest.fixture(scope="module")
def page(render) -> np.ndarray:
    return render(LINES, size=32)


def test_info_and_precision(easyocr):
    assert easyocr.info.name == "easyocr-craft-english_g2"
    assert set(easyocr.info.weights_sha256) == {"craft_mlt_25k.pth", "english_g2.pth"}
    assert easyocr.precision == "fp32"  # "auto", as measured on CPUs and GPUs
    configured = settings_mod.load().model.winograd
    assert easyocr.uses_winograd == (configured and easyocr.device.type == "cpu" and winograd.available())


def test_reads_rendered_lines_in_order_with_pixel_quads(easyocr, page):
    [result] = easyocr.parse([page])
    assert [line.text for line in result.lines] == LINES
    assert (result.width, result.height) == (page.shape[1], page.shape[0])
    # render(): margin 40, rows every 32 + 24 px; each quad must sit on its own row of text.
    for row, line in enumerate(result.lines):
        xs, ys = [p[0] for p in line.quad], [p[1] for p in line.quad]
        top = 40 + row * 56
        assert 20 <= min(xs) <= 45 and max(xs) <= page.shape[1]
        assert top - 12 <= min(ys) <= top + 10 and top + 20 <= max(ys) <= top + 45
        assert 0.3 < line.confidence <= 1.0
    assert set(result.timing) == {"detect", "recognize"}


def test_batch_equals_single_calls(easyocr, page, render):
    other = render(["Hello World"], size=28)
    batch = easyocr.parse([page, other])
    singles = [easyocr.parse([page])[0], easyocr.parse([other])[0]]
    for got, want in zip(batch, singles):
        assert [l.text for l in got.lines] == [l.text for l in want.lines]
        assert [l.quad for l in got.lines] == [l.quad for l in want.lines]
        np.testing.assert_allclose([l.confidence for l in got.lines], [l.confidence for l in want.lines],
                                   atol=tolerance(easyocr))
    assert [l.text for l in batch[1].lines] == ["Hello World"]


def test_detector_batch_of_same_size_pages_equals_single_pages(easyocr, page):
    """The GPU path (pages of one canvas size through CRAFT together), checked on the CPU too."""
    other = np.ascontiguousarray(page[::-1, ::-1])  # same size, text upside down
    default = easyocr.batch_detector
    try:
        easyocr.batch_detector = False
        singles = [easyocr.parse([page])[0], easyocr.parse([other])[0]]
        easyocr.batch_detector = True
        batch = easyocr.parse([page, other])
    finally:
        easyocr.batch_detector = default
    for got, want in zip(batch, singles):
        assert [(l.text, l.quad) for l in got.lines] == [(l.text, l.quad) for l in want.lines]
        np.testing.assert_allclose([l.confidence for l in got.lines], [l.confidence for l in want.lines],
                                   atol=tolerance(easyocr))


def test_blank_page_has_no_lines(easyocr):
    [result] = easyocr.parse([np.full((200, 300, 3), 255, np.uint8)])
    assert result.lines == []


def test_recognize_reads_whole_image_as_one_line(easyocr, render):
    line = render(["Receipt 0815"], size=30, margin=6)
    [result] = easyocr.recognize([line])
    h, w = line.shape[:2]
    assert len(result.lines) == 1
    assert result.lines[0].text == "Receipt 0815"
    assert result.lines[0].quad == [[0, 0], [w, 0], [w, h], [0, h]]


def test_direct_convolutions_read_what_winograd_reads(easyocr, page):
    """winograd = false, oneDNN's direct convolutions throughout, against the default."""
    if not easyocr.uses_winograd:
        pytest.skip("the default already runs direct convolutions on this device")
    cfg = settings_mod.load().model
    direct = load_model(dataclasses.replace(cfg, family="easyocr", winograd=False), str(easyocr.device), 2)
    assert not direct.uses_winograd
    got, want = easyocr.parse([page])[0], direct.parse([page])[0]
    assert [l.text for l in got.lines] == [l.text for l in want.lines]
    # The score maps differ by rounding (~1e-5), which may move a box edge across a threshold.
    np.testing.assert_allclose([l.quad for l in got.lines], [l.quad for l in want.lines], atol=1)
    np.testing.assert_allclose([l.confidence for l in got.lines], [l.confidence for l in want.lines], atol=1e-5)
