"""The key a coordinator presents when it posts a job's pages through Nginx like any client.

With API keys on, /v1/parse needs a key, and a job must go on after a restart, long after its
submitter's request is gone; storing clients' keys would leak them. So each host has one random
key of its own, made on first use in the jobs folder (mode 0600, readable only by the service's
user), which every instance's auth check accepts for /v1/parse alone.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

FILE_NAME = ".internal-key"
# Read once per process: it never changes while the folder exists.
_cache: dict[Path, str] = {}


def read_or_create(folder: Path) -> str:
    """The host's internal key; the first process to ask writes it (link() is atomic: one wins)."""
    path = folder / FILE_NAME
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-key-{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(32) + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text().strip()


def matches(key: str, folder: Path) -> bool:
    if folder not in _cache:
        _cache[folder] = read_or_create(folder)
    return hmac.compare_digest(key.encode(), _cache[folder].encode())
