"""The API keys file format, shared by the web layer (which checks keys) and `service.keys` (which manages them).

One SHA-256 hex digest per line, then an optional label; '#' starts a comment. Only digests are
stored, so the file leaks no usable key.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

log = logging.getLogger(__name__)

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def digest(key: str) -> str:
    """What the keys file stores for `key`."""
    return hashlib.sha256(key.encode()).hexdigest()


def read_keys(path: Path) -> dict[str, str]:
    """digest -> label for every well-formed line of a keys file ('#' starts a comment)."""
    keys: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split("#", 1)[0].split(maxsplit=1)
        if not fields:
            continue
        if not _DIGEST.match(fields[0]):
            log.warning("%s:%d is not a SHA-256 hex digest; ignored", path, number)
            continue
        keys[fields[0]] = fields[1].strip() if len(fields) > 1 else ""
    return keys
