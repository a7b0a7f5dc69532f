"""JSON errors: every failure a client can see is {"error": {"code", "message"}} with a fitting status."""

from __future__ import annotations

import logging

from flask import Flask, g, jsonify
from werkzeug.exceptions import HTTPException

from ..errors import ClientError

log = logging.getLogger(__name__)


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None):
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ClientError)
    def _client_error(err: ClientError):
        return error_response(err.status, err.code, err.message, err.headers)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException):
        code = (err.name or "error").lower().replace(" ", "_")
        return error_response(err.code or 500, code, err.description or err.name)

    @app.errorhandler(Exception)
    def _unexpected(err: Exception):
        # The trace goes to the log with the request id; the client gets the id, never the trace.
        request_id = g.get("request_id", "-")
        log.exception("request %s failed", request_id)
        return error_response(500, "internal_error", f"internal error; quote request id {request_id} to the operator")
