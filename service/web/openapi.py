"""GET /openapi.json: the OpenAPI 3 description of every route, errors included.

The document is written out by hand, next to the routes it describes, so that it says what the
service promises (not what a generator infers). Errors that Nginx produces itself (413 body too
large, 429 rate limit, 503 no instance, 504 timeout) have the same JSON shape as the app's and
are listed too: a client sees one error format whoever answers.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

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


UNAVAILABLE = _error("The model is loading, failed to load, or no instance can take the request", retry_after=True)
INTERNAL = _error("Unexpected failure; the message carries the request id to quote")

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
            "quad": {"type": "array", "minItems": 4, "maxItems": 4,
                     "description": "Corners clockwise from top-left, in the image's pixels",
                     "items": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "number"}}},
        },
    },
    "Image": {
        "type": "object", "required": ["width", "height", "angle", "text", "lines"],
        "properties": {
            "width": {"type": "integer", "minimum": 1},
            "height": {"type": "integer", "minimum": 1},
            "angle": {"type": "integer", "enum": [0, 90, 180, 270],
                      "description": ("Degrees counter-clockwise the image was turned before reading (a page "
                                      "scanned 90 degrees clockwise gives 90); quads stay in the image's pixels")},
            "text": {"type": "string", "description": "The lines in reading order, joined by newlines"},
            "lines": {"type": "array", "items": {"$ref": "#/components/schemas/Line"}},
            # Only with ?annotate=1; null when the PNG alone is over [results] max_bytes.
            "annotated_url": {"type": "string", "nullable": True, "pattern": "^/results/[A-Za-z0-9_-]{22}\\.png$",
                              "description": ("With ?annotate=1: the image with its quads drawn, a PNG served at "
                                              "this path until it expires ([results] ttl_seconds)")},
        },
    },
    "ParseResult": {
        "type": "object", "required": ["request_id", "model", "images", "timing_ms"],
        "properties": {
            "request_id": {"type": "string", "description": "Also in the X-Request-ID header and the logs"},
            "model": {"$ref": "#/components/schemas/Model"},
            "images": {"type": "array", "items": {"$ref": "#/components/schemas/Image"},
                       "description": "One entry per uploaded image, in upload order"},
            "timing_ms": {
                "type": "object", "required": ["decode", "detect", "recognize", "total"],
                "properties": {k: {"type": "number", "minimum": 0} for k in ("decode", "detect", "recognize", "total")},
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
        "type": "object", "required": ["port", "weight", "device", "processes", "threads"],
        "properties": {
            "port": {"type": "integer"}, "weight": {"type": "integer", "minimum": 1},
            "device": {"type": "string", "description": "As declared; see Models.device for the one in use"},
            "processes": {"type": "integer", "minimum": 1}, "threads": {"type": "integer", "minimum": 1},
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


def document(max_body_bytes: int, max_images: int) -> dict[str, Any]:
    """The OpenAPI document for this deployment's limits."""
    images = {"type": "array", "items": {"type": "string", "format": "binary"}, "minItems": 1, "maxItems": max_images}
    return {
        "openapi": "3.0.3",
        "info": {"title": "parse", "version": "1",
                 "description": "Self-hosted OCR: post images, get their text lines with quads and confidences."},
        "paths": {
            "/v1/parse": {"post": {
                "summary": "Read the text lines of one or more images",
                "description": (f"Multipart field `image` (or `file`), one or more files, at most {max_images}; "
                                f"or the raw body with Content-Type image/*. Bodies up to {max_body_bytes} bytes."),
                # Results as files.
                "parameters": [{"name": "annotate", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": ["0", "1"]},
                                "description": "1: also keep each image with its boxes drawn as a PNG; "
                                               "its path is the image's annotated_url"},
                               {"name": "mode", "in": "query", "required": False,
                                "schema": {"type": "string", "enum": ["page", "line"], "default": "page"},
                                "description": "page: find every text line; line: each image is one text "
                                               "line (a crop), read without detection"}],
                "requestBody": {"required": True, "content": {
                    "multipart/form-data": {"schema": {"type": "object", "properties": {"image": images, "file": images}}},
                    "image/*": {"schema": {"type": "string", "format": "binary"}},
                }},
                "responses": {
                    "200": _json("#/components/schemas/ParseResult", "The text of every image"),
                    "400": _error("No image in the request, an empty file, bytes that are not a readable image, "
                                  "or an unknown mode"),
                    "401": _error("API keys are on and the Authorization header is missing or wrong"),
                    # Nginx de-chunks bodies; a client talking to uWSGI directly must send a length.
                    "411": _error("A chunked body sent to an instance directly, without Nginx"),
                    "413": _error("Body, pixel count, side or number of images over the limit"),
                    "415": _error("Not multipart/form-data or image/*, or an image format that is not accepted"),
                    "429": _error("Over the rate limit", retry_after=True),
                    "500": INTERNAL,
                    "503": UNAVAILABLE,
                    "504": _error("The request ran past its deadline"),
                },
            }},
            "/v1/models": {"get": {
                "summary": "The model, its weights' sums, the device, the threads and the instance",
                "responses": {"200": _json("#/components/schemas/Models", "The model this worker serves"),
                              # Every /v1/ route needs the key when keys are on, and is rate-limited.
                              "401": _error("API keys are on and the Authorization header is missing or wrong"),
                              "429": _error("Over the rate limit", retry_after=True),
                              "500": INTERNAL, "503": UNAVAILABLE},
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
    limits = state.current().cfg.limits
    return jsonify(document(limits.max_body_bytes, limits.max_images))
