"""`python -m service.keys add|revoke|list`: manage the API keys, in the store or in a keys file.

With [auth] keys_in_store the keys live in the store that every host shares (a fleet): run this on
any machine with the declaration and the store's password, and every worker of every host counts
the change within [store] refresh_seconds (service/web/keysets.py). Otherwise they live in the
file named by [auth] keys_file, which this host's workers re-read when it changes
(service/web/auth.py), and [auth] itself when the settings file changes (service/web/live.py), so
a key added or revoked here, or keys turned on or off, take effect from the next request, without
a reload or restart. Either way only SHA-256 digests are stored; a new key is printed once and
never stored. File writes replace the file atomically, so a worker never reads half a file.
"""

from __future__ import annotations

import argparse
import os
import secrets
import stat
import sys
import tempfile
import time
from pathlib import Path

from .. import settings
from ..apikeys import digest, read_keys
from ..store.db import Postgres, Sqlite, open_database
from ..store.schema import migrate


def write_keys(path: Path, keys: dict[str, str]) -> None:
    """Replace the file in one rename. A new file is readable by its owner only; a file replaced
    keeps its owner, group and mode, so one made readable by the service's user (on a host:
    `chgrp parse FILE; chmod 640 FILE`, as root runs this) stays readable by it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        old = os.stat(path)
    except FileNotFoundError:
        old = None
    lines = ["# parse API keys: SHA-256 of each key, then its label. Managed by python -m service.keys."]
    lines += [f"{d} {label}".rstrip() for d, label in keys.items()]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".keys-")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        os.chmod(tmp, stat.S_IMODE(old.st_mode) if old else 0o600)
        if old and os.geteuid() == 0:
            os.chown(tmp, old.st_uid, old.st_gid)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def add(path: Path, label: str) -> str:
    """Create a key, store its digest under `label`, and return the key (shown once)."""
    key = secrets.token_urlsafe(32)
    keys = read_keys(path) if path.exists() else {}
    keys[digest(key)] = label
    write_keys(path, keys)
    return key


def revoke(path: Path, which: str) -> list[str]:
    """Remove every key whose label equals `which` or whose digest starts with it (8+ hex digits)."""
    keys = read_keys(path) if path.exists() else {}
    gone = [d for d, label in keys.items() if label == which or (len(which) >= 8 and d.startswith(which))]
    write_keys(path, {d: label for d, label in keys.items() if d not in gone})
    return gone


class StoreKeys:
    """The keys table of the store, with the same add, revoke and list as the file."""

    def __init__(self, db: Sqlite | Postgres):
        migrate(db)
        self.db = db

    def read(self) -> dict[str, str]:
        with self.db.tx() as tx:
            return {r["digest"]: r["label"] for r in tx.query("SELECT digest, label FROM api_key ORDER BY created")}

    def add(self, label: str) -> str:
        key = secrets.token_urlsafe(32)
        with self.db.tx() as tx:
            tx.run("INSERT INTO api_key (digest, label, created) VALUES (?, ?, ?)", (digest(key), label, time.time()))
        return key

    def revoke(self, which: str) -> list[str]:
        gone = [d for d, label in self.read().items()
                if label == which or (len(which) >= 8 and d.startswith(which))]
        with self.db.tx() as tx:
            for d in gone:
                tx.run("DELETE FROM api_key WHERE digest = ?", (d,))
        return gone


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.keys", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("add", help="create a key and print it once").add_argument("--label", default="")
    sub.add_parser("revoke", help="remove keys by label or digest prefix").add_argument("which")
    sub.add_parser("list", help="show digests and labels")
    args = parser.parse_args(argv)

    cfg = settings.load()
    path = cfg.auth.keys_file
    if cfg.auth.keys_in_store:
        store = StoreKeys(open_database(cfg))
        where = f"the store ({cfg.store.url or cfg.jobs.db}); every host counts it within {cfg.store.refresh_seconds:g} s"
        do_add, do_revoke, do_read = store.add, store.revoke, store.read
    elif path is not None:
        where = f"{path}; /v1/* needs a key from the next request on"
        do_add, do_revoke = (lambda label: add(path, label)), (lambda which: revoke(path, which))
        do_read = lambda: read_keys(path) if path.exists() else {}  # noqa: E731
    else:
        print(f"API keys are off: {cfg.path} sets no [auth] keys_file. Turn them on there, e.g.\n\n"
              f'    [auth]\n    keys_file = "run/api-keys"\n\n'
              "(a fleet: keys_in_store = true), then run this command again. The running service applies "
              "both from its next request, no reload needed.", file=sys.stderr)
        return 2
    if args.command == "add":
        print(do_add(args.label))
        print(f"stored its digest in {where}; the key is not shown again", file=sys.stderr)
    elif args.command == "revoke":
        gone = do_revoke(args.which)
        print(f"revoked {len(gone)} key(s) in {where}", file=sys.stderr)
        if not gone:
            return 1
    else:
        for d, label in do_read().items():
            print(f"{d[:16]}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
