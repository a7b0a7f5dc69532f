"""PP-OCR end to end on pages the tests render themselves (no dev set needed)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.formats_check import check_words

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def ppocr(load_family):
    return load_family("ppocr", 1)


@pytest.fixture(scope="module")
def rapidocr():
    """The same networks with `pipeline = "rapidocr"`, RapidOCR's exact pipeline."""
    import dataclasses

    from service import settings as settings_mod
    from service.ocr.model import load_model

    cfg = settings_mod.load()
    return load_model(dataclasses.replace(cfg.model, family="ppocr", pipeline="rapidocr"), "cpu", 1)


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


PAGE = ["Invoice 2026-0042", "Total: 12.50 EUR", "Thank you, come again", "Cashier: Mary Lee"]


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_turned_page_reads_upright_and_reports_the_angle(ppocr, render, k):
    """A page turned k quarter turns counter-clockwise reads as upright, the angle that undoes the
    turn reported, and quads around the text where it lies in the image as given."""
    upright = render(PAGE)
    image = np.ascontiguousarray(np.rot90(upright, k))
    page = ppocr.parse([image])[0]
    assert page.angle == (360 - 90 * k) % 360
    assert [line.text for line in page.lines] == PAGE
    h, w = image.shape[:2]
    assert (page.width, page.height) == (w, h)
    for line in page.lines:
        xs, ys = [p[0] for p in line.quad], [p[1] for p in line.quad]
        assert 0 <= min(xs) and max(xs) <= w and 0 <= min(ys) and max(ys) <= h
        # a line lies across the page as given when it is upright or upside down, down it when sideways
        assert ((max(xs) - min(xs)) > (max(ys) - min(ys))) == (k % 2 == 0)


def test_first_corner_is_the_texts_top_left(ppocr, render):
    """On a page read upside down, each quad starts at the text's own top-left: the bottom right
    of the image as given."""
    image = np.ascontiguousarray(np.rot90(render(PAGE), 2))
    page = ppocr.parse([image])[0]
    for line in page.lines:
        (x0, y0), (x1, _), _, (_, y3) = line.quad
        assert x0 > x1 and y0 > y3


def test_rapidocr_pipeline_reports_no_angle(rapidocr, render):
    assert rapidocr.info.version == "rapidocr-3.10.0-defaults"
    page = rapidocr.parse([np.ascontiguousarray(np.rot90(render(PAGE), 2))])[0]
    assert page.angle == 0


def test_a_small_one_line_image_is_not_blown_up(ppocr, render):
    """One short line: detection runs near the image's own size (geometry.DET_MAX_UPSCALE)."""
    image = render(["HELLO 42"], size=20, margin=6)
    assert [line.text for line in ppocr.parse([image])[0].lines] == ["HELLO 42"]


def _words_follow_the_reading(page) -> None:
    """Each line's words joined give its text and lie inside its box; along the line's reading
    direction (its first word's top edge) the words come in order."""
    check_words([{"lines": [line.to_json(words=True) for line in page.lines]}])
    for line in page.lines:
        if len(line.words) < 2:
            continue
        quads = [np.array(w.quad, np.float64) for w in line.words]
        direction = quads[0][1] - quads[0][0]
        along = [float(np.dot(q.mean(axis=0), direction)) for q in quads]
        assert along == sorted(along), (line.text, [w.quad for w in line.words])


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_words_follow_the_text_on_a_turned_page(ppocr, render, k):
    """Word boxes are in the image's own pixels and in reading order whatever the page's angle:
    on a page read turned, each word's first corner is its text's top-left, as the line's is."""
    image = np.ascontiguousarray(np.rot90(render(PAGE), k))
    page = ppocr.parse([image])[0]
    assert [line.text for line in page.lines] == PAGE
    _words_follow_the_reading(page)
    for line in page.lines:
        line_dir = np.subtract(line.quad[1], line.quad[0])
        for w in line.words:
            assert float(np.dot(np.subtract(w.quad[1], w.quad[0]), line_dir)) > 0, (line.quad, w.quad)


def test_rapidocr_pipeline_gives_words_too(rapidocr, render):
    for k in (0, 2):
        page = rapidocr.parse([np.ascontiguousarray(np.rot90(render(PAGE), k))])[0]
        assert page.lines and all(line.words for line in page.lines)
        _words_follow_the_reading(page)


def test_parse_pipeline_keeps_the_spaces_the_plain_argmax_drops(ppocr, rapidocr, render):
    """Spaced colons as receipts print them: the space prior (recognize.SPACE_PRIOR) reads them as
    printed; the RapidOCR pipeline, decoding without it, runs some words together."""
    text = ["TEL : 03-7722 1234", "CASH : 50.00"]
    page = render(text, size=28)
    assert [l.text for l in ppocr.parse([page])[0].lines] == text
    plain = [l.text for l in rapidocr.parse([page])[0].lines]
    assert plain != text and [t.replace(" ", "") for t in plain] == [t.replace(" ", "") for t in text]
