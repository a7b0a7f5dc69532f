"""PDF pages through PDFium (pypdfium2): the page count, each page's text layer, and rendering.

PDFium is Chrome's PDF engine: it repairs broken cross-reference tables and truncated files the
way a browser would, and this build has no JavaScript engine (no V8), and no form environment
is ever initialised here, so a document's scripts and form actions never run.

Pages are opened one at a time and closed as soon as their pixels (or text) are copied out, so
a document's memory is its bytes plus one page. The pixel limit is checked from the page size
and the dpi before a bitmap is allocated: a page that does not fit is rendered at the highest
dpi that fits, down to `min_dpi`, and refused below it (`fit_dpi`).

PDFium is not thread-safe; every call into it holds one process-wide lock.
"""

from __future__ import annotations

import io
import math
import threading
from dataclasses import dataclass

import numpy as np
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from ..errors import ClientError
from ..ocr.types import Line, Word
from ..settings import DocumentSettings, Limits

LOCK = threading.RLock()
POINTS_PER_INCH = 72.0
# Where PDF allows its header to start: readers accept leading junk within the first kilobyte.
HEADER_WINDOW = 1024
# Line breaks PDFium's text page puts between lines (generated) or that the text itself carries.
BREAKS = {"\r", "\n"}
# What PDFium reports for a hyphen that breaks a word at the end of a line.
SOFT_HYPHEN = "\x02"
# A text layer's lines are exact: no model guessed them.
TEXT_LAYER_CONFIDENCE = 1.0
SLACK_PIXELS = 0.01


def is_pdf(data: bytes) -> bool:
    return b"%PDF-" in data[:HEADER_WINDOW]


@dataclass(frozen=True)
class PageSize:
    """A page as displayed (crop box, page rotation applied), in points."""

    width: float
    height: float

    def pixels(self, dpi: float) -> tuple[int, int]:
        """The page's size in pixels at `dpi`: each side rounded up, as PDFium does, except for a
        hundredth of a pixel, which is the page size's own rounding to points (a 192 px scan
        stored at 200 dpi is 69.12 pt, which is 192.00000001 px back)."""
        scale = dpi / POINTS_PER_INCH
        return (max(1, math.ceil(self.width * scale - SLACK_PIXELS)),
                max(1, math.ceil(self.height * scale - SLACK_PIXELS)))


def fit_dpi(size: PageSize, dpi: float, number: int, limits: Limits, docs: DocumentSettings) -> float:
    """The dpi to render page `number` at: `dpi`, or the highest that keeps it within the pixel and
    side limits; refuses (413) a page that would need less than `min_dpi`. No pixel is allocated."""
    if size.width <= 0 or size.height <= 0:
        raise ClientError(400, "empty_page", f"page {number} is {size.width:g}x{size.height:g} points: "
                                              "it has no area; fix the page's MediaBox/CropBox")
    w, h = size.pixels(dpi)
    if w * h <= limits.max_pixels and max(w, h) <= limits.max_side:
        return dpi
    scale = dpi / POINTS_PER_INCH
    fit = min(dpi * math.sqrt(limits.max_pixels / (size.width * scale * size.height * scale)),
              dpi * limits.max_side / (max(size.width, size.height) * scale))
    fit = math.floor(fit * 100) / 100
    # Rounding each side up may still cross a limit by a pixel: step down until it does not.
    while fit >= docs.min_dpi:
        w, h = size.pixels(fit)
        if w * h <= limits.max_pixels and max(w, h) <= limits.max_side:
            return fit
        fit = math.floor((fit - 0.01) * 100) / 100
    inches = f"{size.width / POINTS_PER_INCH:.1f}x{size.height / POINTS_PER_INCH:.1f} inches"
    raise ClientError(
        413, "page_too_large",
        f"page {number} is {inches}: even at {docs.min_dpi:g} dpi it would pass the limit of "
        f"{limits.max_pixels:,} pixels and {limits.max_side} pixels per side; send a smaller page "
        "(or the page as an image)")


class PdfFile:
    """An opened PDF: its page count now, its pages one at a time later. Close it when done."""

    def __init__(self, data: bytes):
        with LOCK:
            try:
                self._doc = pdfium.PdfDocument(data)
            except pdfium.PdfiumError as err:
                raise _load_error(err) from None
            try:
                self.count = len(self._doc)
            except pdfium.PdfiumError as err:
                self.close()
                raise _load_error(err) from None
        if self.count <= 0:
            self.close()
            raise ClientError(400, "empty_document", "the PDF has no pages; send a document with at least one page")

    def size(self, index: int) -> PageSize:
        with LOCK:
            try:
                w, h = self._doc.get_page_size(index)
            except pdfium.PdfiumError as err:
                raise _page_error(index, err) from None
        return PageSize(float(w), float(h))

    def text_lines(self, index: int, dpi: float) -> list[Line] | None:
        """The page's text layer as lines with pixel quads at `dpi`; None when it carries no
        visible or invisible character other than whitespace (then the page needs OCR)."""
        with LOCK:
            page = self._page(index)
            try:
                return _text_lines(page, dpi / POINTS_PER_INCH)
            except pdfium.PdfiumError as err:
                raise _page_error(index, err) from None
            finally:
                page.close()

    def render(self, index: int, dpi: float) -> np.ndarray:
        """The page as an RGB uint8 array of `size(index).pixels(dpi)`, over white paper;
        annotations drawn, no forms. PDFium's bitmap can be a pixel larger (it rounds up without
        slack): that sliver of a row is cut off."""
        width, height = self.size(index).pixels(dpi)
        with LOCK:
            page = self._page(index)
            try:
                bitmap = page.render(scale=dpi / POINTS_PER_INCH, rev_byteorder=True, may_draw_forms=False)
                try:
                    pixels = np.array(bitmap.to_numpy()[:height, :width, :3], copy=True)  # the bitmap's buffer dies with it
                finally:
                    bitmap.close()
            except pdfium.PdfiumError as err:
                raise _page_error(index, err) from None
            finally:
                page.close()
        return pixels

    def extract(self, index: int) -> bytes:
        """Page `index` alone, as a PDF of one page (its content, fonts and text layer copied)."""
        with LOCK:
            one = pdfium.PdfDocument.new()
            try:
                one.import_pages(self._doc, [index])
                out = io.BytesIO()
                one.save(out)
            except pdfium.PdfiumError as err:
                raise _page_error(index, err) from None
            finally:
                one.close()
        return out.getvalue()

    def close(self) -> None:
        with LOCK:
            self._doc.close()

    def _page(self, index: int) -> pdfium.PdfPage:
        try:
            return self._doc[index]
        except pdfium.PdfiumError as err:
            raise _page_error(index, err) from None


