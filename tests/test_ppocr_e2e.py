"""PP-OCR end to end on pages the tests render themselves (no dev set needed)."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def ppocr(load_family):
    return load_family("ppocr", 1)


def test_reads_a_rendered_page_in_order(ppocr, render):
    lines = ["Invoice 2026-0042", "Total: 12.50 EUR", "Thank you"]
    page = ppocr.parse([render(lines)])[0]
    assert [line.text for line in page.lines] == lines
    img_h, img_w = render(lines).shape[:2]
    assert (page.width, page.height) == (img_w, img_h)
    tops = [line.quad[0][1] for line in page.lines]
    assert tops == sorted(tops)
    for line in page.lines:
        assert 0.5 <= line.confidence <= 1.0
        assert all(0 <= x <= img_w and 0 <= y <= img_h for x, y in line.quad)
    assert set(page.timing) == {"detect", "recognize"}


def test_blank_page_has_no_lines(ppocr):
    page = ppocr.parse([np.full((200, 300, 3), 255, np.uint8)])[0]
    assert page.lines == []


def test_recognize_reads_each_image_as_one_line(ppocr, render):
    crops = [render([text], margin=6) for text in ("HELLO 42", "parse.example")]
    pages = ppocr.recognize(crops)
    assert [p.lines[0].text for p in pages] == ["HELLO 42", "parse.example"]
    h, w = crops[0].shape[:2]
    assert pages[0].lines[0].quad == [[0, 0], [w, 0], [w, h], [0, h]]
