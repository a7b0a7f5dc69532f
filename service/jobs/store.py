"""Job state in SQLite (WAL), uploads and page results as files: what survives any crash.

One database per host, in [jobs] dir, shared by every instance's web workers (which submit, poll,
cancel) and coordinators (uWSGI mules, service/jobs/coordinator.py, which claim and run jobs).
WAL lets readers poll while a coordinator writes; every write is one short transaction, and
claims use BEGIN IMMEDIATE so that two mules never take the same job.

A page is done once its result file has been renamed into place and its row says so, in that
order: a crash between the two re-reads the page and replaces the file with the same content.
Pages are keyed by (job, index), and the result is assembled from the index-named files, so no
page can be lost or appear twice.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..settings import JobsSettings

STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = ("done", "failed", "cancelled")
# 16 random bytes, URL-safe: nobody can guess another client's job id.
ID_BYTES = 16

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    query TEXT NOT NULL,
    pages_total INTEGER NOT NULL,
    pages_done INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    error TEXT,
    bytes INTEGER NOT NULL,
    lease_owner TEXT,
    lease_until REAL
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created);
CREATE TABLE IF NOT EXISTS pages (
    job_id TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    file INTEGER NOT NULL,
    page INTEGER NOT NULL,
    of_pages INTEGER NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, idx)
);
"""


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
                "finished": _iso(self.finished), "error": self.error}


@dataclass(frozen=True)
class PageTask:
    """One page to read: page `page` (1-based) of upload file `file`, which has `of_pages` pages."""

    idx: int
    file: int
    page: int
    of_pages: int


