"""The OCR API: POST /v1/parse and GET /v1/models.

A parse request goes through three steps, each timed: decode (uploaded bytes -> RGB arrays,
service/documents/images.py), predict (the model's detect + recognise, service/ocr/model.py) and encode (pages ->
the JSON a client gets).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from flask import Blueprint, g, jsonify, request

from ..documents.images import decode_page
from ..errors import ClientError
from ..ocr import allocator
from ..ocr.model import OcrModel
from ..ocr.types import Page
from . import annotate, guards, metrics, state
from .guards import Deadline

bp = Blueprint("api", __name__, url_prefix="/v1")
bp.before_request(guards.check_upload)

# Multipart fields that may carry images: `image` is documented, `file` is what many clients send.
FIELDS = ("image", "file")
HOW_TO_SEND = ("send the image as a multipart/form-data field 'image' (or 'file'; several files allowed), "
               "or as the raw request body with Content-Type image/*")


def uploads() -> list[bytes]:
    """The uploaded files' bytes, from multipart fields or from a raw image/* body."""
    if request.mimetype == "multipart/form-data":
        files = [f for name in FIELDS for f in request.files.getlist(name)]
        if not files:
            sent = ", ".join(repr(name) for name in request.files) or "none"
            raise ClientError(400, "missing_image", f"no file in the form (file fields sent: {sent}): {HOW_TO_SEND}")
        blobs = [f.read() for f in files]
    elif request.mimetype.startswith("image/"):
        blobs = [request.get_data()]
    else:
        raise ClientError(415, "unsupported_media_type",
                       f"Content-Type {request.mimetype or '(none)'} is not accepted: {HOW_TO_SEND}")
    max_images = state.current().cfg.limits.max_images
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


def decode_all(blobs: list[bytes], with_grey: bool,
               deadline: Deadline) -> tuple[list[np.ndarray], list[np.ndarray | None] | None]:
    """RGB pages, plus the file-decoded grey pages when the model reads grey (model.reads_grey)."""
    limits = state.current().cfg.limits
    images, greys = [], []
    for number, blob in enumerate(blobs, 1):
        deadline.check(f"decoding image {number}")
        rgb, grey = decode_page(blob, limits, with_grey)
        images.append(rgb)
        greys.append(grey)
    return images, greys if with_grey else None


def predict(model: OcrModel, images: list[np.ndarray], greys: list[np.ndarray | None] | None,
            mode: str) -> list[Page]:
    """The model's full pipeline, or its recognizer alone on each whole image (mode=line)."""
    return (model.recognize if mode == "line" else model.parse)(images, greys)


def model_json(model: OcrModel) -> dict[str, Any]:
    return {"name": model.info.name, "version": model.info.version,
            "weights_sha256": dict(model.info.weights_sha256)}


def encode(model: OcrModel, pages: list[Page], timing: dict[str, float]) -> dict[str, Any]:
    return {
        "request_id": g.request_id,
        "model": model_json(model),
        "images": [{"width": p.width, "height": p.height, "angle": p.angle, "text": p.text,
                    "lines": [line.to_json() for line in p.lines]} for p in pages],
        "timing_ms": {stage: round(seconds * 1000, 3) for stage, seconds in timing.items()},
    }


@bp.post("/parse")
def parse():
    start = time.perf_counter()
    mode = read_mode()
    worker = state.current()
    model = worker.require()  # 503 before anything is read while the model loads
    deadline = guards.deadline()
    images, greys = decode_all(uploads(), model.reads_grey, deadline)
    decoded = time.perf_counter()
    deadline.check("the model call")
    pages = predict(model, images, greys, mode)
    # The page's tensors are freed by now: memory past the worker's allowance goes back to the kernel.
    allocator.release_above(worker.cfg.limits.worker_memory_bytes)
    deadline.check("the end of the model call")  # a late result is a 504 too: the deadline is a promise
    timing = {
        "decode": decoded - start,
        "detect": sum(p.timing.get("detect", 0.0) for p in pages),
        "recognize": sum(p.timing.get("recognize", 0.0) for p in pages),
        "total": time.perf_counter() - start,
    }
    for stage, seconds in timing.items():
        if not (stage == "detect" and mode == "line"):  # no detection ran: a 0 would skew the histogram
            metrics.STAGE_SECONDS.labels(stage).observe(seconds)
    metrics.IMAGES.inc(len(pages))
    metrics.LINES.inc(sum(len(p.lines) for p in pages))
    body = encode(model, pages, timing)
    # ?annotate=1 also keeps each image with its boxes as /results/<id>.png (service/web/annotate.py).
    if request.args.get("annotate") == "1":
        results = worker.cfg.results
        for image, page, out in zip(images, pages, body["images"]):
            out["annotated_url"] = annotate.annotate(image, [line.quad for line in page.lines], results)
    return jsonify(body)


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
                     "processes": inst.processes, "threads": inst.threads},
    })
