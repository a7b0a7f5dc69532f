"""Uploaded files to page images: the decoders and the limits that refuse hostile input.

`read_pages` is what the rest of the service calls: uploads in, one page at a time out, lazily,
so that the caller decides how many rendered pages of a request are alive (one, or a batch's
worth with batching across requests: service/web/reading.py). Every count
and limit is checked before the first page is produced: a request that would be refused is
refused before it costs a render. `count_pages` tells a caller (the jobs queue) how many pages an
upload holds without reading any.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..errors import ClientError
from ..ocr.types import Line
from ..settings import DocumentSettings, Limits
from . import images, pdf
from .pages import ALL, PageSelection, parse_pages

__all__ = ["PageImage", "ReadOptions", "count_pages", "read_pages", "parse_pages", "PageSelection",
           "OCR_MODES", "parse_ocr", "parse_dpi"]

# ?ocr=: "auto" takes a PDF page's text layer where it has one and OCRs the rest; "force" OCRs
# every page.
OCR_MODES = ("auto", "force")


@dataclass
class PageImage:
    """One page to answer for: pixels for the model (`rgb`), or the text layer's `lines`.

    A text-layer page carries its pixels too only when the caller asked for them
    (ReadOptions.pixels); its lines are still the answer."""

    file: int
    page: int
    width: int
    height: int
    source: str  # "ocr" or "text-layer"
    dpi: float | None = None  # PDF pages only
    rgb: np.ndarray | None = None
    grey: np.ndarray | None = None
    lines: list[Line] | None = None
    decode_seconds: float = 0.0


@dataclass(frozen=True)
class ReadOptions:
    pages: PageSelection = ALL
    dpi: float | None = None  # None: [documents] dpi
    ocr: str = "auto"
    grey: bool = False  # also the file-decoded grey page, for models that read it (OcrModel.reads_grey)
    pixels: bool = False  # render text-layer pages too, for outputs that draw the page
    documents: DocumentSettings = field(default_factory=DocumentSettings)


def parse_ocr(value: str | None) -> str:
    value = value or "auto"
    if value not in OCR_MODES:
        raise ClientError(400, "invalid_ocr", f"ocr={value!r} is not accepted: use ocr=auto (a PDF page's text "
                                              "layer where it has one, the default) or ocr=force (OCR every page)")
    return value


def parse_dpi(value: str | None, docs: DocumentSettings) -> float | None:
    if value is None or value == "":
        return None
    try:
        dpi = float(value)
    except ValueError:
        dpi = float("nan")
    if not docs.min_dpi <= dpi <= docs.max_dpi:  # NaN fails too
        raise ClientError(400, "invalid_dpi", f"dpi={value!r} is not accepted: send a number from "
                                              f"{docs.min_dpi:g} to {docs.max_dpi:g} (default {docs.dpi:g})")
    return dpi


def count_pages(data: bytes, limits: Limits) -> int:
    """Pages in one upload, none rendered: a PDF's pages, a TIFF's frames, 1 for any other image.

    Raises ClientError for what `read_pages` would refuse about the file as a whole (unreadable,
    encrypted, empty, past `max_document_pages`, not an accepted format)."""
    doc = _open(data, limits)
    try:
        return doc.count
    finally:
        doc.close()


def single_page(data: bytes, index: int, limits: Limits) -> bytes:
    """Page `index` (0-based) of an upload as a file of its own: a one-page PDF, a one-frame TIFF,
    or the image itself. A job posts each page so, and never the whole document per page."""
    if pdf.is_pdf(data):
        doc = pdf.PdfFile(data)
        try:
            return doc.extract(index)
        finally:
            doc.close()
    with images.open_image(data, limits) as img:
        # The header says the format; counting a TIFF's frames for every page of a job would walk
        # its chain of directories once per page.
        if img.format != "TIFF":
            return data
    return images.tiff_page(data, index, limits)


def read_pages(blobs: Sequence[bytes], limits: Limits, options: ReadOptions) -> Iterator[PageImage]:
    """Every selected page of every upload, in upload order then page order, one at a time.

    All files are opened and their selections checked first (page past the end: 400; more than
    `max_pages` in all: 413), so a refusal costs no render."""
    opened: list[_Document] = []
    try:
        plan: list[tuple[int, _Document, list[int]]] = []
        for number, blob in enumerate(blobs):
            doc = _open(blob, limits)
            opened.append(doc)
            what = f"file {number + 1}" if len(blobs) > 1 else "the file"
            plan.append((number, doc, options.pages.pick(doc.count, what)))
        total = sum(len(indexes) for _, _, indexes in plan)
        if total > limits.max_pages:
            raise ClientError(
                413, "too_many_pages",
                f"the request asks for {total} pages; a synchronous request reads at most {limits.max_pages}: "
                "post the document to the asynchronous POST /v1/jobs, or pick pages with ?pages=")
        for number, doc, indexes in plan:
            for index in indexes:
                yield doc.page(number, index, options, limits)
    finally:
        for doc in opened:
            doc.close()


class _Document(Protocol):
    count: int

    def page(self, file: int, index: int, options: ReadOptions, limits: Limits) -> PageImage: ...

    def close(self) -> None: ...


class _ImageDocument:
    """A plain image (1 page) or a multi-page TIFF, decoded by Pillow page by page."""

    def __init__(self, data: bytes, limits: Limits):
        self.data = data
        self.count = images.tiff_frames(data, limits)

    def page(self, file: int, index: int, options: ReadOptions, limits: Limits) -> PageImage:
        start = time.perf_counter()
        if index == 0:
            rgb, grey = images.decode_page(self.data, limits, options.grey)
        else:
            # OpenCV decodes only a TIFF's first page: later pages' grey comes from their RGB.
            rgb, grey = images.decode_frame(self.data, index, limits), None
        height, width = rgb.shape[:2]
        return PageImage(file, index + 1, width, height, "ocr", rgb=rgb, grey=grey,
                         decode_seconds=time.perf_counter() - start)

    def close(self) -> None:
        """Nothing is held open between pages: each is decoded from the bytes."""


class _PdfDocument:
    def __init__(self, data: bytes, limits: Limits):
        self.pdf = pdf.PdfFile(data)
        self.count = self.pdf.count
        if self.count > limits.max_document_pages:
            self.pdf.close()
            raise ClientError(413, "too_many_pages",
                              f"the PDF has {self.count:,} pages; a document may have at most "
                              f"{limits.max_document_pages:,}: split it")

    def page(self, file: int, index: int, options: ReadOptions, limits: Limits) -> PageImage:
        start = time.perf_counter()
        docs = options.documents
        size = self.pdf.size(index)
        dpi = pdf.fit_dpi(size, options.dpi or docs.dpi, index + 1, limits, docs)
        width, height = size.pixels(dpi)
        if options.ocr == "auto":
            lines = self.pdf.text_lines(index, dpi)
            if lines is not None:
                rgb = self.pdf.render(index, dpi) if options.pixels else None
                return PageImage(file, index + 1, width, height, "text-layer", dpi=dpi, rgb=rgb, lines=lines,
                                 decode_seconds=time.perf_counter() - start)
        rgb = self.pdf.render(index, dpi)
        height, width = rgb.shape[:2]
        return PageImage(file, index + 1, width, height, "ocr", dpi=dpi, rgb=rgb,
                         decode_seconds=time.perf_counter() - start)

    def close(self) -> None:
        self.pdf.close()


def _open(data: bytes, limits: Limits) -> _Document:
    if pdf.is_pdf(data):
        return _PdfDocument(data, limits)
    return _ImageDocument(data, limits)
