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
from ..store.db import Postgres, Sqlite, open_database
from ..ocr import batching
from ..ops.deploy import harakiri_s
from ..ocr.model import OcrModel, load_model
from ..settings import Settings
from ..structure import StructureModel
from . import auth, metrics
from .keysets import StoreKeys
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
        # The layout and table models, loaded after the OCR model: a worker whose structure models
        # fail to load still reads text, and answers structure requests 503 with the reason.
        self.structure: StructureModel | None = None
        self.structure_error: str | None = None
        self.ready = threading.Event()
        self.loading = False  # a load is under way in this worker (start() was called)
        self._db: Sqlite | Postgres | None = None
        self._jobs: Store | None = None
        # The store's keys: the fleet's API keys with [auth] keys_in_store, the internal key always.
        self.keys = StoreKeys(lambda: self.db, cfg.store.refresh_seconds)

    @property
    def db(self) -> Sqlite | Postgres:
        """The store (service/store); nothing connects until a query runs."""
        if self._db is None:
            self._db = open_database(self.cfg)
        return self._db

    @property
    def jobs(self) -> Store:
        """The job store, opened on first use: a worker that never sees a job never touches it."""
        if self._jobs is None:
            self._jobs = Store(self.cfg.jobs, self.db)
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
        self._load_structure(model.device)
        seconds = time.perf_counter() - start
        self.model = model
        metrics.MODEL_LOAD_SECONDS.observe(seconds)
        metrics.WORKER_READY.labels(str(self.instance.port)).set(1)
        self.ready.set()
        log.info("ready: %s %s on %s in %.2fs", model.info.name, model.info.version, model.device, seconds)

    def _load_structure(self, device) -> None:
        try:
            structure = StructureModel.load(self.cfg.structure, self.cfg.model.weights_dir, device)
            structure.warmup()
        except Exception as exc:
            log.exception("structure models failed to load")
            self.structure_error = f"{type(exc).__name__}: {exc}"
            return
        self.structure = structure

    def require_structure(self) -> StructureModel:
        """The structure models (called once the OCR model is ready), or a 503 that says why not."""
        if self.structure is None:
            raise ClientError(503, "structure_unavailable",
                              f"this worker could not load its layout and table models: {self.structure_error}")
        return self.structure

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
