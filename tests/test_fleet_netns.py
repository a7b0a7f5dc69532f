"""Three hosts on one machine (network namespaces): Nginx on "front", one instance each on "a"
(weight 2) and "b" (weight 1), uwsgi over mutual TLS between them (each instance's sslrouter
gateway in front of its loopback uwsgi socket), all rendered from one parse.toml the way
`python -m service.deploy` renders it for real hosts.

Needs root (ip netns add); skipped with the reason otherwise:
    .venv/bin/python -m pytest -q -x tests/test_fleet_netns.py -s
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import wait
from pathlib import Path

import pytest
from PIL import Image

from service import settings as settings_mod
from service.ops import certs, deploy, fleet, probe, reload
from service.settings import ROOT, Host
from tests import netns
from tests.stack import default_family, http

pytestmark = pytest.mark.stack

PORT = 6001
NGINX = "127.0.0.1:8100"  # loopback of the front namespace: the clients' threads live there
HOSTS = {"front": 1, "a": 2, "b": 3}


def write_fleet_config(folder: Path, net: netns.Net) -> settings_mod.Settings:
    hosts = "".join(f"[[hosts]]\nname = \"{h}\"\nbind = \"{net.address(h)}\"\n\n" for h in HOSTS)
    text = (f"[model]\nfamily = \"{default_family()}\"\nweights_dir = \"{ROOT / 'weights'}\"\n\n"
            "[limits]\ndeadline_seconds = 20\n\n"
            f"[nginx]\nlisten = \"{NGINX}\"\nhost = \"front\"\nrate_per_second = 10000\nrate_burst = 10000\n\n"
            f"[results]\ndir = \"{folder / 'results'}\"\n\n[tls]\ndir = \"{folder / 'pki'}\"\n\n{hosts}"
            # The same port on both hosts, as a real fleet would have it.
            f"[[instances]]\nport = {PORT}\nhost = \"a\"\nweight = 2\n\n"
            f"[[instances]]\nport = {PORT}\nhost = \"b\"\nweight = 1\n")
    (folder / "parse.toml").write_text(text)
    return settings_mod.load(folder / "parse.toml")


class Fleet:
    def __init__(self, folder: Path):
        self.folder = folder
        self.net = netns.Net(dict(HOSTS))
        self.groups: dict[str, int] = {}
        self.cfg: settings_mod.Settings | None = None

    def start(self) -> "Fleet":
        self.net.up()
        cfg = self.cfg = write_fleet_config(self.folder, self.net)
        certs.issue_all(cfg)
        # Nginx's side: the dev renderer with the front host's certificate in run/tls.
        front = self.folder / "front"
        layout = deploy.render_dev(cfg, front)
        shutil.copytree(cfg.tls.dir / "hosts" / "front", front / "tls")
        self.net.sysctl("front", fleet.FRONT_SYSCTL)
        for inst in cfg.instances:
            self.start_instance(inst.host)
        self.groups["nginx"] = self.spawn("front", deploy.nginx_command(layout), front / "log" / "nginx.log")
        with self.clients(2) as pool:
            for inst in cfg.instances:
                pool.submit(probe.wait_ready, [PORT], 300, self.net.address(inst.host), self.tls()).result()
        return self

    def tls(self, host: str = "front") -> ssl.SSLContext:
        return fleet.client_context(self.cfg.tls.dir / "hosts" / host)

    def spawn(self, host: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> int:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", self.net.ns(host), *cmd], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
                                    cwd=ROOT, start_new_session=True)
        return proc.pid

    def start_instance(self, host: str) -> None:
        """Render host's instance the way render_host does (its own metrics and TLS folders)."""
        cfg = self.cfg
        inst = cfg.instance(PORT, host)
        run = self.folder / host
        for d in ("metrics", "control"):
            (run / d).mkdir(parents=True, exist_ok=True)
        tls_dir = cfg.tls.dir / "hosts" / host
        env_file = run / "uwsgi" / f"{PORT}.env"
        env_file.parent.mkdir(parents=True, exist_ok=True)
        env_file.write_text(deploy.instance_env(cfg, inst, run / "metrics", run / "control")
                            + fleet.instance_env(cfg, inst, tls_dir, deploy.gateway_timeout_s(cfg)))
        self.groups[host] = self.spawn(host, deploy.uwsgi_command(), run / "log" / f"uwsgi-{PORT}.log",
                                       deploy.read_env(env_file))

    def kill(self, name: str) -> None:
        pgid = self.groups.pop(name, None)
        if pgid is None:
            return
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while deploy.pid_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def clients(self, n: int, host: str = "front"):
        return netns.pool(self.net.ns(host), n)

    @property
    def access_log(self) -> Path:
        return self.folder / "front" / "log" / "access.json"

    def stop(self) -> None:
        for name in list(self.groups):
            self.kill(name)
        self.net.down()


