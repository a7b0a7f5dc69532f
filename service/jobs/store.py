"""Jobs in the store (service/store): the job, its uploads and every page's answer.

The store is SQLite in [jobs] dir on one host and PostgreSQL for a fleet; the same queries run on
both (service/store/db.py). Every worker of every host submits, polls and cancels; every
coordinator (a uWSGI mule per instance, service/jobs/coordinator.py) claims pages.

Pages, not jobs, are claimed: a coordinator takes one page of a running job under a lease
(`SELECT ... FOR UPDATE SKIP LOCKED` on PostgreSQL, so coordinators never wait for each other),
reads it, and keeps its answer and the page's done flag in one transaction. A page whose holder
died (its lease ran out, or its PID is gone on this host) is claimed again by anyone, so a job
outlives any host. Limits hold over the whole fleet because they are counted in the store:
`max_running` jobs at once (their promotion from queued takes turns under one lock), `workers`
pages of a job in flight at once (claims of one job take turns on its row), `max_waiting` per
owner, `dir_max_bytes` for uploads and answers together.

A page's answer is kept only while it is not yet done: a page read twice (its first reader was
slow, not dead) is counted and kept once, so the result holds every page exactly once.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..settings import JobsSettings
from ..store.db import Postgres, Sqlite, Tx
from ..store.schema import migrate

STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
# 16 random bytes, URL-safe: nobody can guess another client's job id.
ID_BYTES = 16


@dataclass(frozen=True)
class Job:
    id: str
    owner: str
    status: str
    query: str
    pages_total: int
    pages_done: int
    created: float
    started: float | None
    finished: float | None
    error: dict[str, Any] | None
    bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "status": self.status, "pages_done": self.pages_done,
                "pages_total": self.pages_total, "created": _iso(self.created),
                "started": _iso(self.started), "finished": _iso(self.finished), "error": self.error}


@dataclass(frozen=True)
class PageTask:
    """One page to read: page `page` (1-based) of upload file `file` of job `job_id`, which has
    `of_pages` pages; `query` is the job's."""

    job_id: str
    idx: int
    file: int
    page: int
    of_pages: int
    query: str


