"""service/documents without a model: page ranges, PDF pages and text layers, TIFF pages, limits
and hostile documents, each refused with its own 4xx before anything big is allocated."""

from __future__ import annotations

import ctypes
import dataclasses

import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c
import pytest
from PIL import Image

from service import documents, settings
from service.documents import pdf
from service.errors import ClientError
from tests import pdfs

pytestmark = pytest.mark.unit

CFG = settings.load(settings.DEFAULT_CONFIG)
LIMITS, DOCS = CFG.limits, CFG.documents


def read(data: bytes, limits=LIMITS, **options) -> list[documents.PageImage]:
    return list(documents.read_pages([data], limits, documents.ReadOptions(documents=DOCS, **options)))


def refused(data: bytes, limits=LIMITS, **options) -> ClientError:
    with pytest.raises(ClientError) as info:
        read(data, limits, **options)
    assert 400 <= info.value.status < 500
    return info.value


def scan(seed: int, size=(300, 420)) -> np.ndarray:
    """A page of black bars at seed-dependent places: each page's pixels are its own."""
    rng = np.random.default_rng(seed)
    img = np.full((size[1], size[0], 3), 255, np.uint8)
    for _ in range(6):
        y, x = rng.integers(10, size[1] - 30), rng.integers(10, size[0] - 110)
        img[y:y + 12, x:x + 100] = 0
    return img


@pytest.mark.parametrize("spec, ranges", [
    ("2-4,7", ((2, 4), (7, 7))), (" 3 ", ((3, 3),)), ("1-1,1", ((1, 1), (1, 1))),
])
def test_page_ranges(spec, ranges):
    assert documents.parse_pages(spec).ranges == ranges


@pytest.mark.parametrize("spec", ["0", "3-2", "a", "1-", "-2", "1;2", "1" * 201, "1,,2"])
def test_bad_page_ranges_say_how_to_write_them(spec):
    with pytest.raises(ClientError) as info:
        documents.parse_pages(spec)
    assert info.value.status == 400 and "pages=2-4,7" in info.value.message


def test_a_scanned_pdf_gives_back_its_page_images():
    pages = [scan(i) for i in range(3)]
    out = read(pdfs.scanned_pdf(pages, resolution=200), dpi=200)
    assert [(p.page, p.source, p.dpi, p.width, p.height) for p in out] == [(i, "ocr", 200, 300, 420) for i in (1, 2, 3)]
    for page, original in zip(out, pages):
        # JPEG inside the PDF and PDFium's resampling move a few grey levels, not the bars.
        assert np.abs(page.rgb.astype(int) - original).mean() < 3


def test_pages_picks_pages_in_the_order_asked():
    pages = [scan(i) for i in range(4)]
    out = read(pdfs.scanned_pdf(pages), pages=documents.parse_pages("3-4,1"), dpi=200)
    assert [p.page for p in out] == [3, 4, 1]
    assert np.abs(out[2].rgb.astype(int) - pages[0]).mean() < 3


def test_a_page_past_the_end_says_how_many_there_are():
    err = refused(pdfs.scanned_pdf([scan(0), scan(1)]), pages=documents.parse_pages("2-3"))
    assert err.code == "page_out_of_range" and "has 2 pages" in err.message


def test_dpi_scales_the_render():
    out = read(pdfs.scanned_pdf([scan(0)], resolution=200), dpi=100)
    assert (out[0].width, out[0].height, out[0].dpi) == (150, 210, 100)


def test_a_born_digital_page_returns_its_text_layer_exactly():
    lines = ["Invoice 2024-0042", "Total: 1,234.56 EUR", "Ünïcödé ß"]
    (page,) = read(pdfs.born_digital_pdf([lines], font_size=14), dpi=144)
    assert page.source == "text-layer" and page.rgb is None
    assert [line.text for line in page.lines] == lines
    assert (page.width, page.height) == (1224, 1584)  # letter at 2 px per point
    for i, line in enumerate(page.lines):
        (x0, y0), _, (x1, y1), _ = line.quad
        baseline = (72 + i * 28) * 2  # reportlab puts line i's baseline 72 + 2 * 14 * i points down
        assert 143 <= x0 <= 148 and y0 < baseline < y1 + 8 and x1 > x0 + 100


