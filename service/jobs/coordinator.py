"""The coordinator: a uWSGI mule that runs jobs by posting their pages back through Nginx.

Every instance runs one (conf/uwsgi/parse.ini, `mule =`). A mule holds no model: it claims a job
from the store, then sends each page, as a file of its own (service/documents: single_page), to Nginx's
/v1/parse, the same weighted upstream and workers that interactive clients use; so a job spreads
over the whole fleet, and at most [jobs] workers of its pages are in flight at once, leaving every
other worker to interactive requests. Each answer is kept on disk before the next page is counted
(service/jobs/store.py), so a crash of a worker, of the mule or of the whole stack costs at most
the pages in flight, which are read again.

uWSGI respawns a mule that dies; the new one (or another instance's) takes the job over: at once
when the old holder's PID is gone on this host, else once its lease ran out.
"""

from __future__ import annotations

import http.client
import json
import logging
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from .. import documents
from .. import settings as settings_mod
from ..settings import Settings
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
# Statuses that mean "not now" rather than "never": tried again for as long as the job is held.
TRANSIENT = {408, 429, 502, 503}
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
    """The job is no longer this coordinator's to run (cancelled, or taken over)."""


def _base_url(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    if host in ("", "0.0.0.0", "*"):
        host = "127.0.0.1"
    elif host == "[::]":
        host = "[::1]"
    return f"http://{host}:{port}"


def _multipart(data: bytes) -> tuple[bytes, str]:
    boundary = f"parse-job-{secrets.token_hex(12)}"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"page\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Runner:
    """Runs one claimed job to its end, or until it is no longer ours."""

    def __init__(self, cfg: Settings, store: Store, job: Job, me: str, key: str):
        self.cfg, self.store, self.job, self.me, self.key = cfg, store, job, me, key
        self.log = JobLog(log, {"job": job.id})
        self.stop = threading.Event()
        self.url = _base_url(cfg.nginx.listen) + "/v1/parse"
        # The page request waits as long as Nginx does for an instance, plus the transfer.
        self.timeout = cfg.limits.deadline_seconds + 40

    def run(self) -> None:
        tasks = deque(self.store.pending(self.job.id))
        self.log.info("running: %d of %d pages to read (%s)", len(tasks), self.job.pages_total,
                      "resumed" if self.job.pages_done or len(tasks) < self.job.pages_total else "new")
        try:
            self._read_all(tasks)
        except Lost:
            self.log.info("stopped: cancelled or taken over by another coordinator")
            return
        except PageFailed as err:
            if self.store.finish(self.job.id, self.me, "failed", err.error):
                self._finished("failed")
                self.log.warning("failed: %s", err.error.get("message"))
            return
        if self.store.finish(self.job.id, self.me, "done"):
            self._finished("done")

    def _finished(self, status: str) -> None:
        job = self.store.get(self.job.id)
        if job is not None and job.finished is not None:
            seconds = job.finished - job.created
            job_metrics.JOB_SECONDS.labels(status).observe(seconds)
            job_metrics.FINISHED.labels(status).inc()
            self.log.info("%s: %d pages in %.1f s since submission", status, job.pages_done, seconds)

    def _read_all(self, tasks: deque[PageTask]) -> None:
        inflight: dict[Future, PageTask] = {}
        with ThreadPoolExecutor(max_workers=self.cfg.jobs.workers, thread_name_prefix="job-page") as pool:
            try:
                while tasks or inflight:
                    while tasks and len(inflight) < self.cfg.jobs.workers:
                        task = tasks.popleft()
                        inflight[pool.submit(self._read_page, task)] = task
                    done, _ = wait(inflight, timeout=self.cfg.jobs.lease_seconds / 3, return_when=FIRST_COMPLETED)
                    if not done and not self.store.renew(self.job.id, self.me):
                        raise Lost()
                    for future in done:
                        task = inflight.pop(future)
                        body = future.result()  # PageFailed and Lost propagate from here
                        if not self.store.page_done(self.job.id, self.me, task.idx, body):
                            raise Lost()
                        job_metrics.PAGES.inc()
            finally:
                self.stop.set()  # pages still in flight give up their retries

    def _read_page(self, task: PageTask) -> bytes:
        """POST one page through Nginx until it is read; returns the answer to keep."""
        data = self.store.upload_path(self.job.id, task.file).read_bytes()
        if task.of_pages > 1:
            # The page alone, as a file of its own: a 500-page upload is not sent 500 times, and
            # each post stays within /v1/parse's own body and page limits.
            data = documents.single_page(data, task.page - 1, self.cfg.limits)
        url = f"{self.url}?{page_query(self.job.query)}"
        tries = 0
        while True:
            if self.stop.is_set():
                raise Lost()
            tries += 1
            status, payload = self._post(url, data)
            if status == 200:
                return self._keep(task, payload)
            error = self._error(status, payload)
            if status in RETRIED:
                attempts = self.store.page_attempt(self.job.id, task.idx)
                if attempts >= self.cfg.jobs.page_attempts:
                    raise PageFailed({**error, "page": task.idx + 1})
            elif status not in TRANSIENT and status != 0:
                raise PageFailed({**error, "page": task.idx + 1})
            wait_s = BACKOFF[min(tries - 1, len(BACKOFF) - 1)]
            self.log.warning("page %d: %s (%s); again in %.1f s", task.idx + 1, status or "no connection",
                             error.get("message"), wait_s)
            self.stop.wait(wait_s)

    def _post(self, url: str, data: bytes) -> tuple[int, bytes]:
        """(status, body); status 0 when no answer came (refused, reset, timed out)."""
        body, content_type = _multipart(data)
        req = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": content_type, "Authorization": f"Bearer {self.key}", "X-Parse-Job": self.job.id})
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

    def _keep(self, task: PageTask, payload: bytes) -> bytes:
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
    """The mule's loop: sweep expired jobs now and then, claim a job, run it; never return."""
    _configure_logging()
    cfg = settings_mod.load()
    store = Store(cfg.jobs)
    me = holder()
    key = internal_key.read_or_create(cfg.jobs.dir)
    log.info("coordinator %s up (workers per job %d, jobs at once %d)", me, cfg.jobs.workers, cfg.jobs.max_running)
    last_sweep = 0.0
    while True:
        try:
            if time.monotonic() - last_sweep > sweep_seconds(cfg.jobs.ttl_seconds):
                last_sweep = time.monotonic()
                for job_id in store.expire():
                    log.info("job=%s expired: deleted", job_id)
            job = store.claim(me)
            if job is None:
                time.sleep(cfg.jobs.poll_seconds)
                continue
            Runner(cfg, store, job, me, key).run()
        except Exception:  # the loop must outlive any one job's surprise; the trace says what
            log.exception("coordinator error; going on")
            time.sleep(cfg.jobs.poll_seconds)
