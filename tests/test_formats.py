"""The output formats on pages made here (no model): text, hOCR, ALTO, searchable PDF, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.errors import ClientError
from service.formats import FORMATS, render
from tests.formats_check import check_alto, check_hocr, check_pdf, check_words
from tests.support import png

pytestmark = pytest.mark.unit


def box(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def line(text: str, x0: float, y0: float, char_w: float = 12, h: float = 24) -> dict:
    """A line whose words are placed by character count, as a recognizer's steps would place them."""
    words, x = [], x0
    for token in text.split():
        words.append({"text": token, "confidence": 0.9, "quad": box(x, y0, x + char_w * len(token), y0 + h)})
        x += char_w * (len(token) + 1)
    return {"text": text, "confidence": 0.9, "quad": box(x0, y0, x - char_w, y0 + h), "words": words}


PAGES = [
    {"width": 600, "height": 400, "lines": [line("2.20", 500, 101), line("Kopi (B)", 20, 100), line("1x", 400, 100),
                                            line("Thank you & <come> again", 20, 300)]},
    {"width": 500, "height": 300, "lines": [line("Second page", 30, 40)]},
]


def test_text_follows_reading_order_page_by_page():
    document, media_type = render(PAGES, "text")
    assert media_type == "text/plain; charset=utf-8"
    assert document.decode() == "Kopi (B) 1x 2.20\n\nThank you & <come> again\n\fSecond page\n"


def test_hocr_and_alto_carry_every_word_with_a_box():
    check_words(PAGES)
    document, media_type = render(PAGES, "hocr")
    assert media_type.startswith("application/xhtml+xml")
    check_hocr(document, PAGES)
    document, media_type = render(PAGES, "alto")
    assert media_type.startswith("application/xml")
    check_alto(document, PAGES)


def test_searchable_pdf_places_each_word_on_its_box(tmp_path):
    uploads = [png(np.full((p["height"], p["width"], 3), 200, np.uint8)) for p in PAGES]
    pages = [{**p, "file": n} for n, p in enumerate(PAGES)]
    document, media_type = render(pages, "pdf", uploads)
    assert media_type == "application/pdf" and document.startswith(b"%PDF")
    check_pdf(document, PAGES, tmp_path)


def test_entries_without_words_still_get_word_boxes(tmp_path):
    bare = [{**p, "lines": [{k: v for k, v in l.items() if k != "words"} for l in p["lines"]]} for p in PAGES]
    check_pdf(render(bare, "pdf")[0], PAGES, tmp_path)  # white pages, words spread over each line
    assert json.loads(render(bare, "json")[0])["images"][0]["lines"][0]["text"] == "2.20"


def test_unknown_format_lists_the_formats():
    with pytest.raises(ClientError) as caught:
        render(PAGES, "docx")
    assert caught.value.status == 400 and all(name in caught.value.message for name in FORMATS)


def test_json_quads_are_rounded_to_a_tenth_of_a_pixel_lines_and_words_alike():
    from service.formats import image_json
    from service.ocr.types import Line, Page, Word

    quad = [[73.03427124023438, 41.0], [305.96, 42.049], [305.0, 76.25000001], [37.0, 75.0]]
    page = Page(400, 100, [Line("ACME 12", 0.9, quad, [Word("ACME", 0.9, quad), Word("12", 0.9, quad)])])
    line = image_json(page, words=True)["lines"][0]
    expected = [[73.0, 41.0], [306.0, 42.0], [305.0, 76.3], [37.0, 75.0]]
    assert line["quad"] == expected and all(w["quad"] == expected for w in line["words"])
