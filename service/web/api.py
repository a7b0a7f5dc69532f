"""The OCR API: POST /v1/parse and GET /v1/models.

A parse request goes through three steps, each timed: decode (uploads -> pages, one at a time:
service/documents), predict (the model's detect + recognise, service/ocr/model.py; with batching
across requests, a document's pages together: service/web/reading.py) and encode (pages -> the
JSON a client gets). A PDF page with a text layer skips the model.
"""

from __future__ import annotations

import logging
import time
from contextlib import closing
from typing import Any

from flask import Blueprint, Response, g, jsonify, request

from .. import documents, formats
from ..errors import ClientError
from ..ocr import allocator
from ..ocr.model import OcrModel
from ..formats.answer import answer, model_json, page_json, structure_json, table_json
from ..store.db import Unavailable
from . import annotate, guards, metrics, reading, results, state

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/v1")
bp.before_request(guards.check_upload)
bp.teardown_request(guards.leave)

# Multipart fields that may carry images: `image` is documented, `file` is what many clients send.
FIELDS = ("image", "file")
HOW_TO_SEND = ("send the image or PDF as a multipart/form-data field 'image' (or 'file'; several files "
               "allowed), or as the raw request body with Content-Type image/* or application/pdf")
RAW_TYPES = ("application/pdf",)


def uploads(max_files: int | None = None) -> list[bytes]:
    """The uploaded files' bytes, from multipart fields or from a raw image/* or PDF body.

    At most `max_files` (default [limits] max_images; a job allows as many as its pages)."""
    if request.mimetype == "multipart/form-data":
        files = [f for name in FIELDS for f in request.files.getlist(name)]
        if not files:
            sent = ", ".join(repr(name) for name in request.files) or "none"
            raise ClientError(400, "missing_image", f"no file in the form (file fields sent: {sent}): {HOW_TO_SEND}")
        blobs = [f.read() for f in files]
    elif request.mimetype.startswith("image/") or request.mimetype in RAW_TYPES:
        blobs = [request.get_data()]
    else:
        raise ClientError(415, "unsupported_media_type",
                       f"Content-Type {request.mimetype or '(none)'} is not accepted: {HOW_TO_SEND}")
    max_images = max_files or state.current().cfg.limits.max_images
    if len(blobs) > max_images:
        raise ClientError(413, "too_many_images", f"{len(blobs)} images sent; at most {max_images} per request")
    return blobs


# ?mode=: "page" finds every line; "line" reads each image as one text line (no detection), which
# is what a crop wants, and far cheaper with ppocr, whose detector first upscales to 736 px;
# "table" reads each image as one table: its lines, then the table model's cells (no layout).
MODES = ("page", "line", "table")


def read_mode() -> str:
    """The query's mode, checked before the body is read: a typo costs the client no upload."""
    mode = request.args.get("mode", "page")
    if mode not in MODES:
        raise ClientError(400, "invalid_mode", f"mode={mode!r} is not accepted: use mode=page (find every text line, "
                                            "the default), mode=line (each image is one text line) or "
                                            "mode=table (each image is one table)")
    return mode


def read_format() -> str:
    """?format= (json by default), checked before the body is read, like the mode."""
    return formats.check(request.args.get("format", "json"))


def keep_annotated(worker: state.WorkerState, rgb, quads) -> str | None:
    """The page drawn with its boxes, kept as /results/<id>.png: a file on one host, the store in a
    fleet ([store] url), which every host serves from. While the store is unreachable the page is
    still read and answered, without its link (null, as for a PNG over [results] max_bytes)."""
    png = annotate.encode_png(annotate.draw(rgb, quads))
    if not worker.cfg.store.url:
        return annotate.write_png(png, worker.cfg.results)
    try:
        return results.keep(worker.db, png, worker.cfg.results)
    except Unavailable as err:
        log.warning("annotated PNG not kept, the store is unreachable: %s", err)
        return None


# A flag's values: 1 on, 0 off; empty or absent is the default.
FLAG_VALUES = (None, "", "0", "1")


def read_words(default: str | None = None) -> bool:
    """?words=1: every word's box in the JSON answer (other formats always carry them); checked
    before the body is read. `default`: a job's kept value, for its result."""
    value = request.args.get("words", default)
    if value not in FLAG_VALUES:
        raise ClientError(400, "invalid_words", f"words={value!r} is not accepted: use words=1 (every word's box "
                                                "in the JSON answer) or words=0")
    return value == "1"


def read_annotate() -> bool:
    """?annotate=1: each page drawn with its boxes, kept as /results/<id>.png; checked before the
    body is read."""
    value = request.args.get("annotate")
    if value not in FLAG_VALUES:
        raise ClientError(400, "invalid_annotate", f"annotate={value!r} is not accepted: use annotate=1 (each page "
                                                   "drawn with its boxes, linked as annotated_url) or annotate=0")
    return value == "1"


def read_structure(fmt: str, mode: str) -> bool:
    """Whether to find the pages' regions and tables: ?structure=1, or an output written from them
    (Markdown), or the [structure] default; checked before the body is read."""
    value = request.args.get("structure")
    if value not in FLAG_VALUES:
        raise ClientError(400, "invalid_structure", f"structure={value!r} is not accepted: use structure=1 (regions "
                                                    "and tables in the answer) or structure=0")
    wanted = fmt == "markdown" or value == "1" or (
        value in (None, "") and state.current().cfg.structure.enabled_by_default)
    if wanted and mode == "line":
        raise ClientError(400, "invalid_structure", "mode=line reads each image as one text line, which has no "
                                                    "layout: drop structure=1 and format=markdown, or use mode=page")
    return wanted


