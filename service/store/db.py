"""One database interface over two engines: SQLite on one host, PostgreSQL for a fleet.

Callers write SQL once, with `?` placeholders and the few words the engines spell differently
taken from the transaction (`tx.skip_locked`, `tx.serialize`); everything else in the schema and
the queries is SQL both engines read the same way.

A connection problem (server stopped, network gone, too many connections) is raised as
`Unavailable`, never as the driver's own error, so that the web layer answers 503 with Retry-After
and the coordinator waits and goes on, whichever engine is behind.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import ssl
import threading
import urllib.parse
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from ..settings import Settings

log = logging.getLogger(__name__)

# Seconds a statement may take on an open connection (a job upload of [jobs] max_bytes included);
# [store] connect_timeout_seconds bounds the connect alone, so an unreachable store is told fast.
STATEMENT_TIMEOUT_S = 120.0
# PostgreSQL error classes that mean "the server or the link", not "this statement": connection
# exceptions (08), operator intervention (57: shutdown, crash recovery), insufficient resources (53).
_UNAVAILABLE_CLASSES = ("08", "57", "53")


class Unavailable(Exception):
    """The store cannot be reached now; the operation may succeed later."""


class Tx(Protocol):
    """What a transaction of either engine offers (`with db.tx() as tx`)."""

    skip_locked: str

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...
    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None: ...
    def run(self, sql: str, params: Sequence[Any] = ()) -> int: ...
    def serialize(self, name: str) -> None: ...


def _lock_id(name: str) -> int:
    """A stable 32-bit id for pg_advisory_xact_lock from a readable name."""
    return zlib.crc32(name.encode())


class _SqliteTx:
    skip_locked = ""  # BEGIN IMMEDIATE already serializes every writer

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute(sql, tuple(params)).fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        row = self.db.execute(sql, tuple(params)).fetchone()
        return dict(row) if row else None

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.db.execute(sql, tuple(params)).rowcount

    def serialize(self, name: str) -> None:
        pass


class Sqlite:
    """SQLite in WAL mode: readers poll while a writer commits; writers take turns (BEGIN IMMEDIATE)."""

    kind = "sqlite"

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def _connect(self) -> sqlite3.Connection:
        # A fresh connection per transaction: cheap on a local file, and safe across threads and fork.
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode loses no committed transaction on a process crash (only on power loss).
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        return db

    @contextmanager
    def tx(self, exclusive: bool = False) -> Iterator[_SqliteTx]:
        try:
            db = self._connect()
        except sqlite3.OperationalError as err:
            raise Unavailable(f"SQLite {self.path}: {err}") from err
        try:
            db.execute("BEGIN IMMEDIATE" if exclusive else "BEGIN")
            yield _SqliteTx(db)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()


class _PgTx:
    skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, cur: Any):
        self.cur = cur

    def _exec(self, sql: str, params: Sequence[Any]) -> None:
        # pg8000's DB-API speaks %s; our SQL holds no literal % or ?, so the swap is exact.
        self.cur.execute(sql.replace("?", "%s"), tuple(params))

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        self._exec(sql, params)
        names = [d[0] for d in self.cur.description]
        return [dict(zip(names, row)) for row in self.cur.fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._exec(sql, params)
        return self.cur.rowcount

    def serialize(self, name: str) -> None:
        """Transactions that name the same lock take turns (released at commit or rollback)."""
        self._exec("SELECT pg_advisory_xact_lock(?)", (_lock_id(name),))


class Postgres:
    """PostgreSQL through pg8000: one connection per thread and process, opened on first use and
    again after any failure, so a store that comes back is used at once."""

    kind = "postgresql"

    def __init__(self, url: str, password_file: Path | None, connect_timeout: float):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError(f"[store] url must start with postgresql://, not {url!r}")
        query = dict(urllib.parse.parse_qsl(parts.query))
        self.params: dict[str, Any] = {
            "user": urllib.parse.unquote(parts.username or "parse"),
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 5432,
            "database": urllib.parse.unquote(parts.path.lstrip("/")) or "parse",
            "application_name": "parse",
        }
        self.connect_timeout = connect_timeout
        if parts.password:
            raise ValueError("[store] url must not hold the password: put it in [store] password_file")
        if password_file is not None:
            self.params["password"] = password_file.read_text().strip()
        if query.get("sslmode") in ("require", "verify-ca", "verify-full"):
            ctx = ssl.create_default_context(cafile=query.get("sslrootcert"))
            if query["sslmode"] == "require":
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            self.params["ssl_context"] = ctx
        self.host, self.port = self.params["host"], self.params["port"]
        self._local = threading.local()

    def _connection(self) -> Any:
        import pg8000.dbapi  # only where a fleet uses it: one host never imports the driver

        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        sock = None
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock.settimeout(STATEMENT_TIMEOUT_S)
            conn = pg8000.dbapi.connect(**self.params, sock=sock)
        except Exception as err:
            if sock is not None:
                sock.close()
            unavailable = isinstance(err, (pg8000.dbapi.InterfaceError, OSError)) or (
                isinstance(err, pg8000.dbapi.DatabaseError) and _unavailable(err))
            if unavailable:
                raise Unavailable(f"PostgreSQL at {self.host}:{self.port}: {err}") from err
            raise
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def _drop(self) -> None:
        conn, self._local.conn = getattr(self._local, "conn", None), None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # the connection is already broken: nothing to close cleanly
                pass

    @contextmanager
    def tx(self, exclusive: bool = False) -> Iterator[_PgTx]:
        import pg8000.dbapi

        conn = self._connection()
        try:
            cur = conn.cursor()
            yield _PgTx(cur)
            conn.commit()
        except (pg8000.dbapi.InterfaceError, OSError) as err:
            self._drop()
            raise Unavailable(f"PostgreSQL at {self.host}:{self.port}: {err}") from err
        except pg8000.dbapi.DatabaseError as err:
            if _unavailable(err):
                self._drop()
                raise Unavailable(f"PostgreSQL at {self.host}:{self.port}: {err}") from err
            self._rollback(conn)
            raise
        except BaseException:
            self._rollback(conn)
            raise

    def _rollback(self, conn: Any) -> None:
        try:
            conn.rollback()
        except Exception:  # a link that broke mid-rollback: start afresh next time
            self._drop()


def _unavailable(err: Exception) -> bool:
    info = err.args[0] if err.args else None
    code = info.get("C", "") if isinstance(info, dict) else ""
    return code[:2] in _UNAVAILABLE_CLASSES


def open_database(cfg: Settings) -> Sqlite | Postgres:
    """The store this declaration names: PostgreSQL when [store] url is set, else SQLite in [jobs] dir."""
    if cfg.store.url:
        return Postgres(cfg.store.url, cfg.store.password_file, cfg.store.connect_timeout_seconds)
    return Sqlite(cfg.jobs.db)
