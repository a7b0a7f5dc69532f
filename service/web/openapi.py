"""GET /openapi.json: the OpenAPI 3 description of every route, errors included.

The document is written out by hand, next to the routes it describes, so that it says what the
service promises (not what a generator infers). Errors that Nginx produces itself (413 body too
large, 429 rate limit, 503 no instance, 504 timeout) have the same JSON shape as the app's and
are listed too: a client sees one error format whoever answers.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from ..formats import FORMATS
from . import state

bp = Blueprint("openapi", __name__)


def _error(description: str, retry_after: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description,
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    if retry_after:
        response["headers"] = {"Retry-After": {"description": "Seconds to wait before retrying",
                                               "schema": {"type": "integer"}}}
    return response


def _json(ref: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


JOB_ID = {"name": "job_id", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{22}$"}}
# Every /v1/ route needs the key when keys are on, and is rate-limited (Nginx).
NO_KEY = _error("API keys are on and the Authorization header is missing or wrong")
RATE_LIMITED = _error("Over the rate limit", retry_after=True)
UNAVAILABLE = _error("The model is loading, failed to load, or no instance can take the request", retry_after=True)
INTERNAL = _error("Unexpected failure; the message carries the request id to quote")

FORMAT = {"name": "format", "in": "query", "required": False,
          "schema": {"type": "string", "enum": list(FORMATS), "default": "json"},
          "description": "json: the result below; text: the text in reading order; "
                         "markdown: headings, paragraphs, lists, tables and figures "
                         "(structure implied; page headers, footers and numbers left out); "
                         "hocr: hOCR 1.2 XHTML; alto: ALTO v4 XML; pdf: a searchable PDF "
                         "(the upload itself with an invisible text layer on each page the "
                         "model read; active content removed). All images make one "
                         "document."}
WORDS = {"name": "words", "in": "query", "required": False,
         "schema": {"type": "string", "enum": ["0", "1"]},
         "description": "json: 1 adds each line's words, with their quads (where the recognizer "
                        "read them, or a PDF text layer's own characters)"}


def _documents(description: str) -> dict[str, Any]:
    """A 200 in the format asked for: the JSON result, or one of the other formats' documents."""
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ParseResult"}},
                        **{FORMATS[f][0].partition(";")[0]: {"schema": {"type": "string"}}
                           for f in FORMATS if f != "json"}}}


SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"], "additionalProperties": False,
        "properties": {"error": {
            "type": "object", "required": ["code", "message"], "additionalProperties": False,
            "properties": {
                "code": {"type": "string", "description": "Stable machine-readable code, e.g. model_loading"},
                "message": {"type": "string", "description": "What went wrong and what to do about it"},
            }}},
    },
    "Model": {
        "type": "object", "required": ["name", "version", "weights_sha256"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "weights_sha256": {"type": "object", "additionalProperties": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                               "description": "Weight file name -> SHA-256 of its bytes"},
        },
    },
    "Line": {
        "type": "object", "required": ["text", "confidence", "quad"],
        "properties": {
            "text": {"type": "string"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "quad": {"$ref": "#/components/schemas/Quad"},
            "words": {"type": "array", "items": {"$ref": "#/components/schemas/Word"},
                      "description": "With ?words=1: the line's words, which joined by spaces give its text"},
        },
    },
    "Word": {
        "type": "object", "required": ["text", "confidence", "quad"],
        "properties": {
            "text": {"type": "string"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "quad": {"$ref": "#/components/schemas/Quad"},
        },
    },
    "Quad": {"type": "array", "minItems": 4, "maxItems": 4,
             "description": "Corners clockwise from top-left, in the image's pixels, rounded to 0.1 px",
             "items": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "number"}}},
    "Image": {
        "type": "object", "required": ["width", "height", "angle", "text", "lines", "file", "page", "source"],
        "properties": {
            "width": {"type": "integer", "minimum": 1},
            "height": {"type": "integer", "minimum": 1},
            "angle": {"type": "integer", "enum": [0, 90, 180, 270],
                      "description": ("Degrees counter-clockwise the image was turned before reading (a page "
                                      "scanned 90 degrees clockwise gives 90; a text-layer page 0); quads stay "
                                      "in the image's pixels")},
            "text": {"type": "string", "description": ("The lines in reading order: the parts of a row on one "
                                                        "line apart by spaces, blocks apart by a blank line")},
            "lines": {"type": "array", "items": {"$ref": "#/components/schemas/Line"},
                      "description": "In the model family's order (ppocr's parse pipeline: line by line down the upright page)"},
            "blocks": {"type": "array", "description": "Columns, paragraphs or a table, in reading order: "
                                                        "each the indices into lines of its lines, in reading order",
                       "items": {"type": "array", "items": {"type": "integer", "minimum": 0}}},
            "file": {"type": "integer", "minimum": 0, "description": "0-based index of the upload this page is from"},
            "page": {"type": "integer", "minimum": 1, "description": "1-based page in that file (1 for a single image)"},
            "source": {"type": "string", "enum": ["ocr", "text-layer"],
                       "description": "ocr: read by the model; text-layer: a PDF page's own text, exactly, "
                                      "with confidence 1"},
            "dpi": {"type": "number", "minimum": 0,
                    "description": "PDF pages only: the dpi the page was rendered (or measured) at; width, "
                                   "height and quads are pixels at this dpi. Lower than asked when the page "
                                   "would pass the pixel limit"},
            "regions": {"type": "array", "items": {"$ref": "#/components/schemas/Region"},
                        "description": "With structure=1 or format=markdown: the page's typed regions in reading "
                                       "order (headers first, footers last, captions beside their figure or "
                                       "table); each line is in at most one. text then follows them"},
            "tables": {"type": "array", "items": {"$ref": "#/components/schemas/Table"},
                       "description": "With structure: one per table region, in the regions' order"},
            # Only with ?annotate=1; null when the PNG alone is over [results] max_bytes.
            "annotated_url": {"type": "string", "nullable": True, "pattern": "^/results/[A-Za-z0-9_-]{22}\\.png$",
                              "description": ("With ?annotate=1: the image with its quads drawn, a PNG served at "
                                              "this path until it expires ([results] ttl_seconds)")},
        },
    },
    "Region": {
        "type": "object", "required": ["type", "quad", "score", "lines", "level"],
        "properties": {
            "type": {"type": "string", "enum": ["title", "heading", "text", "list", "table", "figure", "caption",
                                                "header", "footer", "equation", "reference"]},
            "quad": {"$ref": "#/components/schemas/Quad"},
            "score": {"type": "number", "minimum": 0, "maximum": 1,
                      "description": "The layout model's confidence; 0.5 for a region built from the lines alone"},
            "lines": {"type": "array", "items": {"type": "integer", "minimum": 0},
                      "description": "Indices into lines, in reading order"},
            "level": {"type": "integer", "minimum": 1, "maximum": 6, "nullable": True,
                      "description": "Headings and the title: 1 is the highest"},
        },
    },
    "Table": {
        "type": "object", "required": ["quad", "html", "cells"],
        "properties": {
            "quad": {"$ref": "#/components/schemas/Quad"},
            "html": {"type": "string", "description": "<table> with each cell's text, rowspan and colspan"},
            "cells": {"type": "array", "items": {
                "type": "object", "required": ["row", "col", "rowspan", "colspan", "quad", "text"],
                "properties": {"row": {"type": "integer", "minimum": 0}, "col": {"type": "integer", "minimum": 0},
                               "rowspan": {"type": "integer", "minimum": 1},
                               "colspan": {"type": "integer", "minimum": 1},
                               "quad": {"$ref": "#/components/schemas/Quad"}, "text": {"type": "string"}}}},
            "truncated": {"type": "boolean",
                          "description": "The table was longer than [structure] table_max_steps or "
                                         "max_table_cells: only its first whole rows are here"},
        },
    },
    "ParseResult": {
        "type": "object", "required": ["request_id", "model", "images", "timing_ms"],
        "properties": {
            "request_id": {"type": "string", "description": "Also in the X-Request-ID header and the logs"},
            "model": {"$ref": "#/components/schemas/Model"},
            "images": {"type": "array", "items": {"$ref": "#/components/schemas/Image"},
                       "description": "One entry per page: in upload order, then page order"},
            "timing_ms": {
                "type": "object", "required": ["decode", "detect", "recognize", "total"],
                "properties": {k: {"type": "number", "minimum": 0}
                               for k in ("decode", "detect", "recognize", "batch_wait", "structure", "total")},
                "description": "batch_wait: time the pages waited to join a batch, where batching is on; "
                               "structure: layout and tables, with structure",
            },
        },
    },
    "Models": {
        "type": "object", "required": ["model", "family", "precision", "device", "threads", "instance"],
        "properties": {
            "model": {"$ref": "#/components/schemas/Model"},
            "family": {"type": "string", "enum": ["ppocr", "easyocr"]},
            "precision": {"type": "string"},
            "device": {"type": "string", "description": "The device in use, e.g. cpu or cuda:0"},
            "threads": {"type": "integer", "minimum": 1},
            "instance": {"$ref": "#/components/schemas/Instance"},
        },
    },
    "Instance": {
        "type": "object", "required": ["port", "weight", "device", "processes", "threads", "batch_pages", "batch_wait_ms"],
        "properties": {
            "port": {"type": "integer"}, "weight": {"type": "integer", "minimum": 1},
            "device": {"type": "string", "description": "As declared; see Models.device for the one in use"},
            "processes": {"type": "integer", "minimum": 1}, "threads": {"type": "integer", "minimum": 1},
            "batch_pages": {"type": "integer", "minimum": 1,
                            "description": "Most pages one model call gathers from concurrent requests"},
            "batch_wait_ms": {"type": "number", "minimum": 0},
        },
    },
    "JobCreated": {
        "type": "object", "required": ["id", "status", "pages_total"],
        "properties": {"id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{22}$"},
                       "status": {"type": "string", "enum": ["queued"]},
                       "pages_total": {"type": "integer", "minimum": 1}},
    },
    "Job": {
        "type": "object", "required": ["id", "status", "pages_done", "pages_total", "created", "started", "finished", "error"],
        "properties": {
            "id": {"type": "string", "pattern": "^[A-Za-z0-9_-]{22}$"},
            "status": {"type": "string", "enum": ["queued", "running", "done", "failed", "cancelled", "deleted"]},
            "pages_done": {"type": "integer", "minimum": 0}, "pages_total": {"type": "integer", "minimum": 1},
            "created": {"type": "string", "format": "date-time"},
            "started": {"type": "string", "format": "date-time", "nullable": True,
                        "description": "When the job left the queue"},
            "finished": {"type": "string", "format": "date-time", "nullable": True},
            "error": {"type": "object", "nullable": True,
                      "description": "Why a failed job failed: the refused page's error and its number"},
        },
    },
    "Health": {"type": "object", "required": ["status", "pid"],
               "properties": {"status": {"type": "string", "enum": ["ok"]}, "pid": {"type": "integer"}}},
    "Ready": {
        "type": "object", "required": ["status", "pid", "instance"],
        "properties": {
            "status": {"type": "string", "enum": ["ready"]}, "pid": {"type": "integer"},
            "instance": {"type": "object", "required": ["port", "workers", "workers_ready"],
                         "properties": {"port": {"type": "integer"}, "workers": {"type": "integer"},
                                        "workers_ready": {"type": "integer"}}},
        },
    },
}


