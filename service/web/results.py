"""?annotate=1 PNGs kept in the store, for a fleet: the link works whichever host serves it.

On one host the PNGs are files that Nginx serves (service/web/annotate.py). With a store shared by
several hosts ([store] url) the worker that drew a PNG may be on another host than the one whose
Nginx, or whose worker, is asked for it; so the PNG goes into the store, and any worker answers
GET /results/<id>.png from there. The same limits hold: [results] ttl_seconds (a result past it is
a 404 at once, and swept), and max_bytes over the whole fleet, the oldest going first.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, Response

from ..errors import ClientError
from ..settings import ResultsSettings
from ..store.db import Postgres, Sqlite
from ..store.schema import migrate
from . import annotate, state

log = logging.getLogger(__name__)

bp = Blueprint("results", __name__)


def keep(db: Sqlite | Postgres, data: bytes, results: ResultsSettings) -> str | None:
    """Store PNG bytes under a new id after making room; its URL, or None when it can never fit."""
    if len(data) > results.max_bytes:
        log.warning("annotated PNG of %d bytes is over [results] max_bytes=%d; not kept", len(data), results.max_bytes)
        return None
    migrate(db)
    result_id = annotate.new_id()
    now = time.time()
    with db.tx(exclusive=True) as tx:
        tx.serialize("parse-results")
        tx.run("DELETE FROM result WHERE created < ?", (now - results.ttl_seconds,))
        rows = tx.query("SELECT id, length(data) AS n FROM result ORDER BY created DESC")
        total, keep_ids = len(data), 0
        for row in rows:  # newest first: what fits beside the new PNG stays
            if total + int(row["n"]) > results.max_bytes:
                break
            total += int(row["n"])
            keep_ids += 1
        for row in rows[keep_ids:]:
            tx.run("DELETE FROM result WHERE id = ?", (row["id"],))
        tx.run("INSERT INTO result (id, created, data) VALUES (?, ?, ?)", (result_id, now, data))
    return f"{annotate.URL_PREFIX}{result_id}.png"


@bp.get("/results/<name>")
def serve(name: str):
    worker = state.current()
    result_id = name.removesuffix(".png")
    if not name.endswith(".png") or not annotate.ID_PATTERN.match(result_id):
        raise ClientError(404, "not_found", "no such result")
    migrate(worker.db)
    with worker.db.tx() as tx:
        row = tx.one("SELECT data FROM result WHERE id = ? AND created >= ?",
                     (result_id, time.time() - worker.cfg.results.ttl_seconds))
    if row is None:
        raise ClientError(404, "not_found", "no such file; results expire (see [results] ttl_seconds)")
    return Response(bytes(row["data"]), content_type="image/png",
                    headers={"Cache-Control": f"private, max-age={worker.cfg.results.ttl_seconds}"})
