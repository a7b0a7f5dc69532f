"""Results as documents: JSON, plain text, Markdown, hOCR, ALTO and searchable PDF, from pages in order.

`render(pages, format, uploads)` is the one entry point for every caller (the parse route, job
results, the CLI): pages are the model's Page objects or the JSON image entries a response
carries; uploads are the files they were read from, which the searchable PDF is drawn over.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from ..errors import ClientError
from ..ocr.types import Page
from . import document, markdown, pdf, xml

# format -> (media type, file extension)
FORMATS: dict[str, tuple[str, str]] = {
    "json": ("application/json", "json"),
    "text": ("text/plain; charset=utf-8", "txt"),
    "markdown": ("text/markdown; charset=utf-8", "md"),
    "hocr": ("application/xhtml+xml; charset=utf-8", "hocr.html"),
    "alto": ("application/xml; charset=utf-8", "alto.xml"),
    "pdf": ("application/pdf", "pdf"),
}


def check(name: str) -> str:
    """The format, or a 400 that lists the formats there are."""
    if name not in FORMATS:
        raise ClientError(400, "invalid_format", f"format={name!r} is not offered: use one of {', '.join(FORMATS)}")
    return name


def image_json(page: Page, words: bool = False) -> dict[str, Any]:
    """One image's JSON entry: the turn it was read at, its text in reading order, its lines as
    found, and its blocks."""
    return {"width": page.width, "height": page.height, "angle": page.angle, "text": page.text,
            "lines": [line.to_json(words) for line in page.lines],
            "blocks": page.layout().block_lines()}


def text(pages: Sequence[document.DocPage]) -> str:
    """Each page's text in reading order (its regions' when structure ran); pages apart by a form
    feed, as pdftotext parts them."""
    return "\f".join(_page_text(p) + "\n" for p in pages)


def _page_text(page: document.DocPage) -> str:
    if not page.regions:
        return page.layout.text([line.text for line in page.lines])
    return "\n\n".join(text for text in ("\n".join(" ".join(l.text.strip() for l in row if l.text.strip())
                                                    for row in block.rows) for block in page.blocks()) if text)


def render(pages: Sequence[document.PageLike], format: str,
           uploads: Sequence[bytes] | None = None) -> tuple[bytes, str]:
    """(document bytes, media type).

    uploads: the request's files, in order, for the searchable PDF: each page entry's `file`
    indexes them, its `page` is the PDF page or TIFF frame (1-based), its `source` says whether
    it was OCRed ("ocr": it gains a text layer) or read from its own text layer ("text-layer":
    kept as it is), and its `dpi` the resolution its pixel coordinates are at. Without uploads,
    the text is set over blank pages. Every other format ignores them."""
    media_type = FORMATS[check(format)][0]
    docs = [document.page(p) for p in pages]
    if format == "json":
        entries = [image_json(p) if isinstance(p, Page) else dict(p) for p in pages]
        return json.dumps({"images": entries}, ensure_ascii=False).encode(), media_type
    if format == "text":
        return text(docs).encode(), media_type
    if format == "markdown":
        return markdown.markdown(docs), media_type
    if format == "hocr":
        return xml.hocr(docs), media_type
    if format == "alto":
        return xml.alto(docs), media_type
    return pdf.pdf(docs, uploads), media_type
