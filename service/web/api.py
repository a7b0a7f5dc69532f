"""The OCR API: POST /v1/parse and GET /v1/models.

A parse request goes through three steps, each timed: decode (uploads -> pages, one at a time:
service/documents), predict (the model's detect + recognise, service/ocr/model.py; with batching
across requests, a document's pages together: service/web/reading.py) and encode (pages -> the
JSON a client gets). A PDF page with a text layer skips the model.
"""

from __future__ import annotations

import time
from contextlib import closing
from typing import Any

import numpy as np
from flask import Blueprint, Response, g, jsonify, request

from .. import documents, formats
from ..errors import ClientError
from ..ocr import allocator
from ..ocr.model import OcrModel
from ..formats.answer import answer, model_json, page_json
from . import annotate, guards, metrics, reading, state

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
# is what a crop wants, and far cheaper with ppocr, whose detector first upscales to 736 px.
MODES = ("page", "line")


def read_mode() -> str:
    """The query's mode, checked before the body is read: a typo costs the client no upload."""
    mode = request.args.get("mode", "page")
    if mode not in MODES:
        raise ClientError(400, "invalid_mode", f"mode={mode!r} is not accepted: use mode=page (find every text line, "
                                            "the default) or mode=line (each image is one text line)")
    return mode


def read_format() -> str:
    """?format= (json by default), checked before the body is read, like the mode."""
    return formats.check(request.args.get("format", "json"))


def read_options(model: OcrModel, pixels: bool) -> documents.ReadOptions:
    """?pages=, ?dpi= and ?ocr=, checked before the body is read. `pixels`: render text-layer
    pages too, for an output that draws them (the searchable PDF, ?annotate=1)."""
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
    worker = state.current()
    deadline = guards.deadline()
    model = worker.await_model(deadline.remaining())  # a fresh worker's model may still be loading
    annotated = request.args.get("annotate") == "1"
    options = read_options(model, pixels=annotated or fmt == "pdf")
    start = time.perf_counter()  # the stages time the work, not the wait for a model
    limits = worker.cfg.limits
    entries: list[dict[str, Any]] = []
    # The searchable PDF draws every page's image under its text: only then are pixels kept.
    backgrounds: list[np.ndarray | None] = []
    timing = {"decode": 0.0, "detect": 0.0, "recognize": 0.0}
    ocr_pages = lines = 0
    pages = documents.read_pages(uploads(), limits, options)
    # Pixels the output draws (options.pixels) stay with each page after its reading.
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
            # Other formats are built from the entries, with every word's box.
            entry = page_json(doc, page, words=fmt != "json" or request.args.get("words") == "1")
            # ?annotate=1 also keeps each page with its boxes as /results/<id>.png (service/web/annotate.py).
            if annotated:
                entry["annotated_url"] = annotate.annotate(doc.rgb, [line.quad for line in page.lines], worker.cfg.results)
            if fmt == "pdf":
                backgrounds.append(doc.rgb)
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
        document, media_type = formats.render(entries, fmt, backgrounds or None)
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
