"""Optional API keys for /v1/, and the network allow-list for /metrics, checked before any route runs.

Keys come from a key set (`KeySet`): on one host a file of SHA-256 hex digests (`[auth] keys_file`),
one per line with an optional label, re-read when it changes; in a fleet the store
(`[auth] keys_in_store`, service/web/keysets.py), re-read every few seconds. Either way
`python -m service.keys` manages them. [auth] itself is read afresh when the settings file changes
(service/web/live.py), so turning keys on or off, adding or revoking a key, all apply without a
restart. Only digests are stored: neither leaks a usable key.
/healthz and /readyz stay open so that load balancers and systemd can probe without a key.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
from pathlib import Path
from typing import Callable, Protocol

from flask import Flask, g, request

from ..apikeys import digest, read_keys
from ..errors import ClientError
from ..settings import AuthSettings

log = logging.getLogger(__name__)

_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
CHALLENGE = 'Bearer realm="parse"'
_MISSING = (-1, -1, -1)  # KeyFile stamp while the file cannot be read


class KeySet(Protocol):
    """Where the valid API keys come from: KeyFile here, or the store (keysets.StoreKeys)."""

    def accepts(self, key: str) -> bool: ...


class KeyFile:
    """The keys file, re-read whenever its mtime, inode or size changes (one stat per request)."""

    def __init__(self, path: Path):
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._digests: tuple[str, ...] = ()

    def digests(self) -> tuple[str, ...]:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
            if stamp != self._stamp:
                self._digests = tuple(read_keys(self.path))
                self._stamp = stamp
                log.info("keys file %s loaded: %d keys", self.path, len(self._digests))
        except OSError as err:
            # Keys are on but the file is gone or not ours to read: fail closed, and tell the
            # operator why (once).
            if self._stamp != _MISSING:
                log.error("keys file %s unreadable (%s): every key is refused", self.path, err)
            self._stamp, self._digests = _MISSING, ()
        return self._digests

    def accepts(self, key: str) -> bool:
        """Constant time in the key: every stored digest is compared, with hmac.compare_digest."""
        wanted = digest(key).encode()
        found = False
        for stored in self.digests():
            found |= hmac.compare_digest(wanted, stored.encode())
        return found


def bearer_key() -> str | None:
    """The key from `Authorization: Bearer <key>`, or None when the header is absent or another scheme."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return key.strip() or None


def metrics_allowed(address: str | None, allow: tuple[str, ...]) -> bool:
    """Loopback always, plus the configured networks; an unparsable address is refused."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    networks = _LOOPBACK + tuple(ipaddress.ip_network(net, strict=False) for net in allow)
    return any(ip in net for net in networks if net.version == ip.version)


def _job_page(key: str, internal: Callable[[str], bool]) -> bool:
    """A job's page posted by a coordinator with the fleet's internal key (service/jobs/internal_key.py).
    Its X-Parse-Job header then labels this request's log lines with the job id."""
    if request.path != "/v1/parse" or not internal(key):
        return False
    g.job_id = request.headers.get("X-Parse-Job", "")[:32] or None
    return True


def check_networks(cfg: AuthSettings) -> None:
    """A typo in [auth] metrics_allow is refused (ValueError): at start, or when the file changes."""
    for net in cfg.metrics_allow:
        ipaddress.ip_network(net, strict=False)


def register(app: Flask, current: Callable[[], AuthSettings], store_keys: KeySet,
             internal: Callable[[str], bool]) -> None:
    """Install the checks as a before_request hook: keys on /v1/ when a key set is in force, /metrics
    always. `current` gives [auth] as it is now (service/web/live.py), read once per request;
    `store_keys` is the store's key set, `internal` tells the coordinators' internal key."""
    check_networks(current())
    files: dict[Path, KeyFile] = {}

    def key_set(cfg: AuthSettings) -> KeySet | None:
        """The keys in force under [auth] as it is now; None while keys are off."""
        if cfg.keys_in_store:
            return store_keys
        if cfg.keys_file is None:
            return None
        if cfg.keys_file not in files:
            files[cfg.keys_file] = KeyFile(cfg.keys_file)
        return files[cfg.keys_file]

    @app.before_request
    def _authorize() -> None:
        cfg = current()
        keys = key_set(cfg)
        if request.path == "/metrics" and not metrics_allowed(request.remote_addr, cfg.metrics_allow):
            raise ClientError(403, "forbidden", "/metrics is served to loopback and [auth] metrics_allow only")
        key = bearer_key()
        if key is not None and _job_page(key, internal):
            return
        if keys is None or not request.path.startswith("/v1/"):
            return
        if key is None:
            raise ClientError(401, "missing_api_key", "send the API key as 'Authorization: Bearer <key>'",
                           {"WWW-Authenticate": CHALLENGE})
        if not keys.accepts(key):
            raise ClientError(401, "invalid_api_key", "the API key is not valid (revoked or mistyped)",
                           {"WWW-Authenticate": f'{CHALLENGE}, error="invalid_token"'})