def document(max_body_bytes: int, max_images: int, max_pages: int,
             dpi: tuple[float, float, float]) -> dict[str, Any]:
    """The OpenAPI document for this deployment's limits (dpi: min, default, max)."""
    images = {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1, "maxItems": max_images}
    return {
        "openapi": "3.0.3",
        "info": {"title": "parse", "version": "1",
                 "description": "Self-hosted OCR: post images or PDFs, get their text lines with quads and confidences."},
        "paths": {
            "/v1/parse": {"post": {
                "summary": "Read the text lines of one or more images or documents (PDF, multi-page TIFF)",
                "description": (f"Multipart field `image` (or `file`), one or more files, at most {max_images}; "
                                f"or the raw body with Content-Type image/* or application/pdf. Bodies up to "
                                f"{max_body_bytes} bytes. Every page of a PDF or TIFF is read, at most "
                                f"{max_pages} pages per request (longer documents: POST /v1/jobs). A PDF page "
                                "that carries text (visible or an earlier OCR's hidden text) returns it "
                                "as it is, unless ocr=force."),
                # Results as files.
                "parameters": [{"name": "annotate", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": ["0", "1"]},
                                "description": "1: also keep each image with its boxes drawn as a PNG; "
                                               "its path is the image's annotated_url"},
                               {"name": "mode", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": ["page", "line", "table"], "default": "page"},
                                "description": "page: find every text line; line: each image is one text "
                                               "line (a crop), read without detection; table: each image is "
                                               "one table (a crop): its lines, then its cells in `tables`"},
                               FORMAT,
                               {"name": "structure", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": ["0", "1"]},
                                "description": "1: find each page's typed regions (title, heading, text, list, "
                                               "table, figure, caption, header, footer, equation, reference) and "
                                               "read its tables into cells; hOCR and ALTO then carry them. Costs "
                                               "a layout pass per page and a table pass per table; mode=page only"},
                               WORDS,
                               {"name": "pages", "in": "query", "required": False,
                                "schema": {"type": "string", "pattern": "^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$",
                                           "maxLength": 200},
                                "description": "Pages to read from each file, 1-based and inclusive, e.g. 2-4,7; "
                                               "default every page. A page past the end is a 400 that says how "
                                               "many there are"},
                               {"name": "dpi", "in": "query", "required": False,
                                "schema": {"type": "number", "minimum": dpi[0], "maximum": dpi[2], "default": dpi[1]},
                                "description": "Resolution PDF pages are rendered at"},
                               {"name": "ocr", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": ["auto", "force"], "default": "auto"},
                                "description": "auto: a PDF page's text layer where it has one, OCR elsewhere; "
                                               "force: OCR every page"}],
                "requestBody": {"required": True, "content": {
                    "multipart/form-data": {"schema": {"type": "object", "properties": {"image": images, "file": images}}},
                    "image/*": {"schema": {"type": "string", "format": "binary"}},
                    "application/pdf": {"schema": {"type": "string", "format": "binary"}},
                }},
                "responses": {
                    "200": _documents("The text of every page of every image or PDF, in the format asked for"),
                    "400": _error("No image in the request, an empty file, bytes that are not a readable image "
                                  "or PDF, a password-protected or page-less PDF, a page past the end, or a bad "
                                  "mode, format, structure, words, annotate, pages, dpi or ocr"),
                    "401": NO_KEY,
                    "405": _error("A method other than POST (TRACE and CONNECT are refused by Nginx)"),
                    "408": _error("The request did not arrive in time"),
                    # Nginx de-chunks bodies; a client talking to uWSGI directly must send a length.
                    "411": _error("A chunked body sent to an instance directly, without Nginx"),
                    "413": _error("Body, pixel count, side, number of images or of pages over the limit, or a "
                                  "PDF page too large even at the lowest dpi"),
                    "414": _error("The URL is too long for Nginx's buffers"),
                    "415": _error("Not multipart/form-data, image/* or application/pdf, or a format that is not "
                                  "accepted"),
                    "421": _error("An absolute request line for a host other than Host: this is not a proxy"),
                    "422": _error("format=pdf: a PDF read, but too damaged to add a text layer to; with "
                                  "structure: a page holds more layout regions or tables than [structure] "
                                  "max_regions or max_tables"),
                    "429": RATE_LIMITED,
                    "431": _error("The headers are too large for Nginx's buffers"),
                    "500": INTERNAL,
                    "503": UNAVAILABLE,
                    "504": _error("The request ran past its deadline"),
                },
            }},
            "/v1/models": {"get": {
                "summary": "The model, its weights' sums, the device, the threads and the instance",
                "responses": {"200": _json("#/components/schemas/Models", "The model this worker serves"),
                              "401": NO_KEY, "429": RATE_LIMITED,
                              "500": INTERNAL, "503": UNAVAILABLE},
            }},
            "/v1/jobs": {"post": {
                "summary": "Submit a long document (same body and query as /v1/parse); poll its status",
                "responses": {
                    "202": {**_json("#/components/schemas/JobCreated", "Queued"),
                            "headers": {"Location": {"description": "/v1/jobs/<id>", "schema": {"type": "string"}}}},
                    "400": _error("Empty body, a bad pages, mode, format, structure, words or annotate, or a broken file"),
                    "401": NO_KEY,
                    "411": _error("Chunked body"),
                    "413": _error("Past [jobs] max_bytes or max_pages, or an image past the pixel limits"),
                    "415": _error("Not an accepted image type"),
                    "429": _error("Too many of this key's (or client's) jobs are unfinished, or over the rate limit",
                                  retry_after=True),
                    "500": INTERNAL,
                    "503": _error("The job store is full of unfinished jobs, or no instance can take it",
                                  retry_after=True),
                },
            }},
            "/v1/jobs/{job_id}": {
                "get": {"summary": "A job's status and progress",
                        "parameters": [JOB_ID],
                        "responses": {"200": _json("#/components/schemas/Job", "The job"),
                                      "401": NO_KEY,
                                      "404": _error("Unknown, expired, deleted, or another key's job"),
                                      "429": RATE_LIMITED, "500": INTERNAL}},
                "delete": {"summary": "Cancel an unfinished job, or forget a finished one; its files go now",
                           "parameters": [JOB_ID],
                           "responses": {"200": _json("#/components/schemas/Job", "Cancelled (or deleted)"),
                                         "401": NO_KEY,
                                         "404": _error("Unknown, expired, deleted, or another key's job"),
                                         "429": RATE_LIMITED, "500": INTERNAL}},
            },
            "/v1/jobs/{job_id}/result": {"get": {
                "summary": "The body /v1/parse would have given for the whole upload, once the job is done",
                # format and words default to the ones the job was submitted with.
                "parameters": [JOB_ID, FORMAT, WORDS],
                "responses": {"200": _documents("Every page, in page order, in the format asked for"),
                              "400": _error("A bad format or words"),
                              "401": NO_KEY,
                              "404": _error("Unknown, expired, deleted, or another key's job"),
                              "409": _error("Not done (yet): queued, running, failed or cancelled", retry_after=True),
                              "422": _error("format=pdf: the uploaded PDF is too damaged to add a text layer to"),
                              "429": RATE_LIMITED, "500": INTERNAL},
            }},
            "/healthz": {"get": {"summary": "The worker process lives",
                                 "responses": {"200": _json("#/components/schemas/Health", "Alive"),
                                               "503": UNAVAILABLE}}},
            "/readyz": {"get": {
                "summary": "This worker's model is loaded and warmed",
                "responses": {"200": _json("#/components/schemas/Ready", "Ready to parse"), "503": UNAVAILABLE},
            }},
            "/metrics": {"get": {
                "summary": "Prometheus metrics summed over every worker of every instance",
                "responses": {"200": {"description": "Prometheus text format",
                                      "content": {"text/plain": {"schema": {"type": "string"}}}},
                              "403": _error("Not loopback nor a network in [auth] metrics_allow"),
                              "503": UNAVAILABLE},
            }},
            "/openapi.json": {"get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3", "content": {"application/json": {"schema": {"type": "object"}}}}},
            }},
        },
        "components": {"schemas": SCHEMAS},
    }


@bp.get("/openapi.json")
def openapi_json():
    cfg = state.current().cfg
    docs = cfg.documents
    return jsonify(document(cfg.limits.max_body_bytes, cfg.limits.max_images, cfg.limits.max_pages,
                            (docs.min_dpi, docs.dpi, docs.max_dpi)))