def test_text_layer_words_are_placed_by_their_own_characters():
    lines = ["Invoice 2024-0042", "Total:   1,234.56 EUR"]
    (page,) = read(pdfs.born_digital_pdf([lines], font_size=14), dpi=144)
    for line in page.lines:
        assert [w.text for w in line.words] == line.text.split()
        assert all(w.confidence == 1.0 for w in line.words)
        boxes = [(w.quad[0][0], w.quad[0][1], w.quad[2][0], w.quad[2][1]) for w in line.words]
        (lx0, ly0), _, (lx1, ly1), _ = line.quad
        # Left to right, apart, inside the line's box, the first and last words on its edges.
        assert all(a[2] < b[0] for a, b in zip(boxes, boxes[1:])), boxes
        assert all(lx0 <= x0 < x1 <= lx1 and ly0 <= y0 < y1 <= ly1 for x0, y0, x1, y1 in boxes)
        assert boxes[0][0] == lx0 and boxes[-1][2] == lx1
    # A word's width follows its characters: "1,234.56" is wider than "EUR".
    total = page.lines[1].words
    assert total[1].quad[1][0] - total[1].quad[0][0] > total[2].quad[1][0] - total[2].quad[0][0]


def test_text_layer_quads_match_pdfiums_own_mapping_on_rotated_pages():
    for rotation in (0, 90, 180, 270):
        data = pdfs.born_digital_pdf([["Rotated line"]], size=(612, 792), rotation=rotation)
        (page,) = read(data, dpi=72)
        assert [line.text for line in page.lines] == ["Rotated line"], rotation
        doc = pdfium.PdfDocument(data)
        p = doc[0]
        tp = p.get_textpage()
        l, b, r, t = tp.get_charbox(0)
        dx, dy = ctypes.c_int(), ctypes.c_int()
        pdfium_c.FPDF_PageToDevice(p, 0, 0, page.width, page.height, 0, l, t, dx, dy)
        quad = page.lines[0].quad
        xs, ys = [x for x, _ in quad], [y for _, y in quad]
        assert min(xs) - 1 <= dx.value <= max(xs) + 1 and min(ys) - 1 <= dy.value <= max(ys) + 1, rotation
        tp.close(), p.close(), doc.close()


def test_invisible_text_counts_as_a_text_layer():
    (page,) = read(pdfs.born_digital_pdf([["hidden OCR text"]], invisible=True))
    assert page.source == "text-layer" and page.lines[0].text == "hidden OCR text"


def test_ocr_force_and_empty_text_layers_render_the_page():
    (forced,) = read(pdfs.born_digital_pdf([["some text"]]), ocr="force", dpi=200)
    assert forced.source == "ocr" and forced.rgb.shape == (2200, 1700, 3)
    assert forced.rgb.min() < 128  # the text is drawn
    (blank,) = read(pdfs.born_digital_pdf([["   "]]))
    assert blank.source == "ocr"


def test_a_page_past_the_pixel_limit_renders_at_a_lower_dpi_that_fits():
    limits = dataclasses.replace(LIMITS, max_pixels=1_000_000)
    (page,) = read(pdfs.blank_pdf(1), limits, dpi=300)  # letter at 300 dpi: 8.4 Mpx
    assert page.width * page.height <= 1_000_000 and page.dpi < 300
    assert (page.width, page.height) == pdf.PageSize(612, 792).pixels(page.dpi)
    assert page.rgb.shape == (page.height, page.width, 3)


def test_fit_dpi_refuses_without_rendering_below_min_dpi():
    with pytest.raises(ClientError) as info:
        pdf.fit_dpi(pdf.PageSize(14400, 14400), 200, 1, LIMITS, DOCS)
    assert info.value.status == 413 and "200.0x200.0 inches" in info.value.message


@pytest.mark.parametrize("value", ["0", "5000", "abc", "nan", "inf"])
def test_bad_dpi(value):
    with pytest.raises(ClientError) as info:
        documents.parse_dpi(value, DOCS)
    assert info.value.code == "invalid_dpi"


def test_bad_ocr_mode():
    with pytest.raises(ClientError):
        documents.parse_ocr("never")


