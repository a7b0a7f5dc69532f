"""JSON errors: every failure a client can see is {"error": {"code", "message"}} with a fitting status."""

from __future__ import annotations

import logging

from flask import Flask, g, jsonify
from werkzeug.exceptions import HTTPException

from ..errors import ClientError
from ..store.db import Unavailable

# Seconds a client is told to wait while the store is unreachable (a restart or failover).
RETRY_AFTER_STORE = 5

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

    @app.errorhandler(Unavailable)
    def _store_down(err: Unavailable):
        # Jobs and results wait in the store; nothing is lost, the client only has to come back.
        log.warning("store unreachable: %s", err)
        return error_response(503, "store_unavailable", "the job store cannot be reached now; retry after "
                              "the time in Retry-After", {"Retry-After": str(RETRY_AFTER_STORE)})

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