def _text_lines(page: pdfium.PdfPage, scale: float) -> list[Line] | None:
    """The text layer's lines (PDFium's line breaks), each with its words: whitespace-separated
    runs of characters placed by the union of their own character boxes."""
    textpage = page.get_textpage()
    try:
        count = textpage.count_chars()
        if count <= 0:
            return None
        to_pixels = _page_to_pixels(page, scale)
        lines: list[Line] = []
        chars: list[str] = []
        boxes: list[tuple[float, float, float, float]] = []
        # Each character's box (None for spaces and generated characters), for the line's words:
        # a table's cells are filled word by word, and one text-layer line may cross several cells.
        char_boxes: list[tuple[float, float, float, float] | None] = []

        def flush() -> None:
            text = "".join(chars).strip()
            if text and boxes:
                lines.append(Line(text, TEXT_LAYER_CONFIDENCE, _quad(boxes, to_pixels),
                                  _words(chars, char_boxes, to_pixels)))
            chars.clear()
            boxes.clear()
            char_boxes.clear()

        for i in range(count):
            code = pdfium_c.FPDFText_GetUnicode(textpage, i)
            ch = chr(code) if 0 < code < 0x110000 and not 0xD800 <= code < 0xE000 else ""
            if ch == SOFT_HYPHEN:  # a word hyphenated at a line's end: PDFium joins its halves
                continue
            if ch in BREAKS:
                flush()
                continue
            if not ch:
                continue
            chars.append(ch)
            if ch.strip() and not pdfium_c.FPDFText_IsGenerated(textpage, i):
                boxes.append(textpage.get_charbox(i))
                char_boxes.append(boxes[-1])
            else:
                char_boxes.append(None)
        flush()
        return lines or None
    finally:
        textpage.close()


def _page_to_pixels(page: pdfium.PdfPage, scale: float):
    """Page space (points, y up, crop box origin) -> rendered pixels (y down), page rotation applied,
    in floats (FPDF_PageToDevice rounds to whole pixels)."""
    left, bottom, right, top = page.get_cropbox()
    rotation = page.get_rotation()
    if rotation == 90:
        return lambda x, y: ((y - bottom) * scale, (x - left) * scale)
    if rotation == 180:
        return lambda x, y: ((right - x) * scale, (y - bottom) * scale)
    if rotation == 270:
        return lambda x, y: ((top - y) * scale, (right - x) * scale)
    return lambda x, y: ((x - left) * scale, (top - y) * scale)


def _words(chars: list[str], boxes: list[tuple[float, float, float, float] | None], to_pixels) -> list[Word]:
    """The line's whitespace-separated words, each with its characters' box."""
    words: list[Word] = []
    text: list[str] = []
    held: list[tuple[float, float, float, float]] = []
    for ch, box in [*zip(chars, boxes), (" ", None)]:
        if ch.strip():
            text.append(ch)
            if box is not None:
                held.append(box)
        elif text:
            if held:
                words.append(Word("".join(text), TEXT_LAYER_CONFIDENCE, _quad(held, to_pixels)))
            text, held = [], []
    return words


def _quad(boxes: list[tuple[float, float, float, float]], to_pixels) -> list[list[float]]:
    """The line's characters' union, as an upright pixel rectangle, clockwise from top-left."""
    corners = [to_pixels(x, y) for l, b, r, t in boxes for x, y in ((l, b), (r, t))]
    xs = [round(x, 2) for x, _ in corners]
    ys = [round(y, 2) for _, y in corners]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _load_error(err: pdfium.PdfiumError) -> ClientError:
    if err.err_code == pdfium_c.FPDF_ERR_PASSWORD:
        return ClientError(400, "pdf_encrypted",
                           "the PDF is password-protected: remove the password (e.g. print or save it "
                           "without encryption) and upload it again")
    if err.err_code == pdfium_c.FPDF_ERR_SECURITY:
        return ClientError(400, "pdf_encrypted",
                           "the PDF uses an unsupported security handler (it is password-protected or "
                           "DRM-locked): save it without encryption and upload it again")
    return ClientError(400, "corrupt_pdf",
                       f"the PDF could not be read even after repair ({err}): it is truncated, corrupt or has "
                       "no pages; re-export it and upload the whole file")


def _page_error(index: int, err: Exception) -> ClientError:
    return ClientError(400, "corrupt_pdf",
                       f"page {index + 1} of the PDF could not be read ({err}); it is corrupt: "
                       "re-export the document, or ask for the other pages with ?pages=")
