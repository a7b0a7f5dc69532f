"""The per-worker state every route reads: the settings and the model, loaded in the background.

Routes reach it through `current()`, the one accessor, so that no route reads Flask's config or
extensions by name.
"""

from __future__ import annotations

import logging
import threading
import time

from flask import current_app

from ..errors import ClientError
from ..jobs.store import Store
from ..ocr import batching
from ..ops.deploy import harakiri_s
from ..ocr.model import OcrModel, load_model
from ..settings import Settings
from . import auth, metrics
from .live import LiveSettings

log = logging.getLogger(__name__)

# Seconds a client is told to wait while a worker loads its model (a load takes a few seconds).
RETRY_AFTER_LOADING = 5


class WorkerState:
    """This worker's settings, its model and whether it is ready: the one thing routes reach for."""

    KEY = "parse"  # its name in app.extensions

    def __init__(self, cfg: Settings):
        self.cfg = cfg
        # [auth] as the settings file says now (who may call applies from the next request).
        self.live = LiveSettings(cfg, check=lambda new: auth.check_networks(new.auth))
        self.instance = cfg.current_instance()
        self.model: OcrModel | None = None
        self.error: str | None = None
        self.ready = threading.Event()
        self.loading = False  # a load is under way in this worker (start() was called)
        self._jobs: Store | None = None

    @property
    def jobs(self) -> Store:
        """The job store, opened on first use: a worker that never sees a job never touches it."""
        if self._jobs is None:
            self._jobs = Store(self.cfg.jobs)
        return self._jobs

    def load(self) -> None:
        """Load and warm the model (blocking); readiness is set only after a real image went through."""
        start = time.perf_counter()
        try:
            model = load_model(self.cfg.model, self.instance.device, self.instance.threads)
            model.warmup()
            # With request threads, their pages meet in one inference thread (batch_pages > 1).
            model = batching.batched(model, self.instance.batch_pages, self.instance.batch_wait_ms,
                                     harakiri_s(self.cfg))
        except Exception as exc:  # the worker stays up and says why in /readyz and the log
            log.exception("model load failed")
            self.error = f"{type(exc).__name__}: {exc}"
            self.ready.set()  # requests waiting for the model get their 503 now
            return
        seconds = time.perf_counter() - start
        self.model = model
        metrics.MODEL_LOAD_SECONDS.observe(seconds)
        metrics.WORKER_READY.labels(str(self.instance.port)).set(1)
        self.ready.set()
        log.info("ready: %s %s on %s in %.2fs", model.info.name, model.info.version, model.device, seconds)

    def start(self) -> threading.Thread:
        self.loading = True
        thread = threading.Thread(target=self.load, name="model-load", daemon=True)
        thread.start()
        return thread

    def require(self) -> OcrModel:
        """The model, or the 503 a client gets while it loads (or after it failed to)."""
        if self.model is not None:
            return self.model
        if self.error is not None:
            raise ClientError(503, "model_load_failed", f"this worker could not load its model: {self.error}")
        raise ClientError(503, "model_loading", "the model is still loading; retry shortly",
                          {"Retry-After": str(RETRY_AFTER_LOADING)})

    def await_model(self, seconds: float) -> OcrModel:
        """The model, waiting up to `seconds` (what is left of the request's deadline) while it loads.

        A respawned or chain-reloaded worker is handed the requests queued on its instance's socket
        before its model is ready; answering them 503 would refuse work that can still meet its
        deadline (and a lone worker's instance has no other worker to take it). So they wait here;
        one whose deadline runs out first gets the 504 its deadline promises.
        """
        if self.model is None and self.error is None and self.loading:
            if not self.ready.wait(max(0.0, seconds)):
                raise ClientError(504, "deadline_exceeded",
                                  "the deadline passed while this worker was still loading its model; retry shortly",
                                  {"Retry-After": str(RETRY_AFTER_LOADING)})
        return self.require()


def current() -> WorkerState:
    """The state of the worker answering this request."""
    return current_app.extensions[WorkerState.KEY]