def read_options(model: OcrModel, pixels: bool) -> documents.ReadOptions:
    """?pages=, ?dpi= and ?ocr=, checked before the body is read. `pixels`: render text-layer
    pages too, for an output that draws them (?annotate=1)."""
    docs = state.current().cfg.documents
    return documents.ReadOptions(
        pages=documents.parse_pages(request.args.get("pages")),
        dpi=documents.parse_dpi(request.args.get("dpi"), docs),
        ocr=documents.parse_ocr(request.args.get("ocr")),
        grey=model.reads_grey,
        documents=docs,
        pixels=pixels,
    )


@bp.post("/parse")
def parse():
    mode = read_mode()
    fmt = read_format()
    structured = read_structure(fmt, mode)
    words = fmt != "json" or read_words()  # other formats are built from the entries, with every word's box
    annotated = read_annotate()
    worker = state.current()
    deadline = guards.deadline()
    model = worker.await_model(deadline.remaining())  # a fresh worker's model may still be loading
    structure = worker.require_structure() if structured or mode == "table" else None
    # The layout and table models read the page's pixels, a text-layer page's too (its text stays the layer's).
    options = read_options(model, pixels=annotated or structured or mode == "table")
    start = time.perf_counter()  # the stages time the work, not the wait for a model
    limits = worker.cfg.limits
    entries: list[dict[str, Any]] = []
    timing = {"decode": 0.0, "detect": 0.0, "recognize": 0.0}
    ocr_pages = lines = 0
    # The searchable PDF is the uploads themselves with the text added: their bytes stay at hand.
    files = uploads()
    pages = documents.read_pages(files, limits, options)
    # Pixels the request renders for itself (options.pixels) stay with each page after its reading.
    with closing(reading.readings(model, pages, mode, deadline, keep_pixels=options.pixels)) as read:
        for doc, page in read:
            timing["decode"] += doc.decode_seconds
            if doc.lines is None:
                ocr_pages += 1
                # The page's tensors are freed by now: memory past the worker's allowance goes back to the kernel.
                allocator.release_above(limits.worker_memory_bytes)
                heap = allocator.heap_in_use_bytes()
                if heap is not None:
                    metrics.HEAP_BYTES.set(heap)
            timing["detect"] += page.timing.get("detect", 0.0)
            timing["recognize"] += page.timing.get("recognize", 0.0)
            if "batch_wait" in page.timing:  # batching across requests is on (service/ocr/batching.py)
                timing["batch_wait"] = timing.get("batch_wait", 0.0) + page.timing["batch_wait"]
                metrics.BATCH_PAGES.observe(page.batch_pages)
            lines += len(page.lines)
            entry = page_json(doc, page, words=words)
            if mode == "table":  # the whole image is the table: its cells, filled from the page's lines
                deadline.check(f"the table of page {len(entries) + 1}")
                began = time.perf_counter()
                entry |= table_json(structure, doc, page)
                timing["table"] = timing.get("table", 0.0) + time.perf_counter() - began
            elif structure is not None:
                deadline.check(f"the layout of page {len(entries) + 1}")
                began = time.perf_counter()
                entry |= structure_json(structure, doc, page, lambda what: deadline.check(f"{what} on page {doc.page}"))
                timing["structure"] = timing.get("structure", 0.0) + time.perf_counter() - began
            # ?annotate=1 also keeps each page with its boxes as /results/<id>.png (service/web/annotate.py).
            if annotated:
                entry["annotated_url"] = keep_annotated(worker, doc.rgb, [line.quad for line in page.lines])
            entries.append(entry)
            doc = page = None  # the page's pixels go before the next page is rendered
    deadline.check("the end of the model call")  # a late result is a 504 too: the deadline is a promise
    timing["total"] = time.perf_counter() - start
    for stage, seconds in timing.items():
        # No detection ran in line mode, no model on text-layer pages: a 0 would skew the histogram.
        if stage in ("detect", "recognize") and (ocr_pages == 0 or (stage == "detect" and mode == "line")):
            continue
        metrics.STAGE_SECONDS.labels(stage).observe(seconds)
    metrics.IMAGES.inc(len(entries))
    metrics.LINES.inc(lines)
    if fmt != "json":
        document, media_type = formats.render(entries, fmt, files)
        name = f"parse-{g.request_id}.{formats.FORMATS[fmt][1]}"
        return Response(document, mimetype=None, content_type=media_type,
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
    return jsonify(answer(model, entries, timing, g.request_id))


@bp.get("/models")
def models():
    worker = state.current()
    model = worker.require()
    inst = worker.instance
    return jsonify({
        "model": model_json(model),
        "family": worker.cfg.model.family,
        "precision": model.precision,
        "device": str(model.device),
        "threads": inst.threads,
        "instance": {"port": inst.port, "weight": inst.weight, "device": inst.device,
                     "processes": inst.processes, "threads": inst.threads,
                     "batch_pages": inst.batch_pages, "batch_wait_ms": inst.batch_wait_ms},
    })
