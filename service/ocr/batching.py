"""Batching across requests: one inference thread reads the pages of all of a worker's requests.

A GPU reads a batch of pages in little more time than one page, but a worker that serves one
request at a time only ever has one page to give it. With `batch_pages` > 1 the worker runs that
many uWSGI request threads; each hands its page to `Batched`, whose single inference thread takes
the first page waiting, gathers what the other threads hand in within `batch_wait_ms` (up to
`batch_pages`; a page waits only under load), and reads them in one model call: pages of one
input shape through the detector together, and every page's lines through the recognizer
together. The model stays one per worker and is only ever used by that thread, so nothing in it
needs to be thread-safe.

A request of several pages (a PDF, a TIFF) hands them in as it renders them (`submit`), a
batch's worth at most ahead of the one it waits for (service/web/reading.py), so that its pages
share model calls with each other and with other requests' pages while its later pages render.
The queue holds at most `batch_pages` pages: with the call being read, a worker's pages waiting
for the model are at most two batches, however many pages its requests carry.

Each page's result is its own: both families pad each line crop to a width that depends on it
alone (service/ocr/ppocr/recognize.py, service/ocr/easyocr/recognize.py), so what shares its
batch does not change its reading (tests/test_batching.py, on the CPU; `make bench-gpu` compares
batched and unbatched answers on a GPU). On a CPU a batch saves nothing (docs/benchmarks.md,
GPU), so batching is off there by default (batch_pages = 1) and the model is called directly,
without this thread.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import NoReturn, Sequence

import numpy as np
import torch

from .model import OcrModel
from .types import ModelInfo, Page

log = logging.getLogger(__name__)

# A worker ended for a stuck model call exits with this status (EX_SOFTWARE), in uWSGI's log.
STUCK_EXIT = 70


@dataclass
class Pending:
    """A page handed to the inference thread; `result` waits for its reading."""

    kind: str  # "parse", "recognize" or "warmup": only pages of one kind share a model call
    rgb: np.ndarray | None  # dropped once read: the request keeps its own reference if it needs one
    grey: np.ndarray | None
    stuck_seconds: float
    future: Future = field(default_factory=Future)
    queued: float = field(default_factory=time.perf_counter)

    def result(self) -> Page:
        """The page's reading (or the model's exception). A page not read within `stuck_seconds`
        of being handed in ends the worker (`_stuck`)."""
        try:
            return self.future.result(timeout=max(0.0, self.queued + self.stuck_seconds - time.perf_counter()))
        except FutureTimeout:
            _stuck(self.stuck_seconds)

    def cancel(self) -> None:
        """The request no longer wants it (it failed or passed its deadline): a page not yet taken
        into a model call is skipped."""
        self.future.cancel()


def _stuck(seconds: float) -> NoReturn:
    """uWSGI's harakiri is one timer per worker, which any request thread that finishes resets,
    so it cannot be trusted to end a model call that hangs while other threads still answer.
    A page that is not read within `stuck_seconds` (harakiri's own limit) ends the worker
    instead, as harakiri would, and uWSGI starts a fresh one."""
    log.critical("a page has waited %.0f s for the model: the inference thread is stuck; "
                 "ending this worker so that uWSGI starts a fresh one", seconds)
    os._exit(STUCK_EXIT)


class Batched:
    """An OcrModel whose calls from many threads are served together by one inference thread."""

    def __init__(self, model: OcrModel, max_pages: int, max_wait_ms: float, stuck_seconds: float) -> None:
        self.model = model
        self.max_pages = max_pages
        self.max_wait = max_wait_ms / 1000
        self.stuck_seconds = stuck_seconds
        # Bounded: a request of many pages waits here once a batch's worth is queued (memory).
        self._queue: queue.Queue[Pending] = queue.Queue(maxsize=max_pages)
        self._held: Pending | None = None  # taken while gathering, but of the other kind: it leads the next batch
        self._last_pages = 1  # pages in the last model call
        self._thread = threading.Thread(target=self._serve, name="inference", daemon=True)
        self._thread.start()

    # The OcrModel interface, as the wrapped model has it.
    @property
    def info(self) -> ModelInfo:
        return self.model.info

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def precision(self) -> str:
        return self.model.precision

    @property
    def reads_grey(self) -> bool:
        return self.model.reads_grey

    def parse(self, images: Sequence[np.ndarray], greys: Sequence[np.ndarray | None] | None = None) -> list[Page]:
        return self._submit("parse", images, greys)

    def recognize(self, images: Sequence[np.ndarray], greys: Sequence[np.ndarray | None] | None = None) -> list[Page]:
        return self._submit("recognize", images, greys)

    def warmup(self) -> None:
        """Through the inference thread too: only that thread ever runs the model."""
        self._submit("warmup", [np.zeros((1, 1, 3), np.uint8)], None)

    def submit(self, kind: str, rgb: np.ndarray, grey: np.ndarray | None = None) -> Pending:
        """Hand one page to the inference thread without waiting for its reading."""
        item = Pending(kind, rgb, grey, self.stuck_seconds)
        try:
            self._queue.put(item, timeout=self.stuck_seconds)
        except queue.Full:
            _stuck(self.stuck_seconds)
        return item

    def _submit(self, kind: str, images: Sequence[np.ndarray], greys: Sequence[np.ndarray | None] | None) -> list[Page]:
        """Hand every image to the inference thread and wait for its pages (the caller's thread blocks)."""
        items = [self.submit(kind, rgb, greys[i] if greys else None) for i, rgb in enumerate(images)]
        return [item.result() for item in items]

    # The inference thread.
    def _take(self, until: float | None = None) -> Pending:
        """The next page handed in, by `until` (perf_counter; None: however long it takes), whose
        request still wants it: cancelled ones are dropped. Raises queue.Empty past `until`."""
        while True:
            left = None if until is None else until - time.perf_counter()
            item = self._queue.get(timeout=left) if left is None or left > 0 else self._queue.get_nowait()
            if item.future.set_running_or_notify_cancel():
                return item

    def _gather(self) -> list[Pending]:
        """The first page waiting, and those of its kind handed in within max_wait of it.

        Only under load does the first page wait: when nothing else is queued and the last call
        read a page alone, no other request is in flight to join it, and waiting would only add
        max_wait to a lone client's every page. Under load pages queue up while the model runs,
        and the next call takes them all."""
        first = self._held if self._held is not None else self._take()
        self._held = None
        batch = [first]
        busy = self._last_pages > 1 or not self._queue.empty()
        until = time.perf_counter() + (self.max_wait if busy else 0.0)
        while len(batch) < self.max_pages:
            try:
                item = self._take(until)
            except queue.Empty:
                break
            if item.kind != first.kind:
                self._held = item
                break
            batch.append(item)
        self._last_pages = len(batch)
        return batch

    def _serve(self) -> None:
        while True:
            self._settle(self._gather())

    def _settle(self, batch: list[Pending]) -> None:
        """Read the batch; when that fails, each of its pages alone, so that one bad page fails
        only its own request. The thread outlives whatever a batch does."""
        try:
            self._read(batch)
        except Exception as exc:  # noqa: BLE001 - handed to the requests that sent the pages
            pending = [item for item in batch if not item.future.done()]
            if len(batch) > 1:
                log.warning("a batch of %d pages failed (%s); reading each alone", len(batch), exc)
                for item in pending:
                    self._settle([item])
                return
            log.exception("model call failed")
            for item in pending:
                item.future.set_exception(exc)

    def _read(self, batch: list[Pending]) -> None:
        """One model call for the batch (all of one kind), each page's result to its request."""
        if batch[0].kind == "warmup":
            self.model.warmup()
            batch[0].future.set_result(None)
            return
        call = self.model.parse if batch[0].kind == "parse" else self.model.recognize
        started = time.perf_counter()
        pages = call([i.rgb for i in batch], [i.grey for i in batch])
        if len(pages) != len(batch):
            raise RuntimeError(f"the model returned {len(pages)} pages for {len(batch)}")
        for item, page in zip(batch, pages):
            self._done(item, page, started, len(batch))

    @staticmethod
    def _done(item: Pending, page: Page, started: float, pages: int) -> None:
        page.timing["batch_wait"] = started - item.queued
        page.batch_pages = pages
        item.rgb = item.grey = None  # read: the pixels go with the request, or now
        item.future.set_result(page)


def batched(model: OcrModel, max_pages: int, max_wait_ms: float, stuck_seconds: float) -> OcrModel:
    """The model itself where batching is off (batch_pages = 1), else the model behind one
    inference thread; `stuck_seconds` is how long a page may wait before the worker is ended."""
    return model if max_pages <= 1 else Batched(model, max_pages, max_wait_ms, stuck_seconds)
