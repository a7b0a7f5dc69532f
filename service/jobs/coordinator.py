"""The coordinator: a uWSGI mule that reads jobs by posting their pages back through Nginx.

Every instance runs one (conf/uwsgi/parse.ini, `mule =`). A mule holds no model: it claims pages
from the store (service/jobs/store.py), any host's coordinator any job's page, and sends each, as
a file of its own (service/documents: single_page), to the front Nginx's /v1/parse, the same
weighted upstream and workers that interactive clients use; so a job spreads over the whole fleet,
and at most [jobs] workers of its pages are in flight at once, fleet-wide, leaving every other
worker to interactive requests. Each answer is kept in the store with its page's done flag, so a
crash of a worker, of a mule, of a host or of the whole stack costs at most the pages in flight,
which are read again.

uWSGI respawns a mule that dies; its pages are claimed again at once by this host's next
coordinator (the old PID is gone), and by any host once their lease ran out (a host lost).
While the store is unreachable the coordinator keeps the answers it holds and stores them when
the store is back.
"""

from __future__ import annotations

import http.client
import json
import logging
import secrets
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from .. import documents
from .. import settings as settings_mod
from ..ops import fleet
from ..settings import Settings
from ..store.db import Unavailable, open_database
from . import internal_key
from .plan import page_query
from . import metrics as job_metrics
from .store import Job, PageTask, Store, holder

log = logging.getLogger("service.jobs")

# Expired jobs are swept every tenth of the TTL, 1 s to 60 s: a result is gone soon after its time.
def sweep_seconds(ttl_seconds: float) -> float:
    return min(60.0, max(1.0, ttl_seconds / 10))

# Backoff between tries of a page the fleet could not take (restarting, overloaded), in seconds.
BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0)
# Statuses that mean "not now" rather than "never": tried again for as long as the job runs.
# 401 is one of them: a worker that started while the store was down has not read the internal
# key yet, and will within [store] refresh_seconds of its return.
TRANSIENT = {401, 408, 429, 502, 503}
# Seconds between tries to keep an answer while the store is unreachable.
STORE_RETRY_S = 1.0
# Statuses that may be one unlucky worker (a crash, a page past the deadline): tried page_attempts times.
RETRIED = {500, 504}


