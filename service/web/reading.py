"""A request's pages to the model and their readings back, in page order.

Without batching across requests (batch_pages = 1) each page is rendered, read and answered
before the next is rendered: one rendered page of a request is alive at a time, as before.

With batching (service/ocr/batching.py) a request hands each page to the inference thread as
soon as it is rendered and renders the next while the model reads, keeping at most `batch_pages`
of its pages handed in and not yet answered. So the pages of a PDF or TIFF share model calls with
each other and with other requests' pages, and a long document never holds more than a batch's
worth of rendered pages (plus the one being rendered). Each page's reading is what it gets alone.
A request that fails or passes its deadline withdraws the pages it handed in that no model call
has taken yet.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from ..documents import PageImage
from ..formats.answer import read
from ..ocr.batching import Batched, Pending
from ..ocr.model import OcrModel
from ..ocr.types import Page
from .guards import Deadline


def readings(model: OcrModel, docs: Iterator[PageImage], mode: str, deadline: Deadline,
             keep_pixels: bool) -> Iterator[tuple[PageImage, Page]]:
    """Each page of `docs` with its reading, in order. `keep_pixels`: the caller still needs each
    page's `rgb` after its reading (an annotated image, a searchable PDF); otherwise a page handed
    to the inference thread keeps its pixels only there, until it is read.

    Close the iterator when done with it (contextlib.closing): that withdraws what is left."""
    if isinstance(model, Batched):
        yield from _ahead(model, docs, mode, deadline, keep_pixels)
        return
    number = 0
    while True:
        number += 1
        deadline.check(f"reading page {number}")
        doc = next(docs, None)
        if doc is None:
            return
        deadline.check(f"the model call on page {number}")
        page = read(model, doc, mode)
        yield doc, page
        doc = page = None  # the page's pixels go before the next page is rendered


def _ahead(model: Batched, docs: Iterator[PageImage], mode: str, deadline: Deadline,
           keep_pixels: bool) -> Iterator[tuple[PageImage, Page]]:
    """Up to `model.max_pages` pages handed in ahead of the one waited for."""
    kind = "recognize" if mode == "line" else "parse"
    window: deque[tuple[PageImage, Pending | Page]] = deque()
    rendered = answered = 0
    more = True
    try:
        while True:
            if more and len(window) < model.max_pages:
                deadline.check(f"reading page {rendered + 1}")
                doc = next(docs, None)
                if doc is None:
                    more = False
                    continue
                rendered += 1
                if doc.lines is not None:  # a text layer: no model call
                    window.append((doc, Page(doc.width, doc.height, doc.lines)))
                else:
                    window.append((doc, model.submit(kind, doc.rgb, doc.grey)))
                    if not keep_pixels:
                        doc.rgb = doc.grey = None
                doc = None
                continue
            if not window:
                return
            answered += 1
            deadline.check(f"the model call on page {answered}")
            doc, reading = window.popleft()
            page = reading if isinstance(reading, Page) else reading.result()
            yield doc, page
            doc = page = reading = None
    finally:
        for _, reading in window:
            if isinstance(reading, Pending):
                reading.cancel()