@pytest.fixture(scope="module")
def fleet_stack(tmp_path_factory):
    why = netns.netns_usable()
    if why:
        pytest.skip(f"needs network namespaces: {why}")
    stack = Fleet(tmp_path_factory.mktemp("fleet"))
    try:
        yield stack.start()
    finally:
        stack.stop()
        logs = ROOT / "run" / "test-logs" / f"fleet-{stack.folder.name}"
        for host in HOSTS:
            if (stack.folder / host / "log").is_dir():
                shutil.copytree(stack.folder / host / "log", logs / host, dirs_exist_ok=True)


@pytest.fixture(scope="module")
def page(render) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(render(["TOTAL 12.50", "THANK YOU"])).save(buf, "PNG")
    return buf.getvalue()


def upstream_host(fs: Fleet, addr: str) -> str:
    return {f"{fs.net.address(h)}:{PORT}": h for h in ("a", "b")}.get(addr, addr)


def test_requests_spread_by_weight(fleet_stack):
    with fleet_stack.clients(1) as pool:
        answers = pool.submit(lambda: [http(f"http://{NGINX}/healthz") for _ in range(30)]).result()
        metrics = pool.submit(http, f"http://{NGINX}{fleet.metrics_path('b')}").result()
    assert all(r.status == 200 for r in answers)
    hosts = [upstream_host(fleet_stack, r.upstream) for r in answers]
    # Smooth weighted round-robin: exactly 2 to a for each 1 to b.
    assert (hosts.count("a"), hosts.count("b")) == (20, 10)
    # One host's metrics through Nginx, over the same TLS.
    assert metrics.status == 200 and b"parse_worker_ready" in metrics.body


def _refused(fs: Fleet, tls: ssl.SSLContext | None) -> str:
    """Why host a's instance refused a /readyz, asked from the front namespace ("" if it answered)."""
    def ask() -> str:
        try:
            probe.request(PORT, "/readyz", fs.net.address("a"), timeout=5, tls=tls)
        except (OSError, ssl.SSLError) as exc:
            return repr(exc)
        return ""
    with fs.clients(1) as pool:
        return pool.submit(ask).result()


def test_mutual_tls_refuses_plain_uncertified_and_foreign_clients(fleet_stack, tmp_path):
    assert _refused(fleet_stack, fleet_stack.tls()) == ""  # the fleet's own certificate is let in
    assert _refused(fleet_stack, None)  # plain uwsgi: the handshake it skipped is missing, reset
    no_cert = ssl.create_default_context(cafile=str(fleet_stack.cfg.tls.dir / "hosts" / "a" / fleet.CA_FILE))
    assert _refused(fleet_stack, no_cert)  # TLS without a client certificate
    # A certificate for the same names from another CA.
    other = certs.new_ca(tmp_path / "other-ca")
    certs.issue_host(other, Host("front", bind=fleet_stack.net.address("front")), False, tmp_path / "other")
    shutil.copyfile(fleet_stack.cfg.tls.dir / "hosts" / "front" / fleet.CA_FILE, tmp_path / "other" / fleet.CA_FILE)
    assert _refused(fleet_stack, fleet.client_context(tmp_path / "other"))


def test_uwsgi_socket_listens_on_loopback_only(fleet_stack):
    """The uwsgi socket (no authentication; magic variables) is on 127.0.0.1 of its host, where the
    probe, the reload and the stats server reach it; the host's address has only the TLS gateway."""
    fs = fleet_stack
    inst = fs.cfg.instance(PORT, "a")
    listening = subprocess.run(["ip", "netns", "exec", fs.net.ns("a"), "ss", "-H", "-l", "-t", "-n"],
                               check=True, capture_output=True, text=True).stdout
    local = {line.split()[3] for line in listening.splitlines()}
    assert {addr for addr in local if not addr.startswith("127.")} == {f"{fs.net.address('a')}:{PORT}"}
    assert f"127.0.0.1:{PORT}" in local
    with fs.clients(1, "a") as pool:
        status, _ = pool.submit(probe.request, PORT, "/readyz").result()
        ready = pool.submit(reload.instance_ready, inst).result()
        sockets = pool.submit(reload.stats, deploy.stats_address(inst)).result()["sockets"]
    assert status == 200 and ready
    # What the stats server (and so parse_requests_waiting) counts is the loopback socket's queue.
    assert [s["name"] for s in sockets] == [f"127.0.0.1:{PORT}"]
    # A plain request to the host's address meets the gateway's TLS: test_mutual_tls_... below.