class JobLog(logging.LoggerAdapter):
    """Every line of a job starts with its id, so `grep job=ID` finds the whole story."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"job={self.extra['job']} {msg}", kwargs


class PageFailed(Exception):
    """A page the service refused for good: the job fails with this error body."""

    def __init__(self, error: dict[str, Any]):
        super().__init__(error.get("message", ""))
        self.error = error


class Lost(Exception):
    """The job is no longer running (cancelled, failed, expired): its page is not needed."""


def _multipart(data: bytes) -> tuple[bytes, str]:
    boundary = f"parse-job-{secrets.token_hex(12)}"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"page\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _with_store(call: Any) -> Any:
    """`call()`, tried again every STORE_RETRY_S while the store is unreachable."""
    warned = False
    while True:
        try:
            return call()
        except Unavailable as err:
            if not warned:
                log.warning("store unreachable (%s); trying again every %.0f s", err, STORE_RETRY_S)
                warned = True
            time.sleep(STORE_RETRY_S)


class Coordinator:
    """Claims pages and reads them, up to `workers` x `max_running` at once from this mule; the
    store keeps the fleet-wide limits."""

    def __init__(self, cfg: Settings, store: Store, me: str, key: str):
        self.cfg, self.store, self.me, self.key = cfg, store, me, key
        self.url = fleet.front_url(cfg) + "/v1/parse"
        # The page request waits as long as Nginx does for an instance, plus the transfer.
        self.timeout = cfg.limits.deadline_seconds + 40
        self.capacity = max(1, cfg.jobs.workers * cfg.jobs.max_running)
        self.uploads: dict[tuple[str, int], bytes] = {}
        self.lock = threading.Lock()

    def loop(self) -> None:
        """Never returns: sweep, renew, claim, read."""
        cfg = self.cfg.jobs
        inflight: dict[Future, PageTask] = {}
        last_sweep = last_renew = 0.0
        with ThreadPoolExecutor(max_workers=self.capacity, thread_name_prefix="job-page") as pool:
            while True:
                try:
                    now = time.monotonic()
                    if now - last_sweep > sweep_seconds(cfg.ttl_seconds):
                        last_sweep = now
                        for job_id in self.store.expire():
                            log.info("job=%s expired: deleted", job_id)
                    if now - last_renew > cfg.lease_seconds / 3:
                        last_renew = now
                        self.store.renew(self.me)
                        if released := self.store.release_dead():
                            log.info("%d pages of this host's dead coordinators released", released)
                    while len(inflight) < self.capacity:
                        task = self.store.claim(self.me)
                        if task is None:
                            break
                        inflight[pool.submit(self._page, task)] = task
                except Unavailable as err:
                    log.warning("store unreachable: %s; jobs wait", err)
                except Exception:  # the loop must outlive any surprise; the trace says what
                    log.exception("coordinator error; going on")
                if inflight:
                    done, _ = wait(inflight, timeout=cfg.poll_seconds, return_when=FIRST_COMPLETED)
                    for future in done:
                        inflight.pop(future)
                        if future.exception() is not None:
                            log.error("page task failed", exc_info=future.exception())
                    self._forget_uploads({t.job_id for t in inflight.values()})
                else:
                    self._forget_uploads(set())
                    time.sleep(cfg.poll_seconds)

    def _forget_uploads(self, keep: set[str]) -> None:
        with self.lock:
            for k in [k for k in self.uploads if k[0] not in keep]:
                del self.uploads[k]

    def _upload(self, task: PageTask) -> bytes:
        """The page's upload, fetched from the store once per job and file while its pages run here."""
        key = (task.job_id, task.file)
        with self.lock:
            data = self.uploads.get(key)
        if data is None:
            data = _with_store(lambda: self.store.upload(task.job_id, task.file))
            with self.lock:
                self.uploads[key] = data
        return data

    def _page(self, task: PageTask) -> None:
        jlog = JobLog(log, {"job": task.job_id})
        try:
            body = self._read_page(task, jlog)
        except Lost:
            jlog.info("page %d dropped: the job is no longer running", task.idx + 1)
            return
        except KeyError:
            return  # its upload is gone: cancelled or expired meanwhile
        except PageFailed as err:
            error = err.error
            job = _with_store(lambda: self.store.fail(task.job_id, error))
            if job is not None:
                self._finished(job, jlog)
                jlog.warning("failed: %s", error.get("message"))
            return
        job = _with_store(lambda: self.store.page_done(task, self.me, body))
        job_metrics.PAGES.inc()
        if job is not None:
            self._finished(job, jlog)

    def _finished(self, job: Job, jlog: JobLog) -> None:
        if job.finished is not None:
            seconds = job.finished - job.created
            job_metrics.JOB_SECONDS.labels(job.status).observe(seconds)
            job_metrics.FINISHED.labels(job.status).inc()
            jlog.info("%s: %d pages in %.1f s since submission", job.status, job.pages_done, seconds)

    def _read_page(self, task: PageTask, jlog: JobLog) -> bytes:
        """POST one page through Nginx until it is read; returns the answer to keep."""
        data = self._upload(task)
        if task.of_pages > 1:
            # The page alone, as a file of its own: a 500-page upload is not sent 500 times, and
            # each post stays within /v1/parse's own body and page limits.
            data = documents.single_page(data, task.page - 1, self.cfg.limits)
        url = f"{self.url}?{page_query(task.query)}"
        tries = 0
        while True:
            tries += 1
            status, payload = self._post(url, data, task.job_id)
            if status == 200:
                return self._keep(task, payload)
            error = self._error(status, payload)
            if status in RETRIED:
                attempts = _with_store(lambda: self.store.page_attempt(task.job_id, task.idx))
                if attempts >= self.cfg.jobs.page_attempts:
                    raise PageFailed({**error, "page": task.idx + 1})
            elif status not in TRANSIENT and status != 0:
                raise PageFailed({**error, "page": task.idx + 1})
            wait_s = BACKOFF[min(tries - 1, len(BACKOFF) - 1)]
            jlog.warning("page %d: %s (%s); again in %.1f s", task.idx + 1, status or "no connection",
                         error.get("message"), wait_s)
            time.sleep(wait_s)
            if not _with_store(lambda: self.store.is_running(task.job_id)):
                raise Lost()

    def _post(self, url: str, data: bytes, job_id: str) -> tuple[int, bytes]:
        """(status, body); status 0 when no answer came (refused, reset, timed out)."""
        body, content_type = _multipart(data)
        req = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": content_type, "Authorization": f"Bearer {self.key}", "X-Parse-Job": job_id})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()
        except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
            return 0, json.dumps({"error": {"code": "no_connection", "message": str(err)}}).encode()

    @staticmethod
    def _error(status: int, payload: bytes) -> dict[str, Any]:
        try:
            return dict(json.loads(payload)["error"])
        except (ValueError, KeyError, TypeError):
            return {"code": "bad_answer", "message": f"HTTP {status}: {payload[:200]!r}"}

    @staticmethod
    def _keep(task: PageTask, payload: bytes) -> bytes:
        """The page's answer with its place in the upload: file index and page number where the
        service reports them (it read only this one file)."""
        answer = json.loads(payload)
        for image in answer.get("images", []):
            if "file" in image:
                image["file"] = task.file
            if "page" in image:
                image["page"] = task.page
        return json.dumps(answer).encode()


def _configure_logging() -> None:
    handler = logging.StreamHandler()  # the instance's uWSGI log, the journal under systemd
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s pid=%(process)d mule %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def main() -> None:
    """The mule: open the store (waiting for it), read the internal key, then claim and read pages forever."""
    _configure_logging()
    cfg = settings_mod.load()
    store = _with_store(lambda: Store(cfg.jobs, open_database(cfg)))
    key = _with_store(lambda: internal_key.read_or_create(store.db))
    me = holder()
    log.info("coordinator %s up: posts pages to %s (pages of a job at once %d, jobs at once %d, fleet-wide)",
             me, fleet.front_url(cfg), cfg.jobs.workers, cfg.jobs.max_running)
    Coordinator(cfg, store, me, key).loop()
