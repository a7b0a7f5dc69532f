"""Settings that apply from the next request, without a reload: each worker re-reads the settings
file when it changes, and routes take [auth] from here.

Who may call the API must follow the file at once: an operator who turns keys on and sees the next
request still answered would believe the server locked while it answers anyone. Every other
setting is read at a worker's start (`make reload` or a restart applies it; conf/parse.toml's header
says which needs which). One stat per request is the whole cost.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Callable

from .. import settings as settings_mod
from ..settings import AuthSettings, Settings

log = logging.getLogger(__name__)

Stamp = tuple[int, int, int]


def stamp(path: Path) -> Stamp | None:
    """What tells a changed file: mtime, inode (a file replaced by rename) and size; None if unreadable."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_ino, st.st_size


class LiveSettings:
    """The settings this worker started with, replaced by the file's whenever it changes and loads.

    A file that does not load (a typo, or an editor half-way through writing it) keeps the settings
    in force, and the log says why: a broken edit never opens a locked API. `check` refuses
    settings that load but cannot run (it raises ValueError)."""

    def __init__(self, cfg: Settings, check: Callable[[Settings], None] = lambda cfg: None):
        self._cfg = cfg
        self._check = check
        self._stamp = stamp(cfg.path)
        self._lock = threading.Lock()

    def current(self) -> Settings:
        now = stamp(self._cfg.path)
        if now == self._stamp or now is None:
            return self._cfg
        with self._lock:
            if stamp(self._cfg.path) != self._stamp:
                self._reload()
        return self._cfg

    def auth(self) -> AuthSettings:
        return self.current().auth

    def _reload(self) -> None:
        before = stamp(self._cfg.path)
        try:
            new = settings_mod.load(self._cfg.path)
            # Every deployable file declares instances; one without them is being written right now.
            if self._cfg.instances and not new.instances:
                raise ValueError("it declares no [[instances]] (still being written?)")
            self._check(new)
        except (OSError, ValueError) as err:  # tomllib.TOMLDecodeError is a ValueError
            log.error("%s changed but was not applied, the settings in force stay: %s", self._cfg.path, err)
            self._stamp = before
            return
        if stamp(self._cfg.path) != before:
            return  # written to while read: read it again at the next request
        if new.auth != self._cfg.auth:
            log.warning("%s changed: [auth] now %s", self._cfg.path,
                        f"requires API keys from {new.auth.keys_file}" if new.auth.keys_file else "lets requests in without keys")
        self._cfg, self._stamp = new, before