def _burst(fs: Fleet, page: bytes, n: int, during) -> list:
    """n parses, 4 at a time, from the front namespace; `during()` runs once the first are in flight."""
    def one() -> tuple[int, float, str]:
        t0 = time.monotonic()
        r = http(f"http://{NGINX}/v1/parse", page, "image/png", timeout=60)
        return r.status, time.monotonic() - t0, r.headers.get("X-Upstream", "")
    with fs.clients(4) as pool:
        futures = [pool.submit(one) for _ in range(n)]
        time.sleep(1.0)
        during()
        wait(futures)
    return [f.result() for f in futures]


def _once_busy(fs: Fleet, host: str, action: Callable[[], None]) -> Callable[[], None]:
    """`action`, run once a worker of `host` is in the middle of a request (its stats server says
    so), so that the failure catches a request in flight, not only new connections."""
    address = deploy.stats_address(fs.cfg.instance(PORT, host))

    def run() -> None:
        deadline = time.monotonic() + 10
        with fs.clients(1, host) as pool:
            while not any(w["status"] == "busy" for w in pool.submit(reload.stats, address).result()["workers"]):
                assert time.monotonic() < deadline, f"no worker of {host} became busy within 10 s"
                time.sleep(0.02)
        action()
    return run


def _report(label: str, results: list, log: list[dict]) -> None:
    """Print what the failure cost: each request's time beyond the burst's median (p99 and max),
    and for each request retried on another host, the time its attempts took (Nginx's log)."""
    times = sorted(t for _, t, _ in results)
    median = statistics.median(times)
    p99 = statistics.quantiles(times, n=100, method="inclusive")[98]
    retried = [(e["upstream"], e["upstream_response_time"]) for e in log if "," in e["upstream"]]
    print(f"\n{label}: {len(results)} requests, statuses {sorted({s for s, _, _ in results})}, "
          f"median {median:.2f} s, p99 {p99:.2f} s (+{p99 - median:.2f} s), "
          f"max {times[-1]:.2f} s (+{times[-1] - median:.2f} s); retried on another host: {len(retried)}")
    for upstreams, attempt_times in retried:
        print(f"  tried {upstreams}: attempts took {attempt_times} s")


def _log_since(fs: Fleet, offset: int) -> list[dict]:
    with open(fs.access_log, "rb") as f:
        f.seek(offset)
        return [json.loads(line) for line in f.read().splitlines() if line.strip()]


def _rejoins(fs: Fleet, host: str, within: float) -> bool:
    """True once `host` answers requests through Nginx again, with nobody doing anything."""
    deadline = time.monotonic() + within
    with fs.clients(1) as pool:
        while time.monotonic() < deadline:
            r = pool.submit(http, f"http://{NGINX}/healthz").result()
            assert r.status == 200
            if upstream_host(fs, r.upstream) == host:
                return True
            time.sleep(0.2)
    return False


def test_pulling_a_hosts_link_loses_no_request(fleet_stack, page):
    offset = fleet_stack.access_log.stat().st_size
    results = _burst(fleet_stack, page, 24, _once_busy(fleet_stack, "b", lambda: fleet_stack.net.link("b", "down")))
    _report("link of b pulled mid-burst", results, _log_since(fleet_stack, offset))
    assert [s for s, _, _ in results] == [200] * 24
    fleet_stack.net.link("b", "up")
    # Nginx tries b again after fail_timeout; it answers, with no restart or reload anywhere.
    assert _rejoins(fleet_stack, "b", deploy.FAIL_TIMEOUT_S + 15)


def test_killing_a_hosts_processes_loses_no_request(fleet_stack, page):
    offset = fleet_stack.access_log.stat().st_size
    results = _burst(fleet_stack, page, 24, _once_busy(fleet_stack, "b", lambda: fleet_stack.kill("b")))
    _report("every process of b killed mid-burst", results, _log_since(fleet_stack, offset))
    assert [s for s, _, _ in results] == [200] * 24
    # systemd's Restart=always brings the instance back; here the test does what it would.
    fleet_stack.start_instance("b")
    with fleet_stack.clients(1) as pool:
        pool.submit(probe.wait_ready, [PORT], 300, fleet_stack.net.address("b"), fleet_stack.tls()).result()
    assert _rejoins(fleet_stack, "b", deploy.FAIL_TIMEOUT_S + 15)