def _iso(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def holder() -> str:
    """Who holds a lease: this host and process, so a dead holder on this host is seen at once."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _holder_dead(lease_owner: str | None) -> bool:
    host, _, pid = (lease_owner or "").rpartition(":")
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
    def __init__(self, cfg: JobsSettings):
        self.cfg = cfg
        cfg.dir.mkdir(parents=True, exist_ok=True)
        db = self._connect()
        try:
            db.executescript(SCHEMA)  # commits by itself: not inside _tx
        finally:
            db.close()

    # --- plumbing -------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        # A fresh connection per transaction: cheap on a local file, and safe across threads and fork.
        db = sqlite3.connect(self.cfg.db, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode loses no committed transaction on a process crash (only on power loss).
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        return db

    @contextmanager
    def _tx(self, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def folder(self, job_id: str) -> Path:
        return self.cfg.dir / job_id

    def upload_path(self, job_id: str, file: int) -> Path:
        return self.folder(job_id) / f"upload-{file:04d}.bin"

    def page_path(self, job_id: str, idx: int) -> Path:
        return self.folder(job_id) / f"page-{idx:05d}.json"

    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        return Job(id=row["id"], owner=row["owner"], status=row["status"], query=row["query"],
                   pages_total=row["pages_total"], pages_done=row["pages_done"], created=row["created"],
                   started=row["started"], finished=row["finished"],
                   error=json.loads(row["error"]) if row["error"] else None, bytes=row["bytes"])

    # --- the web side ---------------------------------------------------------------------------

    def waiting(self, owner: str) -> int:
        with self._tx() as db:
            return db.execute("SELECT count(*) FROM jobs WHERE owner = ? AND status IN ('queued', 'running')",
                              (owner,)).fetchone()[0]

    def make_room(self, needed: int) -> bool:
        """Delete the oldest finished jobs until `needed` more bytes fit under dir_max_bytes."""
        while True:
            with self._tx(immediate=True) as db:
                used = db.execute("SELECT coalesce(sum(bytes), 0) FROM jobs").fetchone()[0]
                if used + needed <= self.cfg.dir_max_bytes:
                    return True
                row = db.execute(f"SELECT id FROM jobs WHERE status IN {FINISHED} "
                                 "ORDER BY finished LIMIT 1").fetchone()
                if row is None:
                    return False
                db.execute("DELETE FROM jobs WHERE id = ?", (row["id"],))
            shutil.rmtree(self.folder(row["id"]), ignore_errors=True)

    def create(self, owner: str, query: str, files: list[bytes], counts: list[int],
               pages: list[tuple[int, int]]) -> Job:
        """Write the uploads, then the job and its pages in one transaction: a job row never
        exists without its files. `pages`: (file index, 1-based page) in reading order."""
        job_id = secrets.token_urlsafe(ID_BYTES)
        folder = self.folder(job_id)
        folder.mkdir(parents=True)
        for i, data in enumerate(files):
            self._write_atomic(self.upload_path(job_id, i), data)
        now = time.time()
        size = sum(len(f) for f in files)
        with self._tx() as db:
            db.execute("INSERT INTO jobs (id, owner, status, query, pages_total, created, bytes) "
                       "VALUES (?, ?, 'queued', ?, ?, ?, ?)", (job_id, owner, query, len(pages), now, size))
            db.executemany("INSERT INTO pages (job_id, idx, file, page, of_pages) VALUES (?, ?, ?, ?, ?)",
                           [(job_id, idx, f, p, counts[f]) for idx, (f, p) in enumerate(pages)])
        return self.get(job_id)  # type: ignore[return-value]

    def get(self, job_id: str) -> Job | None:
        with self._tx() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job(row) if row else None

    def cancel(self, job_id: str) -> None:
        """Cancelled, files gone; the row stays (status 'cancelled') until it expires."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET status = 'cancelled', finished = coalesce(finished, ?), bytes = 0, "
                       "lease_owner = NULL, lease_until = NULL WHERE id = ?", (time.time(), job_id))
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def forget(self, job_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def results(self, job_id: str) -> list[dict[str, Any]]:
        """Each page's stored answer, in page order."""
        with self._tx() as db:
            n = db.execute("SELECT pages_total FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]
        return [json.loads(self.page_path(job_id, idx).read_bytes()) for idx in range(n)]

    def counts(self) -> tuple[dict[str, int], int]:
        """Jobs by status, and pages not yet read of jobs queued or running (for /metrics)."""
        with self._tx() as db:
            by = dict(db.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall())
            waiting = db.execute("SELECT coalesce(sum(pages_total - pages_done), 0) FROM jobs "
                                 "WHERE status IN ('queued', 'running')").fetchone()[0]
        return {s: by.get(s, 0) for s in STATUSES}, waiting

    # --- the coordinator side -------------------------------------------------------------------

    def claim(self, me: str) -> Job | None:
        """Take the oldest queued job, or a running one whose holder is gone, if fewer than
        max_running jobs are held by live coordinators."""
        now = time.time()
        with self._tx(immediate=True) as db:
            held = db.execute("SELECT id, lease_owner, lease_until FROM jobs WHERE status = 'running'").fetchall()
            orphans = [r["id"] for r in held if r["lease_until"] < now or _holder_dead(r["lease_owner"])]
            if len(held) - len(orphans) >= self.cfg.max_running:
                return None
            row = db.execute(
                "SELECT id FROM jobs WHERE status = 'queued' OR id IN (SELECT value FROM json_each(?)) "
                "ORDER BY created LIMIT 1", (json.dumps(orphans),)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE jobs SET status = 'running', started = coalesce(started, ?), lease_owner = ?, "
                       "lease_until = ? WHERE id = ?", (now, me, now + self.cfg.lease_seconds, row["id"]))
        return self.get(row["id"])

    def renew(self, job_id: str, me: str) -> bool:
        """Extend the lease; False when the job is no longer ours to run (cancelled, taken over)."""
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET lease_until = ? WHERE id = ? AND status = 'running' "
                             "AND lease_owner = ?", (time.time() + self.cfg.lease_seconds, job_id, me))
            return cur.rowcount == 1

    def pending(self, job_id: str) -> list[PageTask]:
        with self._tx() as db:
            rows = db.execute("SELECT idx, file, page, of_pages FROM pages WHERE job_id = ? AND done = 0 "
                              "ORDER BY idx", (job_id,)).fetchall()
        return [PageTask(r["idx"], r["file"], r["page"], r["of_pages"]) for r in rows]

    def page_done(self, job_id: str, me: str, idx: int, body: bytes) -> bool:
        """Keep a page's answer: file first, then the row. False if the job is no longer ours."""
        if not self.renew(job_id, me):
            return False
        try:
            self._write_atomic(self.page_path(job_id, idx), body)
        except FileNotFoundError:  # cancelled between the renewal and the write: its folder is gone
            return False
        with self._tx() as db:
            cur = db.execute("UPDATE pages SET done = 1 WHERE job_id = ? AND idx = ? AND done = 0", (job_id, idx))
            if cur.rowcount:
                db.execute("UPDATE jobs SET pages_done = pages_done + 1, bytes = bytes + ? WHERE id = ?",
                           (len(body), job_id))
        return True

    def page_attempt(self, job_id: str, idx: int) -> int:
        """Count one more failed attempt at a page; returns the count (kept across restarts)."""
        with self._tx() as db:
            db.execute("UPDATE pages SET attempts = attempts + 1 WHERE job_id = ? AND idx = ?", (job_id, idx))
            return db.execute("SELECT attempts FROM pages WHERE job_id = ? AND idx = ?",
                              (job_id, idx)).fetchone()[0]

    def finish(self, job_id: str, me: str, status: str, error: dict[str, Any] | None = None) -> bool:
        with self._tx() as db:
            cur = db.execute("UPDATE jobs SET status = ?, finished = ?, error = ?, lease_owner = NULL, "
                             "lease_until = NULL WHERE id = ? AND status = 'running' AND lease_owner = ?",
                             (status, time.time(), json.dumps(error) if error else None, job_id, me))
            return cur.rowcount == 1

    def expire(self, now: float | None = None) -> list[str]:
        """Delete jobs finished more than ttl_seconds ago, rows and files; returns their ids."""
        cutoff = (time.time() if now is None else now) - self.cfg.ttl_seconds
        with self._tx() as db:
            ids = [r[0] for r in db.execute(f"SELECT id FROM jobs WHERE status IN {FINISHED} AND finished < ?",
                                            (cutoff,)).fetchall()]
            db.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in ids])
        for job_id in ids:
            shutil.rmtree(self.folder(job_id), ignore_errors=True)
        return ids

    @staticmethod
    def _write_atomic(path: Path, data: bytes) -> None:
        tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
