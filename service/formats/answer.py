"""The JSON answer of /v1/parse, built here once for every caller: the parse route, and the command
line (service/ops/cli.py), which writes the API's JSON for a file, key for key.

A page is read from its own text layer as it is, or by the model from its pixels; its entry is the
single-image keys (formats.image_json) and then where the page came from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..errors import ClientError
from ..ocr.types import Page
from ..structure import TooManyRegions
from . import image_json

if TYPE_CHECKING:  # the model's loader pulls in every family: a type is all this module needs
    from ..documents import PageImage
    from ..ocr.model import OcrModel
    from ..structure import StructureModel

def predict(model: OcrModel, images: list[np.ndarray], greys: list[np.ndarray | None] | None,
            mode: str) -> list[Page]:
    """The model's full pipeline, or its recognizer alone on each whole image (mode=line)."""
    return (model.recognize if mode == "line" else model.parse)(images, greys)


def read(model: OcrModel, doc: PageImage, mode: str) -> Page:
    """The page's text: its text layer as it is, or the model's reading of its pixels."""
    if doc.lines is not None:
        return Page(doc.width, doc.height, doc.lines)
    return predict(model, [doc.rgb], [doc.grey], mode)[0]


def model_json(model: OcrModel) -> dict[str, Any]:
    return {"name": model.info.name, "version": model.info.version,
            "weights_sha256": dict(model.info.weights_sha256)}


def page_json(doc: PageImage, page: Page, words: bool) -> dict[str, Any]:
    """One page's entry: the single-image keys first, unchanged, then where the page came from."""
    out = image_json(page, words)
    out |= {"file": doc.file, "page": doc.page, "source": doc.source}
    if doc.dpi is not None:
        out["dpi"] = doc.dpi
    return out


def structure_json(structure: StructureModel, doc: PageImage, page: Page,
                   check: Callable[[str], None] = lambda what: None) -> dict[str, Any]:
    """The page's regions and tables, and its text in their reading order (?structure=1). `check`
    is called before each costly step: a request's deadline."""
    try:
        found = structure.analyse(doc.rgb, page.lines, check)
    except TooManyRegions as err:
        raise ClientError(422, "too_many_regions", f"page {doc.page}: {err}; send the tables as crops with "
                                                   "mode=table, or the page without structure") from None
    return {"text": found.text(page.lines), **found.to_json()}


def table_json(structure: StructureModel, doc: PageImage, page: Page) -> dict[str, Any]:
    """mode=table: the whole image is one table, its cells filled from the page's lines; one table
    region holds every line, so Markdown, hOCR and ALTO write the table."""
    table = structure.table.read(doc.rgb, None, page.lines).to_json()
    return {"regions": [{"type": "table", "quad": table["quad"], "score": 1.0,
                         "lines": list(range(len(page.lines))), "level": None}],
            "tables": [table]}


def answer(model: OcrModel, entries: list[dict[str, Any]], timing: dict[str, float],
           request_id: str | None = None) -> dict[str, Any]:
    """The whole answer: the request's id (a request has one, the command line none), the model,
    the pages' entries and each stage's milliseconds."""
    head = {"request_id": request_id} if request_id is not None else {}
    return head | {"model": model_json(model), "images": entries,
                   "timing_ms": {stage: round(seconds * 1000, 3) for stage, seconds in timing.items()}}
