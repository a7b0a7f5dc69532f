"""A real serving stack for tests and benchmarks: uWSGI instances + Nginx on free loopback ports.

It is started the way `make run` starts one (service/ops/deploy.py) from a settings file written into
a temporary folder, and torn down by PID, process group by process group, whatever happened.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from service.ops import deploy, probe
from service import settings as settings_mod
from service.apikeys import digest
from service.settings import ROOT, Instance, Settings


def free_port(avoid: set[int]) -> int:
    """A loopback port that is free now, with port + STATS_OFFSET free too (the stats server)."""
    while True:
        port = random.randint(20000, 40000)
        if port in avoid or port + deploy.STATS_OFFSET in avoid:
            continue
        try:
            for p in (port, port + deploy.STATS_OFFSET):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        avoid.update({port, port + deploy.STATS_OFFSET})
        return port


def default_family() -> str:
    """The family conf/parse.toml serves: the stack tests run what production runs."""
    return os.environ.get("PARSE_TEST_FAMILY") or settings_mod.load(settings_mod.DEFAULT_CONFIG).model.family


def instance_table(port: int, keys: dict) -> str:
    """One [[instances]] table: `keys` over what a test stack runs by default (one CPU worker, one
    thread); any other instance key (device, ...) is written as given, so a benchmark declares what
    the shipped file can."""
    values = {"port": port, "weight": 1, "device": "cpu", "processes": 1, "threads": 1, **keys}
    return "[[instances]]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items()) + "\n"


def write_config(folder: Path, instances: list[dict], family: str | None = None,
                 deadline_seconds: float = 20, seconds_per_request: float = 2.0,
                 rate: tuple[int, int] = (10000, 10000), keys: tuple[str, ...] = (), extra: str = "",
                 model: dict | None = None) -> Settings:
    """A parse.toml in `folder` for these instances (weight, device, processes, threads,
    batch_pages, batch_wait_ms...), on free ports; `model` holds more [model] keys (precision, ...).

    The rate limit is out of the way unless `rate` (per second, burst) is given: most tests measure
    the stack, not the limit. `keys` turns API keys on, with a keys file holding these keys.
    `extra` is more TOML (a table such as [jobs]).
    """
    used: set[int] = set()
    nginx_port = free_port(used)
    blocks = "".join(instance_table(free_port(used), i) for i in instances)
    auth = ""
    if keys:
        (folder / "keys").write_text("".join(f"{digest(key)} test-{n}\n" for n, key in enumerate(keys)))
        auth = f"[auth]\nkeys_file = \"{folder / 'keys'}\"\n\n"
    more_model = "".join(f"{key} = {json.dumps(value)}\n" for key, value in (model or {}).items())
    text = (f"[model]\nfamily = \"{family or default_family()}\"\nweights_dir = \"{ROOT / 'weights'}\"\n{more_model}\n"
            f"[limits]\ndeadline_seconds = {deadline_seconds}\nseconds_per_request = {seconds_per_request}\n\n"
            f"[nginx]\nlisten = \"127.0.0.1:{nginx_port}\"\nrate_per_second = {rate[0]}\nrate_burst = {rate[1]}\n\n"
            f"[results]\ndir = \"{folder / 'results'}\"\n\n{auth}{extra}\n{blocks}")
    path = folder / "parse.toml"
    path.write_text(text)
    return settings_mod.load(path)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)

    @property
    def upstream(self) -> str:
        """The instance that answered: the last one tried (X-Upstream lists every one tried)."""
        return self.headers.get("X-Upstream", "").split(",")[-1].strip()


def http(url: str, data: bytes | None = None, content_type: str | None = None, timeout: float = 60,
         headers: dict[str, str] | None = None, method: str | None = None) -> Response:
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={**({"Content-Type": content_type} if content_type else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return Response(r.status, dict(r.headers), r.read())
    except urllib.error.HTTPError as err:
        return Response(err.code, dict(err.headers), err.read())


@dataclass
class Stack:
    cfg: Settings
    run: Path
    layout: deploy.DevLayout = field(init=False)

    def __post_init__(self) -> None:
        self.layout = deploy.DevLayout(self.run)

    @property
    def url(self) -> str:
        return f"http://{self.cfg.nginx.listen}"

    def addr(self, inst: Instance) -> str:
        return f"127.0.0.1:{inst.port}"

    def start(self) -> "Stack":
        deploy.up(self.cfg, self.run)
        return self

    def master_pid(self, inst: Instance) -> int:
        return int(self.layout.pid_file(f"uwsgi-{inst.port}").read_text())

    def stats(self, inst: Instance) -> dict:
        host, port = deploy.stats_address(inst).split(":")
        with socket.create_connection((host, int(port)), timeout=5) as s:
            return json.loads(b"".join(iter(lambda: s.recv(65536), b"")))

    def wait_busy(self, inst: Instance, timeout: float = 30) -> None:
        """Return once a worker of `inst` is serving a request (or after `timeout` seconds), so a
        fault can be injected while work is in flight."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(w["status"] == "busy" for w in self.stats(inst)["workers"]):
                return
            time.sleep(0.02)

    def stats_ports(self) -> list[int]:
        """Every instance's uWSGI stats port, for tests/hostile.py's `workers`."""
        return [int(deploy.stats_address(i).split(":")[1]) for i in self.cfg.instances]

    def worker_pids(self, inst: Instance) -> list[int]:
        return [w["pid"] for w in self.stats(inst)["workers"] if w["pid"]]

    def parse(self, image: bytes, timeout: float = 60) -> Response:
        return http(self.url + "/v1/parse", image, "image/png", timeout)

    def wait_ready(self, inst: Instance, timeout: float = 120) -> None:
        probe.wait_ready([inst.port], timeout)

    def restart_instance(self, inst: Instance) -> None:
        deploy.start_instance(self.layout, inst)
        self.wait_ready(inst)

    def stop(self) -> None:
        """Graceful stop of everything by PID, then SIGKILL to any process group still there."""
        groups = [int(p.read_text()) for p in self.layout.pids.glob("*.pid")] if self.layout.pids.is_dir() else []
        try:
            deploy.stop_all(self.layout, self.cfg)
        finally:
            for pgid in groups:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while any(deploy.pid_alive(p) for p in groups) and time.monotonic() < deadline:
                time.sleep(0.1)
