"""The store's tables, created and migrated by the service itself at first use.

Each migration is a list of statements applied once, in order, inside one transaction that holds
the store's migration lock, so the first worker of a new release upgrades the schema and every
other waits for it and finds the work done. Types are spelt the way both engines read them; only
the binary type differs (BLOB in SQLite, BYTEA in PostgreSQL).
"""

from __future__ import annotations

import logging

from .db import Postgres, Sqlite

log = logging.getLogger(__name__)

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        # Jobs: the job, its uploads and each page's answer. A page is claimed under a lease by any
        # coordinator of the fleet (service/jobs/store.py); `reader` says which one kept it.
        """CREATE TABLE job (
            id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            status TEXT NOT NULL,
            query TEXT NOT NULL,
            pages_total INTEGER NOT NULL,
            pages_done INTEGER NOT NULL DEFAULT 0,
            created DOUBLE PRECISION NOT NULL,
            started DOUBLE PRECISION,
            finished DOUBLE PRECISION,
            error TEXT,
            bytes BIGINT NOT NULL
        )""",
        "CREATE INDEX job_status ON job (status, created)",
        """CREATE TABLE job_upload (
            job_id TEXT NOT NULL REFERENCES job (id) ON DELETE CASCADE,
            file INTEGER NOT NULL,
            data {blob} NOT NULL,
            PRIMARY KEY (job_id, file)
        )""",
        """CREATE TABLE job_page (
            job_id TEXT NOT NULL REFERENCES job (id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            file INTEGER NOT NULL,
            page INTEGER NOT NULL,
            of_pages INTEGER NOT NULL,
            done INTEGER NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0,
            lease_owner TEXT,
            lease_until DOUBLE PRECISION,
            reader TEXT,
            result {blob},
            PRIMARY KEY (job_id, idx)
        )""",
        "CREATE INDEX job_page_open ON job_page (done, job_id, idx)",
        # API keys: SHA-256 digests only, as in a keys file.
        "CREATE TABLE api_key (digest TEXT PRIMARY KEY, label TEXT NOT NULL, created DOUBLE PRECISION NOT NULL)",
        # Secrets the fleet shares: the coordinators' internal key (service/jobs/internal_key.py).
        "CREATE TABLE secret (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        # ?annotate=1 PNGs, served by the app at /results/<id>.png (service/web/results.py).
        "CREATE TABLE result (id TEXT PRIMARY KEY, created DOUBLE PRECISION NOT NULL, data {blob} NOT NULL)",
        "CREATE INDEX result_created ON result (created)",
    ),
)

def migrate(db: Sqlite | Postgres) -> None:
    """Bring the schema to the latest version (once per process and database)."""
    if getattr(db, "migrated", False):
        return
    blob = "BYTEA" if db.kind == "postgresql" else "BLOB"
    with db.tx(exclusive=True) as tx:
        tx.serialize("parse-schema")
        tx.run("CREATE TABLE IF NOT EXISTS store_schema (version INTEGER NOT NULL)")
        row = tx.one("SELECT max(version) AS v FROM store_schema")
        current = (row or {}).get("v") or 0
        for version, statements in enumerate(MIGRATIONS[current:], current + 1):
            for sql in statements:
                tx.run(sql.replace("{blob}", blob))
            tx.run("INSERT INTO store_schema (version) VALUES (?)", (version,))
            log.info("store schema migrated to version %d (%s)", version, db.kind)
    db.migrated = True