def test_multipage_tiff_reads_every_page():
    pages = [scan(i) for i in range(3)]
    data = pdfs.multipage_tiff([Image.fromarray(p) for p in pages])
    out = read(data, grey=True)
    assert [(p.page, p.source, p.dpi) for p in out] == [(1, "ocr", None), (2, "ocr", None), (3, "ocr", None)]
    for page, original in zip(out, pages):
        assert np.array_equal(page.rgb, original)
    assert out[1].grey is None  # OpenCV reads a TIFF's first page only
    assert documents.count_pages(data, LIMITS) == 3


def test_count_pages():
    assert documents.count_pages(pdfs.scanned_pdf([scan(0)] * 5), LIMITS) == 5
    png = Image.fromarray(scan(0))
    import io
    buf = io.BytesIO()
    png.save(buf, "PNG")
    assert documents.count_pages(buf.getvalue(), LIMITS) == 1
    with pytest.raises(ClientError) as info:
        documents.count_pages(b"not an image", LIMITS)
    assert info.value.status == 415


def test_several_files_answer_in_upload_then_page_order():
    a, b = pdfs.scanned_pdf([scan(0), scan(1)]), pdfs.scanned_pdf([scan(2)])
    out = list(documents.read_pages([a, b], LIMITS, documents.ReadOptions(documents=DOCS)))
    assert [(p.file, p.page) for p in out] == [(0, 1), (0, 2), (1, 1)]


def test_pages_are_rendered_one_at_a_time():
    """The iterator renders a page only when asked for it: a refusal or a deadline between pages
    costs no further render."""
    pages = documents.read_pages([pdfs.scanned_pdf([scan(i) for i in range(3)])], LIMITS,
                                 documents.ReadOptions(documents=DOCS))
    first = next(pages)
    assert first.page == 1
    pages.close()  # closes the document: nothing else was rendered


# Hostile documents: each is a 4xx whose message says what to fix, within moments.

def test_too_many_pages_for_a_request_points_to_jobs():
    err = refused(pdfs.blank_pdf(LIMITS.max_pages + 1))
    assert err.status == 413 and "/v1/jobs" in err.message and str(LIMITS.max_pages) in err.message


def test_5000_pages_are_refused_from_the_count():
    err = refused(pdfs.blank_pdf(5000))
    assert err.status == 413 and "5,000 pages" in err.message


def test_a_200_inch_page():
    err = refused(pdfs.blank_pdf(1, size=(14400, 14400)))
    assert err.code == "page_too_large"


def test_encrypted():
    err = refused(pdfs.born_digital_pdf([["secret"]], encrypt="password"))
    assert err.code == "pdf_encrypted" and "password-protected" in err.message


def test_broken_xref_is_repaired():
    (page,) = read(pdfs.broken_xref(pdfs.born_digital_pdf([["repaired text"]])))
    assert page.lines[0].text == "repaired text"


def test_truncated():
    data = pdfs.born_digital_pdf([["a line"]] * 3)
    for cut in (len(data) // 2, 100, 9):
        try:
            out = read(data[:cut])
        except ClientError as err:
            assert err.status == 400 and "re-export" in err.message
        else:
            assert out  # repaired: whatever pages survive are read


def test_javascript_never_runs():
    # Both scripts loop forever: the page reads (blank) instead of hanging.
    (page,) = read(pdfs.javascript_pdf())
    assert page.source == "ocr" and page.rgb.min() == 255


def test_zero_pages():
    err = refused(pdfs.zero_page_pdf())
    assert "no pages" in err.message


def test_a_tiff_of_hundreds_of_tiny_pages():
    err = refused(pdfs.multipage_tiff([Image.new("L", (1, 1))] * 500))
    assert err.status == 413 and "/v1/jobs" in err.message


def test_a_tiff_past_the_document_page_limit_is_refused_while_counting():
    limits = dataclasses.replace(LIMITS, max_document_pages=50)
    with pytest.raises(ClientError) as info:
        documents.count_pages(pdfs.multipage_tiff([Image.new("L", (1, 1))] * 60), limits)
    assert info.value.status == 413 and "more than 50 pages" in info.value.message
