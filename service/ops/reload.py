"""Rolling reload: new code and app configuration, one worker and one instance at a time.

    python -m service.ops.reload [--timeout S] [PORT...]   a host's instances (no PORT: every declared one)
    python -m service.ops.reload --dev [--run-dir DIR]      make reload: the dev stack under run/

Each instance in turn gets `c` on its master FIFO (uWSGI's chain reload: the master retires one
worker at a time, gracefully, letting it finish its request, and forks a replacement that imports
the code and reads conf/parse.toml afresh). The next instance starts only once every worker of this
one is new and has its model loaded, so at most one instance is ever short of a worker. Requests
sent to a worker that is being replaced wait in the instance's listen queue, and a new worker lets
them wait for its model within their deadline (service/web/state.py), so nothing is refused.

What a chain reload cannot change is the master's own: processes, threads, request threads
(batch_pages), the listen queue and the socket (the environment file). Those take an instance restart (`systemctl restart parse@PORT`,
one at a time; under `make run`: make stop && make run).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from .. import settings as settings_mod
from ..settings import ROOT, Instance, Settings
from . import deploy, fleet, probe


def stats(address: str, timeout: float = 5.0) -> dict:
    """The instance's uWSGI stats (JSON from its stats server on loopback)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        return json.loads(b"".join(iter(lambda: sock.recv(65536), b"")))


def worker_pids(address: str) -> set[int]:
    return {w["pid"] for w in stats(address)["workers"] if w["pid"]}


def instance_ready(inst: Instance) -> bool:
    """Every worker of the instance has its model: /readyz says so (over the uwsgi protocol)."""
    try:
        status, body = probe.request(inst.port)
    except OSError:
        return False
    if status != 200:
        return False
    counts = json.loads(body)["instance"]
    return counts["workers_ready"] == counts["workers"]


def chain_reload(inst: Instance, fifo: Path, stats_address: str, timeout: float) -> float:
    """Chain-reload one instance and wait until all its workers are new and ready; returns seconds."""
    start = time.monotonic()
    old = worker_pids(stats_address)
    # O_WRONLY on a FIFO blocks until the master has it open for reading, which it always has.
    with open(fifo, "w") as f:
        f.write("c")
    while time.monotonic() - start < timeout:
        try:
            pids = worker_pids(stats_address)
        except OSError:
            pids = set()
        # As many workers as before: the master keeps its count until a restart, whatever the file says.
        if len(pids) == len(old) and not pids & old and instance_ready(inst):
            return time.monotonic() - start
        time.sleep(0.2)
    raise TimeoutError(f"instance {inst.port}: workers not all replaced and ready within {timeout:g} s")


def rolling(cfg: Settings, fifo_dir: Path, ports: list[int], timeout: float, host: str | None = None) -> None:
    """Chain-reload the instances on `ports` (of `host`, in a fleet whose hosts may share ports)
    one after the other, stopping at the first failure."""
    for port in ports:
        inst = cfg.instance(port, host)
        seconds = chain_reload(inst, deploy.fifo_path(fifo_dir, inst), deploy.stats_address(inst), timeout)
        workers = len(worker_pids(deploy.stats_address(inst)))
        print(f"instance {port}: {workers} worker(s) replaced and ready in {seconds:.1f} s", flush=True)


def dev(cfg: Settings, run: Path, timeout: float) -> None:
    """make reload: render again, reload Nginx if its files changed (SIGHUP: old Nginx workers finish
    their requests), then the rolling chain reload of every instance."""
    layout = deploy.DevLayout(run.resolve())
    if not (layout.pid_file("nginx").exists() and deploy.pid_alive(int(layout.pid_file("nginx").read_text()))):
        raise SystemExit("the dev stack is not running: `make run` first")

    def snapshot() -> dict[Path, str]:
        return {p: p.read_text() for p in [*layout.env_dir.glob("*.env"), *(layout.nginx_dir / "parse").glob("*.conf")]}

    before = snapshot()
    deploy.render_dev(cfg, run)
    after = snapshot()
    for path in sorted(p for p in after if p.suffix == ".env" and before.get(p) != after[p]):
        print(f"{path.name} changed: processes, threads and the listen queue apply at that instance's next "
              "restart (make stop && make run); a chain reload keeps the master's", flush=True)
    if any(before.get(p) != after[p] for p in after if p.suffix == ".conf"):
        subprocess.run([*deploy.nginx_command(layout), "-t", "-q"], check=True, cwd=ROOT)
        os.kill(int(layout.pid_file("nginx").read_text()), signal.SIGHUP)
        print("nginx: configuration reloaded", flush=True)
    rolling(cfg, layout.control, [i.port for i in cfg.instances], timeout)


def running_ports(layout: deploy.DevLayout) -> set[int]:
    return {int(name.removeprefix("uwsgi-")) for name in deploy.running(layout) if name.startswith("uwsgi-")}


def apply(cfg: Settings, run: Path, timeout: float) -> None:
    """`make run` on a running dev stack: the rolling reload applies every edit it can, and what
    it cannot (instances added or removed) is named with the command that applies it."""
    layout = deploy.DevLayout(run.resolve())
    declared, up = {i.port for i in cfg.instances}, running_ports(layout)
    nginx = "nginx" in deploy.running(layout)
    if up != declared or not nginx:
        print(f"the stack under {layout.run} runs instances {sorted(up)}{'' if nginx else ' without nginx'}; "
              f"{cfg.path} declares {sorted(declared)}: `make stop && make run` starts what is declared", flush=True)
        return
    print("already running: applying the configuration and code by a rolling reload (make reload)", flush=True)
    dev(cfg, run, timeout)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service.ops.reload", description=__doc__.splitlines()[0])
    parser.add_argument("ports", nargs="*", type=int, help="instances, in order (default: every declared one)")
    parser.add_argument("--dev", action="store_true", help="the dev stack (make run): render, Nginx, every instance")
    parser.add_argument("--run-dir", type=Path, default=ROOT / "run", help="the dev stack's folder (default run/)")
    parser.add_argument("--timeout", type=float, default=deploy.START_TIMEOUT_S,
                        help="seconds one instance may take to be replaced and ready")
    args = parser.parse_args(argv)
    cfg = settings_mod.load()
    try:
        if args.dev:
            dev(cfg, args.run_dir, args.timeout)
        else:
            # A host reloads its own instances: the others are other machines'. Where whoami
            # cannot tell which host this is, it asks for PARSE_HOST.
            host = fleet.whoami(cfg).name
            rolling(cfg, deploy.HOST_CONTROL, args.ports or fleet.host_ports(cfg, host), args.timeout, host)
    except (TimeoutError, OSError) as exc:
        sys.exit(f"reload stopped: {exc}")


if __name__ == "__main__":
    main()
