"""The key a coordinator presents when it posts a job's pages through Nginx like any client.

With API keys on, /v1/parse needs a key, and a job must go on after a restart, long after its
submitter's request is gone; storing clients' keys would leak them. So the fleet has one random
key of its own, made on first use in the store (service/store), which every host's coordinators
present and every worker's auth check accepts, for /v1/parse alone. Nothing to copy between
hosts: each reads it from the store.
"""

from __future__ import annotations

import secrets

from ..store.db import Postgres, Sqlite

NAME = "internal-key"


def read_or_create(db: Sqlite | Postgres) -> str:
    """The fleet's internal key; the first process to ask stores it (the primary key: one wins)."""
    with db.tx() as tx:
        tx.run("INSERT INTO secret (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
               (NAME, secrets.token_urlsafe(32)))
        return tx.one("SELECT value FROM secret WHERE name = ?", (NAME,))["value"]