def _iso(t: float | None) -> str | None:
    """RFC 3339 in UTC to the millisecond: a job that starts as another finishes sorts after it."""
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def holder() -> str:
    """Who holds a lease: this host and process, so a dead holder on this host is seen at once."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _dead_here(lease_owner: str) -> bool:
    """True when `lease_owner` is a process of this host that no longer exists."""
    host, _, pid = lease_owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class Store:
    def __init__(self, cfg: JobsSettings, db: Sqlite | Postgres | None = None):
        self.cfg = cfg
        self.db = db if db is not None else Sqlite(cfg.db)
        migrate(self.db)

    @staticmethod
    def _job(row: dict[str, Any]) -> Job:
        return Job(id=row["id"], owner=row["owner"], status=row["status"], query=row["query"],
                   pages_total=row["pages_total"], pages_done=row["pages_done"], created=row["created"],
                   started=row["started"], finished=row["finished"],
                   error=json.loads(row["error"]) if row["error"] else None, bytes=int(row["bytes"]))

    # --- the web side ---------------------------------------------------------------------------

    def waiting(self, owner: str) -> int:
        with self.db.tx() as tx:
            return tx.one("SELECT count(*) AS n FROM job WHERE owner = ? AND status IN ('queued', 'running')",
                          (owner,))["n"]

    def make_room(self, needed: int) -> bool:
        """Delete the oldest finished jobs until `needed` more bytes fit under dir_max_bytes."""
        while True:
            with self.db.tx(exclusive=True) as tx:
                tx.serialize("parse-jobs-room")
                used = int(tx.one("SELECT coalesce(sum(bytes), 0) AS b FROM job")["b"])
                if used + needed <= self.cfg.dir_max_bytes:
                    return True
                row = tx.one(f"SELECT id FROM job WHERE status IN {FINISHED} ORDER BY finished LIMIT 1")
                if row is None:
                    return False
                tx.run("DELETE FROM job WHERE id = ?", (row["id"],))

    def create(self, owner: str, query: str, files: list[bytes], counts: list[int],
               pages: list[tuple[int, int]]) -> Job:
        """The job, its uploads and its pages in one transaction: a job never exists without its
        files. `pages`: (file index, 1-based page) in reading order."""
        job_id = secrets.token_urlsafe(ID_BYTES)
        size = sum(len(f) for f in files)
        with self.db.tx() as tx:
            tx.run("INSERT INTO job (id, owner, status, query, pages_total, created, bytes) "
                   "VALUES (?, ?, 'queued', ?, ?, ?, ?)", (job_id, owner, query, len(pages), time.time(), size))
            for i, data in enumerate(files):
                tx.run("INSERT INTO job_upload (job_id, file, data) VALUES (?, ?, ?)", (job_id, i, data))
            for idx, (f, p) in enumerate(pages):
                tx.run("INSERT INTO job_page (job_id, idx, file, page, of_pages) VALUES (?, ?, ?, ?, ?)",
                       (job_id, idx, f, p, counts[f]))
        return self.get(job_id)  # type: ignore[return-value]

    def get(self, job_id: str) -> Job | None:
        with self.db.tx() as tx:
            row = tx.one("SELECT * FROM job WHERE id = ?", (job_id,))
        return self._job(row) if row else None

    def cancel(self, job_id: str) -> None:
        """Cancelled, uploads and answers gone; the row stays (status 'cancelled') until it expires."""
        with self.db.tx() as tx:
            tx.run("UPDATE job SET status = 'cancelled', finished = coalesce(finished, ?), bytes = 0 "
                   "WHERE id = ?", (time.time(), job_id))
            tx.run("DELETE FROM job_upload WHERE job_id = ?", (job_id,))
            tx.run("UPDATE job_page SET result = NULL, lease_owner = NULL, lease_until = NULL WHERE job_id = ?",
                   (job_id,))

    def forget(self, job_id: str) -> None:
        with self.db.tx() as tx:
            tx.run("DELETE FROM job WHERE id = ?", (job_id,))

    def results(self, job_id: str) -> list[dict[str, Any]]:
        """Each page's stored answer, in page order."""
        with self.db.tx() as tx:
            rows = tx.query("SELECT result FROM job_page WHERE job_id = ? ORDER BY idx", (job_id,))
        return [json.loads(bytes(r["result"])) for r in rows]

    def upload(self, job_id: str, file: int) -> bytes:
        with self.db.tx() as tx:
            row = tx.one("SELECT data FROM job_upload WHERE job_id = ? AND file = ?", (job_id, file))
        if row is None:
            raise KeyError(f"job {job_id} has no upload {file} (cancelled or expired)")
        return bytes(row["data"])

    def counts(self) -> tuple[dict[str, int], int]:
        """Jobs by status, and pages not yet read of jobs queued or running (for /metrics)."""
        with self.db.tx() as tx:
            by = {r["status"]: r["n"] for r in tx.query("SELECT status, count(*) AS n FROM job GROUP BY status")}
            waiting = tx.one("SELECT coalesce(sum(pages_total - pages_done), 0) AS w FROM job "
                             "WHERE status IN ('queued', 'running')")["w"]
        return {s: by.get(s, 0) for s in STATUSES}, int(waiting)

    # --- the coordinator side -------------------------------------------------------------------

    def claim(self, me: str) -> PageTask | None:
        """A page to read, leased to `me`: of a running job with fewer than `workers` pages in
        flight, oldest job first; else the first page of the oldest queued job, if fewer than
        `max_running` jobs run. None when there is nothing to do (or a limit holds)."""
        now = time.time()
        until = now + self.cfg.lease_seconds
        with self.db.tx(exclusive=True) as tx:
            running = tx.query("SELECT id, query FROM job WHERE status = 'running' ORDER BY created"
                               + tx.skip_locked)
            for job in running:
                task = self._claim_page(tx, job, me, now, until)
                if task is not None:
                    return task
            tx.serialize("parse-jobs-promote")
            count = tx.one("SELECT count(*) AS n FROM job WHERE status = 'running'")["n"]
            if count >= self.cfg.max_running:
                return None
            job = tx.one("SELECT id, query FROM job WHERE status = 'queued' ORDER BY created LIMIT 1"
                         + tx.skip_locked)
            if job is None:
                return None
            # Stamped now, under the lock: after the finish of the job whose end let this one in
            # (on hosts whose clocks agree, which NTP keeps: README, Several hosts).
            tx.run("UPDATE job SET status = 'running', started = coalesce(started, ?) WHERE id = ?",
                   (time.time(), job["id"]))
            return self._claim_page(tx, job, me, now, until)

    def _claim_page(self, tx: Tx, job: dict[str, Any], me: str, now: float, until: float) -> PageTask | None:
        inflight = tx.one("SELECT count(*) AS n FROM job_page WHERE job_id = ? AND done = 0 AND lease_until >= ?",
                          (job["id"], now))["n"]
        if inflight >= self.cfg.workers:
            return None
        row = tx.one("SELECT idx, file, page, of_pages FROM job_page WHERE job_id = ? AND done = 0 "
                     "AND (lease_until IS NULL OR lease_until < ?) ORDER BY idx LIMIT 1" + tx.skip_locked,
                     (job["id"], now))
        if row is None:
            return None
        tx.run("UPDATE job_page SET lease_owner = ?, lease_until = ? WHERE job_id = ? AND idx = ?",
               (me, until, job["id"], row["idx"]))
        return PageTask(job["id"], row["idx"], row["file"], row["page"], row["of_pages"], job["query"])

    def renew(self, me: str) -> int:
        """Extend every lease `me` holds on pages not yet done; returns how many."""
        with self.db.tx() as tx:
            return tx.run("UPDATE job_page SET lease_until = ? WHERE lease_owner = ? AND done = 0",
                          (time.time() + self.cfg.lease_seconds, me))

    def release_dead(self) -> int:
        """Free the leases of this host's coordinators that died (a respawned mule, a killed
        instance), so that their pages are read again now, not once the lease runs out."""
        prefix = socket.gethostname() + ":"
        with self.db.tx() as tx:
            owners = [r["lease_owner"] for r in tx.query(
                "SELECT DISTINCT lease_owner FROM job_page WHERE done = 0 AND lease_owner IS NOT NULL")]
        dead = [o for o in owners if o.startswith(prefix) and _dead_here(o)]
        with self.db.tx() as tx:
            return sum(tx.run("UPDATE job_page SET lease_owner = NULL, lease_until = NULL "
                              "WHERE lease_owner = ? AND done = 0", (o,)) for o in dead)

    def is_running(self, job_id: str) -> bool:
        with self.db.tx() as tx:
            row = tx.one("SELECT status FROM job WHERE id = ?", (job_id,))
        return row is not None and row["status"] == "running"

    def page_done(self, task: PageTask, me: str, body: bytes) -> Job | None:
        """Keep a page's answer; returns the job once this page finished it (None otherwise).
        An answer for a page already done, or for a job no longer running, is dropped."""
        with self.db.tx() as tx:
            kept = tx.run("UPDATE job_page SET done = 1, result = ?, reader = ?, lease_owner = NULL, "
                          "lease_until = NULL WHERE job_id = ? AND idx = ? AND done = 0 AND job_id IN "
                          "(SELECT id FROM job WHERE status = 'running')",
                          (body, me, task.job_id, task.idx))
            if not kept:
                return None
            tx.run("UPDATE job SET pages_done = pages_done + 1, bytes = bytes + ? WHERE id = ?",
                   (len(body), task.job_id))
            finished = tx.run("UPDATE job SET status = 'done', finished = ? WHERE id = ? AND status = 'running' "
                              "AND pages_done = pages_total", (time.time(), task.job_id))
            row = tx.one("SELECT * FROM job WHERE id = ?", (task.job_id,)) if finished else None
        return self._job(row) if row else None

    def page_attempt(self, job_id: str, idx: int) -> int:
        """Count one more failed attempt at a page; returns the count (kept across restarts)."""
        with self.db.tx() as tx:
            tx.run("UPDATE job_page SET attempts = attempts + 1 WHERE job_id = ? AND idx = ?", (job_id, idx))
            return tx.one("SELECT attempts FROM job_page WHERE job_id = ? AND idx = ?", (job_id, idx))["attempts"]

    def fail(self, job_id: str, error: dict[str, Any]) -> Job | None:
        """The job failed with `error` (a page the service refused for good); None if it was no
        longer running."""
        with self.db.tx() as tx:
            n = tx.run("UPDATE job SET status = 'failed', finished = ?, error = ? WHERE id = ? AND status = 'running'",
                       (time.time(), json.dumps(error), job_id))
            tx.run("UPDATE job_page SET lease_owner = NULL, lease_until = NULL WHERE job_id = ?", (job_id,))
            row = tx.one("SELECT * FROM job WHERE id = ?", (job_id,)) if n else None
        return self._job(row) if row else None

    def expire(self, now: float | None = None) -> list[str]:
        """Delete jobs finished more than ttl_seconds ago, with their uploads and answers; their ids."""
        cutoff = (time.time() if now is None else now) - self.cfg.ttl_seconds
        with self.db.tx() as tx:
            ids = [r["id"] for r in tx.query(f"SELECT id FROM job WHERE status IN {FINISHED} AND finished < ?",
                                             (cutoff,))]
            for job_id in ids:
                tx.run("DELETE FROM job WHERE id = ?", (job_id,))
        return ids
