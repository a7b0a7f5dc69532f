"""The Flask application factory: one app per uWSGI worker, each holding its own model.

uWSGI runs with lazy-apps, so `create_app()` runs in the worker after fork and nothing touches
torch in the master. The model loads in a background thread, so the worker answers at once:
/healthz says it lives, /readyz answers 503 JSON until the model is loaded and warmed (uWSGI's ini
sets enable-threads so that thread runs). /v1/parse requests that reach a loading worker (the ones
queued on its instance while it was respawned or reloaded) wait for the model within their
deadline (state.WorkerState.await_model).
"""

from __future__ import annotations

import atexit
import logging
import os
import uuid

from flask import Flask, g, has_request_context, request
from werkzeug.exceptions import HTTPException

from .. import settings as settings_mod
from ..settings import Settings
from . import annotate, api, auth, health, jobs, metrics, openapi, results
from .errors import register_error_handlers
from .state import WorkerState

log = logging.getLogger(__name__)

class _RequestIdFilter(logging.Filter):
    """Stamps every log record with the request id, so a client's X-Request-ID finds its log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        job = g.get("job_id") if has_request_context() else None
        if job:  # a job's page or a job route: its id on every line, like the coordinator's
            record.request_id += f" job={job}"
        return True


def _configure_logging() -> None:
    root = logging.getLogger()
    if any(isinstance(f, _RequestIdFilter) for h in root.handlers for f in h.filters):
        return
    handler = logging.StreamHandler()  # stderr: uWSGI's log, the journal under systemd
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(logging.Formatter(
        "%(asctime)s %(levelname)s pid=%(process)d req=%(request_id)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def drain_body(response, limit: int):
    """Read what is left of the request body before the answer leaves.

    An answer given before the body was read (a 4xx for a bad parameter, type or key) must not
    leave the body on the socket: uWSGI would close the connection while Nginx is still writing
    it, and Nginx would take that for a failed instance (502), retry another and answer 503.
    Nginx has buffered the whole body before passing it on (uwsgi_request_buffering), so this reads
    at loopback speed, never at a client's, and at most the body limit Nginx already enforced.
    """
    length = request.content_length
    if length and length <= limit:
        try:
            request.stream.exhaust()
        except (OSError, HTTPException) as err:  # the connection went away: nothing left to answer
            log.info("request body not drained: %s", err)
    return response


def create_app(settings: Settings | None = None, *, load: bool = True) -> Flask:
    """Build the app for `settings` (default: conf/parse.toml or $PARSE_CONFIG).

    load=False leaves the model unloaded (tests call `state.current().load()` themselves).
    """
    cfg = settings or settings_mod.load()
    _configure_logging()
    # No static route: Nginx serves files; the app answers only the API.
    app = Flask(__name__, static_folder=None)
    app.json.sort_keys = False  # keys in the documented order: request_id first
    # The app's own body limit, the same number as Nginx's client_max_body_size.
    # Jobs take larger uploads; each blueprint checks its own limit before reading the body.
    app.config["MAX_CONTENT_LENGTH"] = max(cfg.limits.max_body_bytes, cfg.jobs.max_bytes)
    state = WorkerState(cfg)
    app.extensions[WorkerState.KEY] = state

    @app.before_request
    def _request_id() -> None:
        # Nginx passes its $request_id; a request that reaches the app directly gets its own.
        g.request_id = request.headers.get("X-Request-ID") or uuid.uuid4().hex

    @app.after_request
    def _drain_body(response):
        return drain_body(response, app.config["MAX_CONTENT_LENGTH"])

    @app.after_request
    def _count(response):
        route = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.REQUESTS.labels(route, str(response.status_code)).inc()
        response.headers["X-Request-ID"] = g.get("request_id", "")
        return response

    # API keys and the /metrics allow-list run first (401/403), before any blueprint's own checks.
    # The key set in force: this host's keys file, or the store's with [auth] keys_in_store (a fleet).
    auth.register(app, state.live.auth, state.keys, state.keys.internal)
    register_error_handlers(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(jobs.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(openapi.bp)
    if cfg.store.url:  # a fleet: ?annotate=1 PNGs are served from the store (service/web/results.py)
        app.register_blueprint(results.bp)

    metrics.WORKER_READY.labels(str(state.instance.port)).set(0)
    atexit.register(metrics.mark_exit)
    if load:
        state.start()
        # ?annotate=1 results expire on time even when nobody writes new ones.
        annotate.start_sweeper(cfg.results)
    log.info("worker %d up for instance %d (%s); model loading", os.getpid(), state.instance.port, cfg.path)
    return app
