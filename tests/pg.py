"""A PostgreSQL server of the test's own: initdb + pg_ctl in a temporary folder, stopped after.

Debian's `postgresql` package puts the binaries under /usr/lib/postgresql/VERSION/bin (not on
PATH); the system's own service is never started. initdb refuses to run as root, so as root the
server runs as the `postgres` user (made by that package), in a folder it owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER = "parse"
DATABASE = "parse"


def binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return versions[-1] if versions else None


def free_port() -> int:
    """A loopback port free now, for a server of a test's own."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def usable() -> str | None:
    """None when a server can be started here, else why not."""
    if not binary("initdb") or not binary("pg_ctl"):
        return "PostgreSQL's initdb/pg_ctl are not installed (Debian: apt-get install postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the server as"
    return None


class Cluster:
    """One server on `host`:`port`, run in network namespace `netns` when given."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5432, netns: str | None = None):
        self.host, self.port, self.netns = host, port, netns
        # Under /tmp itself: pytest's folders are private to root, where the postgres user cannot go.
        self.folder = Path(tempfile.mkdtemp(prefix="parse-pg-"))
        self.data = self.folder / "data"
        self.password_file = self.folder / "password"
        self.password_file.write_text(secrets.token_urlsafe(16) + "\n")
        self.password_file.chmod(0o644)  # the test's uWSGI processes read it as root anyway
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@{self.host}:{self.port}/{DATABASE}"

    def _run(self, *cmd: str, netns: bool = False) -> subprocess.CompletedProcess:
        prefix: list[str] = []
        if netns and self.netns:
            prefix = ["ip", "netns", "exec", self.netns]
        if os.geteuid() == 0:
            prefix += ["runuser", "-u", "postgres", "--"]
        return subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True)

    def init(self) -> "Cluster":
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
            os.chown(self.password_file, entry.pw_uid, entry.pw_gid)
        self._run(binary("initdb"), "-D", str(self.data), "-U", USER, "--auth=scram-sha-256",
                  f"--pwfile={self.password_file}", "-E", "UTF8", "--no-instructions")
        with open(self.data / "pg_hba.conf", "a") as fh:  # the namespaces' addresses, with the password
            fh.write("host all all 0.0.0.0/0 scram-sha-256\n")
        return self

    def start(self) -> None:
        opts = f"-h {self.host} -p {self.port} -k {self.folder} -c fsync=off -c max_connections=200"
        self._run(binary("pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "server.log"), "-o", opts,
                  "-w", "-t", "60", "start", netns=True)
        self.running = True

    def create_database(self) -> None:
        import pg8000.dbapi

        conn = pg8000.dbapi.connect(user=USER, host=self.host, port=self.port, database="postgres",
                                    password=self.password_file.read_text().strip())
        conn.autocommit = True
        conn.cursor().execute(f"CREATE DATABASE {DATABASE}")
        conn.close()

    def stop(self) -> None:
        if self.running:
            self._run(binary("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", netns=True)
            self.running = False

    def remove(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
