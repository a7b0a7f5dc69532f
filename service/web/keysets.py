"""Key sets from the store: the API keys of a fleet, and the coordinators' internal key.

A worker never asks the store per request: it re-reads the set every [store] refresh_seconds (at
the first request after that time), so a key revoked with `python -m service.keys` is refused on
every host within that bound. A key the set lacks makes the worker look again at once (at most
once per MISS_REFRESH_S), so a key just added works at once. While the store is unreachable a worker keeps the set it
read last, so known keys keep working through an outage; a worker that has never read a set
refuses every key (it fails closed) until the store answers.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable

from ..apikeys import digest
from ..store.db import Postgres, Sqlite, Unavailable
from ..store.schema import migrate
from ..jobs import internal_key

log = logging.getLogger(__name__)

# The soonest a worker re-reads the set for a key it does not know: a new key works within this,
# and a client sending bad keys costs the store one query per worker per this many seconds.
MISS_REFRESH_S = 1.0


def _any_equal(wanted: str, stored: tuple[str, ...]) -> bool:
    """Constant time in the key: every stored value is compared, with hmac.compare_digest."""
    found = False
    for value in stored:
        found |= hmac.compare_digest(wanted.encode(), value.encode())
    return found


class StoreKeys:
    """The store's key set (API key digests and the internal key's digest), refreshed on a period."""

    def __init__(self, db: Callable[[], Sqlite | Postgres], refresh_seconds: float):
        self._db = db
        self.refresh_seconds = refresh_seconds
        # API keys are read from the first accepts() on: once [auth] keys_in_store is in force
        # (at start, or when the settings file turns it on).
        self.api_keys = False
        self._lock = threading.Lock()
        self._read_at: float | None = None
        self._digests: tuple[str, ...] = ()
        self._internal: tuple[str, ...] = ()
        self._down = False

    def _refresh(self, within: float | None = None) -> None:
        """Read the set again if it is older than `within` seconds (default: refresh_seconds)."""
        if self._internal and not self.api_keys:
            return  # keys not in the store: the internal key, read once, is all this set holds
        within = self.refresh_seconds if within is None else within
        now = time.monotonic()
        if self._read_at is not None and now - self._read_at < within:
            return
        with self._lock:
            if self._read_at is not None and now - self._read_at < within:
                return
            try:
                db = self._db()
                migrate(db)
                # The internal key never changes once made: read once per process.
                internal = self._internal or (digest(internal_key.read_or_create(db)),)
                digests: tuple[str, ...] = ()
                if self.api_keys:
                    with db.tx() as tx:
                        digests = tuple(r["digest"] for r in tx.query("SELECT digest FROM api_key"))
            except Unavailable as err:
                if not self._down:
                    log.error("store unreachable (%s): keeping the %d keys read %s", err, len(self._digests),
                              "last" if self._read_at is not None else "(none yet: every key is refused)")
                self._down = True
                # Try again within a second, not at every request.
                self._read_at = now - self.refresh_seconds + 1.0
                return
            if self._down or set(digests) != set(self._digests):
                log.info("key set read from the store: %d API keys", len(digests))
            self._down = False
            self._digests, self._internal, self._read_at = digests, internal, now

    def accepts(self, key: str) -> bool:
        """An API key of the store's set; one it lacks makes it look again (MISS_REFRESH_S)."""
        if not self.api_keys:
            self.api_keys, self._read_at = True, None
        self._refresh()
        if _any_equal(digest(key), self._digests):
            return True
        self._refresh(MISS_REFRESH_S)
        return _any_equal(digest(key), self._digests)

    def internal(self, key: str) -> bool:
        """The fleet's internal key (job pages posted by a coordinator); every client key is
        checked against it first, so a miss here never costs a read."""
        self._refresh()
        return _any_equal(digest(key), self._internal)
