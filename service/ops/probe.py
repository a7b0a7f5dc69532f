"""Readiness probe: ask an instance's /readyz over the uwsgi protocol, as Nginx would.

    python -m service.ops.probe [--wait SECONDS] [PORT...]    (no PORT: this host's instances)

uWSGI tells systemd READY as soon as its master runs, before lazy workers have loaded their
models; this probe is what `make run`, `make status` and the unit's ExecStartPost wait on
instead. An instance is ready when its /readyz answers 200 and reports every worker ready.
"""

from __future__ import annotations

import argparse
import json
import socket
import ssl
import struct
import sys
import time

from .. import settings as settings_mod
from . import fleet


def _vars(pairs: dict[str, str]) -> bytes:
    out = b""
    for key, value in pairs.items():
        k, v = key.encode(), value.encode()
        out += struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
    return out


def request(port: int, path: str = "/readyz", host: str = "127.0.0.1", timeout: float = 5.0,
            tls: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """GET `path` from a uWSGI socket (over TLS with `tls`, as instances on a network speak);
    returns (status, body). Raises OSError when nothing answers, ssl.SSLError is one."""
    body = _vars({"REQUEST_METHOD": "GET", "PATH_INFO": path, "REQUEST_URI": path, "QUERY_STRING": "",
                  "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": host, "SERVER_PORT": str(port),
                  "HTTP_HOST": host, "REMOTE_ADDR": "127.0.0.1"})
    packet = struct.pack("<BHB", 0, len(body), 0) + body  # modifier1 0 = WSGI, then the vars
    with socket.create_connection((host, port), timeout=timeout) as raw_sock:
        sock = tls.wrap_socket(raw_sock, server_hostname=fleet.INSTANCE_NAME) if tls else raw_sock
        sock.sendall(packet)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, payload = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2:
        raise OSError(f"no HTTP answer from {host}:{port}")
    return int(status_line[1]), payload


def state(port: int, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> tuple[bool, str]:
    """(ready, one line saying why) for the instance on `port`."""
    try:
        status, payload = request(port, host=host, tls=tls)
    except OSError as exc:
        return False, f"not answering ({exc.strerror or exc})"
    try:
        doc = json.loads(payload)
    except ValueError:
        return False, f"HTTP {status}, not JSON"
    if status != 200:
        return False, f"HTTP {status} {doc.get('error', {}).get('code', '')}: {doc.get('error', {}).get('message', '')}"
    inst = doc["instance"]
    ready = inst["workers_ready"] >= inst["workers"]
    return ready, f"{inst['workers_ready']}/{inst['workers']} workers ready"


def wait_ready(ports: list[int], timeout: float, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
    """Return once every instance is ready; TimeoutError (saying which are not) after `timeout`."""
    deadline = time.monotonic() + timeout
    pending = list(ports)
    while pending:
        pending = [p for p in pending if not state(p, host, tls)[0]]
        if pending and time.monotonic() > deadline:
            raise TimeoutError("; ".join(f"{host}:{p}: {state(p, host, tls)[1]}" for p in pending))
        if pending:
            time.sleep(0.25)


def report(ports: list[int], host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> bool:
    """Print each instance's readiness; True when all are ready."""
    results = {p: state(p, host, tls) for p in ports}
    for port, (ready, why) in results.items():
        print(f"instance {host}:{port}: {'ready' if ready else 'NOT READY'} ({why})")
    return all(ready for ready, _ in results.values())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service.ops.probe", description=__doc__.splitlines()[0])
    parser.add_argument("ports", nargs="*", type=int, help="instance ports (default: this host's instances)")
    parser.add_argument("--wait", type=float, metavar="SECONDS", help="wait up to SECONDS for readiness")
    args = parser.parse_args(argv)
    cfg = settings_mod.load()
    # This machine's instances (whoami: under systemd the environment file names the host). Their uwsgi
    # sockets are on this machine's loopback on every host, a fleet's too (the TLS gateway in front
    # of them is for the front host), and loopback is what the unit's IP allow-list lets through.
    me = fleet.whoami(cfg)
    ports = args.ports or fleet.host_ports(cfg, me.name)
    if args.wait is None:
        sys.exit(0 if report(ports) else 1)
    try:
        wait_ready(ports, args.wait)
    except TimeoutError as exc:
        sys.exit(f"not ready after {args.wait:.0f}s: {exc}")
    report(ports)


if __name__ == "__main__":
    main()
