"""Liveness and readiness.

/healthz: this worker process lives (200 while it can answer at all).
/readyz:  this worker's model is loaded and warmed (200), else 503 JSON. Its body also counts the
          ready workers of the whole instance (from the shared metrics folder), which is what
          service/ops/probe.py waits for before `make run` or systemd call an instance started.
"""

from __future__ import annotations

import os

from flask import Blueprint, jsonify

from . import metrics, state

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok", "pid": os.getpid()})


@bp.get("/readyz")
def readyz():
    worker = state.current()
    worker.require()  # 503 model_loading / model_load_failed at once: a probe never waits
    inst = worker.instance
    ready = metrics.ready_workers(str(inst.port))
    # Outside uWSGI (no shared metrics folder) this process is the whole instance.
    # The master's worker count is the one it started with (its environment file), which a chain
    # reload keeps even when the settings file now declares another.
    processes = int(os.environ.get("PARSE_PROCESSES", inst.processes))
    workers, ready = (1, 1) if ready is None else (processes, ready)
    return jsonify({"status": "ready", "pid": os.getpid(),
                    "instance": {"port": inst.port, "workers": workers, "workers_ready": ready}})
