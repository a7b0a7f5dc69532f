"""Three hosts on one machine (network namespaces): Nginx and the fleet's PostgreSQL on "front",
one instance each on "a" (weight 2) and "b" (weight 1), uwsgi over mutual TLS between them (each
instance's sslrouter gateway in front of its loopback uwsgi socket), all rendered from one
parse.toml the way `python -m service.deploy` renders it for real hosts.

Each instance host is a machine of its own as far as the service can tell: its own hostname (a UTS
namespace), and its own jobs folder, results folder and metrics folder (the declared paths with a
folder of the host's bind-mounted over them, in a mount namespace). So whatever a host kept on its
own disk, another host would not see: jobs, API keys and annotated results must go through the
store. API keys are on (in the store) for the whole module.

Needs root (ip netns add) and PostgreSQL's binaries; skipped with the reason otherwise:
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
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service import settings as settings_mod
from service.ops import certs, deploy, fleet, probe, reload
from service.ops.keys import StoreKeys
from service.settings import ROOT, Host
from service.store.db import Postgres
from tests import netns, pdfs, pg
from tests.stack import Response, default_family, http
from tests.support import multipart, words

pytestmark = pytest.mark.stack

PORT = 6001
# Nginx listens on every address of the front host: the clients' threads use its loopback, the
# coordinators of a and b its network address (service/ops/fleet.py: front_url).
NGINX = "127.0.0.1:8100"
PG_PORT = 5433
HOSTS = {"front": 1, "a": 2, "b": 3}
KEY = "fleet-key-" + "k" * 24
AUTH = {"Authorization": f"Bearer {KEY}"}
LEASE_S = 5  # a lost host's pages are read elsewhere after this
REFRESH_S = 2  # [store] refresh_seconds: the bound on a revocation


def write_fleet_config(folder: Path, net: netns.Net, store: pg.Cluster) -> settings_mod.Settings:
    hosts = "".join(f"[[hosts]]\nname = \"{h}\"\nbind = \"{net.address(h)}\"\n\n" for h in HOSTS)
    text = (f"[model]\nfamily = \"{default_family()}\"\nweights_dir = \"{ROOT / 'weights'}\"\n\n"
            "[limits]\ndeadline_seconds = 20\n\n"
            f"[nginx]\nlisten = \"0.0.0.0:8100\"\nhost = \"front\"\nrate_per_second = 10000\nrate_burst = 10000\n\n"
            f"[store]\nurl = \"{store.url}\"\npassword_file = \"{store.password_file}\"\n"
            f"refresh_seconds = {REFRESH_S}\n\n[auth]\nkeys_in_store = true\n\n"
            f"[jobs]\ndir = \"{folder / 'jobs'}\"\nlease_seconds = {LEASE_S}\nworkers = 2\nmax_running = 1\n"
            "max_waiting = 12\npoll_seconds = 0.2\n\n"
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
        self.pg: pg.Cluster | None = None

    def start(self) -> "Fleet":
        self.net.up()
        # The fleet's PostgreSQL on the front host, reached by every host at its address.
        self.pg = pg.Cluster(self.net.address("front"), PG_PORT, self.net.ns("front")).init()
        self.pg.start()
        cfg = self.cfg = write_fleet_config(self.folder, self.net, self.pg)
        with self.clients(1) as pool:
            pool.submit(self.pg.create_database).result()
            # The module's client key, added the way an operator does (python -m service.keys add).
            pool.submit(self.add_key, KEY).result()
        for d in (cfg.jobs.dir, cfg.results.dir):
            d.mkdir(parents=True, exist_ok=True)  # mount points: each host mounts its own folder here
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

    def add_key(self, key: str) -> None:
        from service.apikeys import digest  # the store keeps digests only, as `service.keys add` does

        keys = StoreKeys(Postgres(self.cfg.store.url, self.cfg.store.password_file, 5))
        with keys.db.tx() as tx:
            tx.run("INSERT INTO api_key (digest, label, created) VALUES (?, 'fleet-test', 0)", (digest(key),))

    def on_host(self, host: str, cmd: list[str]) -> list[str]:
        """`cmd` as it runs on `host`'s machine: its hostname, and its own jobs and results folders
        mounted over the declared paths."""
        own = self.folder / host
        script = 'hostname "$0" && mount --bind "$1" "$2" && mount --bind "$3" "$4" && shift 4 && exec "$@"'
        return ["unshare", "--uts", "--mount", "--propagation", "private", "sh", "-c", script, host,
                str(own / "jobs"), str(self.cfg.jobs.dir), str(own / "results"), str(self.cfg.results.dir), *cmd]

    def start_instance(self, host: str) -> None:
        """Render host's instance the way render_host does (its own metrics and TLS folders)."""
        cfg = self.cfg
        inst = cfg.instance(PORT, host)
        run = self.folder / host
        for d in ("metrics", "control", "jobs", "results"):
            (run / d).mkdir(parents=True, exist_ok=True)
        tls_dir = cfg.tls.dir / "hosts" / host
        env_file = run / "uwsgi" / f"{PORT}.env"
        env_file.parent.mkdir(parents=True, exist_ok=True)
        env_file.write_text(deploy.instance_env(cfg, inst, run / "metrics", run / "control")
                            + fleet.instance_env(cfg, inst, tls_dir, deploy.gateway_timeout_s(cfg)))
        self.groups[host] = self.spawn(host, self.on_host(host, deploy.uwsgi_command()),
                                       run / "log" / f"uwsgi-{PORT}.log", deploy.read_env(env_file))

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
        try:
            for name in list(self.groups):
                self.kill(name)
            if self.pg is not None:
                if (self.pg.folder / "server.log").exists():  # kept with the front's logs
                    (self.folder / "front" / "log").mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(self.pg.folder / "server.log", self.folder / "front" / "log" / "postgresql.log")
                self.pg.remove()
        finally:
            self.net.down()


@pytest.fixture(scope="module")
def fleet_stack(tmp_path_factory):
    why = netns.netns_usable()
    if why:
        pytest.skip(f"needs network namespaces: {why}")
    why = pg.usable()
    if why:
        pytest.skip(f"needs PostgreSQL: {why}")
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
    # One listen queue: b's own instance, not a's on the same port (each series once per scrape).
    assert metrics.body.count(b"\nparse_requests_waiting{") == 1, metrics.body



@pytest.fixture(scope="module")
def photo(render) -> np.ndarray:
    """A phone photo of a page: grey paper with sensor noise, which compresses as badly as a real one."""
    text = render(["INVOICE 2048", "TOTAL 12.50 PAID"], size=48)
    page = np.full((1200, 1600, 3), 236, np.uint8)
    h, w = text.shape[:2]
    page[200:200 + h, 150:150 + w] = np.minimum(page[200:200 + h, 150:150 + w], text)
    noise = np.random.default_rng(7).normal(0, 10, page.shape).round()
    return np.clip(page + noise, 0, 255).astype(np.uint8)


def test_real_uploads_cross_the_tls_gateway(fleet_stack, photo):
    """A photo (JPEG, about 590 KB) and a scan of it (PDF, about 250 KB) through the front Nginx to
    both hosts: each body is many TLS records to the instance's sslrouter gateway, which only the
    patched uWSGI (conf/uwsgi/sslrouter.patch) passes on; unpatched, it dies on the second record."""
    fs = fleet_stack
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", quality=90)
    uploads = [(buf.getvalue(), "image/jpeg"), (pdfs.scanned_pdf([photo]), "application/pdf")]
    assert all(len(body) > 200_000 for body, _ in uploads)
    # Smooth weighted round-robin (2:1): any three requests in a row reach both hosts.
    answers = [call(fs, "POST", "/v1/parse", body, ctype) for body, ctype in uploads * 2]
    for r in answers:
        # One attempt each: a gateway that died would have sent Nginx on to the other host.
        assert r.status == 200 and "," not in r.headers["X-Upstream"], (r.status, r.headers, r.body[:300])
        assert {"invoice", "2048", "total", "12.50", "paid"} <= words(r.json()["images"][0]["text"]), r.body[:500]
    assert {upstream_host(fs, r.upstream) for r in answers} == {"a", "b"}
    for host in ("a", "b"):
        assert b"Segmentation Fault" not in (fs.folder / host / "log" / f"uwsgi-{PORT}.log").read_bytes()

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
        r = http(f"http://{NGINX}/v1/parse", page, "image/png", timeout=60, headers=AUTH)
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


# --- state shared through the store: jobs, keys, annotated results ----------------------------

def call(fs: Fleet, method: str, path: str, body: bytes | None = None, content_type: str | None = None,
         key: str | None = KEY, timeout: float = 60) -> Response:
    """One request through the front Nginx, from the front namespace."""
    headers = {"Authorization": f"Bearer {key}"} if key else None
    with fs.clients(1) as pool:
        return pool.submit(http, f"http://{NGINX}{path}", body, content_type, timeout, headers, method).result()


def report(pages: int) -> bytes:
    """A PDF of `pages` small pages, "Page N of the fleet report", read with OCR (JOB_QUERY).

    Written by reportlab, a few KB."""
    return pdfs.born_digital_pdf([[f"Page {n} of the fleet report", f"Total {n}.50"] for n in range(1, pages + 1)],
                                 size=(360, 144))


# Each page rendered (150 dpi: 750 x 300 px) and read by the model, not taken from the text layer.
JOB_QUERY = "?ocr=force&dpi=150"


def submit(fs: Fleet, pages: int) -> str:
    body, ctype = multipart([("image", "report.pdf", report(pages), "application/pdf")])
    r = call(fs, "POST", "/v1/jobs" + JOB_QUERY, body, ctype)
    assert r.status == 202, r.body
    return r.json()["id"]


def page_names(images: list[dict]) -> list[str]:
    return [i["text"].split(" of ")[0] for i in images]


def wait_job(fs: Fleet, job_id: str, until=lambda j: j["status"] in ("done", "failed", "cancelled"),
             timeout: float = 240) -> dict:
    """The job's status once `until` holds; a 503 (the store away) is waited out like any other."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = call(fs, "GET", f"/v1/jobs/{job_id}")
        if r.status == 200 and until(r.json()):
            return r.json()
        assert r.status in (200, 503), r.body
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached the state wanted: {r.status} {r.body!r}")


def hosts_of(fs: Fleet, entries: list[dict]) -> set[str]:
    return {upstream_host(fs, e["upstream"].split(",")[-1].strip()) for e in entries}


def page_posts(fs: Fleet, entries: list[dict], job_id: str) -> list[dict]:
    """The pages of job `job_id` that the coordinators of a and b posted to the front Nginx."""
    coordinators = {fs.net.address("a"), fs.net.address("b")}
    return [e for e in entries if e["uri"].startswith("/v1/parse?") and e["remote_addr"] in coordinators
            and e["job"] == job_id]


def test_a_job_across_the_fleet(fleet_stack):
    """A 12-page PDF through the front: every page read once, on both hosts, with the internal key
    accepted by each; status, result and cancel answer every time, whichever host takes them."""
    fs = fleet_stack
    offset = fs.access_log.stat().st_size
    job_id = submit(fs, 12)
    # Ten jobs queued behind it ([jobs] max_running = 1), each cancelled through whichever host. The
    # small pages read fast: should the 12 finish before the last cancels, the next job in line runs,
    # and a DELETE that finds it done forgets it ("deleted"), as it must.
    queued = [submit(fs, 1) for _ in range(10)]
    cancels = [call(fs, "DELETE", f"/v1/jobs/{j}") for j in queued]
    said = [(r.status, r.json()["status"]) for r in cancels]
    assert set(said) <= {(200, "cancelled"), (200, "deleted")}, said
    for j, (_, status) in zip(queued, said):
        r = call(fs, "GET", f"/v1/jobs/{j}")
        assert (r.status, r.json()["status"] if r.status == 200 else r.json()["error"]["code"]) == \
            ((200, "cancelled") if status == "cancelled" else (404, "job_not_found")), r.body
    status = wait_job(fs, job_id)
    assert status["status"] == "done" and status["pages_done"] == status["pages_total"] == 12, status
    statuses = [call(fs, "GET", f"/v1/jobs/{job_id}") for _ in range(10)]
    assert [r.status for r in statuses] == [200] * 10 and all(r.json() == status for r in statuses)
    results = [call(fs, "GET", f"/v1/jobs/{job_id}/result") for _ in range(10)]
    assert [r.status for r in results] == [200] * 10
    images = results[0].json()["images"]
    assert [i["page"] for i in images] == list(range(1, 13))
    assert page_names(images) == [f"Page {n}" for n in range(1, 13)], [i["text"] for i in images]
    assert all(r.json()["images"] == images for r in results)
    # Nginx writes a request's log line after its answer has gone, so the last page's line may
    # trail the job's end by a moment on a busy machine.
    deadline = time.monotonic() + 10
    while len(posts := page_posts(fs, log := _log_since(fs, offset), job_id)) < 12 and time.monotonic() < deadline:
        time.sleep(0.2)
    # Every page read once (no page retried), by the workers of both hosts, each post accepted.
    assert sorted(e["status"] for e in posts) == [200] * 12, [(e["status"], e["upstream"]) for e in posts]
    assert hosts_of(fs, posts) == {"a", "b"}
    # The job routes were answered by both hosts.
    assert hosts_of(fs, [e for e in log if e["uri"].startswith("/v1/jobs/")]) == {"a", "b"}
    print(f"\n12-page job: pages read on {sorted(hosts_of(fs, posts))}, posted by coordinators "
          f"{sorted({e['remote_addr'] for e in posts})}")


def test_a_job_survives_losing_a_host(fleet_stack):
    """Every process of b killed while one of its workers reads a page: the job finishes on a,
    each page once, and a job queued behind it is not blocked."""
    fs = fleet_stack
    job_id = submit(fs, 8)
    wait_job(fs, job_id, lambda j: j["pages_done"] >= 1)
    killed: list[float] = []
    _once_busy(fs, "b", lambda: (fs.kill("b"), killed.append(time.monotonic())))()
    behind = submit(fs, 1)
    status = wait_job(fs, job_id)
    finished = time.monotonic()
    assert status["status"] == "done" and status["pages_done"] == 8, status
    images = call(fs, "GET", f"/v1/jobs/{job_id}/result").json()["images"]
    assert page_names(images) == [f"Page {n}" for n in range(1, 9)]
    assert wait_job(fs, behind)["status"] == "done"
    print(f"\nhost b lost mid-job: the job finished {finished - killed[0]:.1f} s later on a "
          f"(lease {LEASE_S} s)")
    fs.start_instance("b")
    with fs.clients(1) as pool:
        pool.submit(probe.wait_ready, [PORT], 300, fs.net.address("b"), fs.tls()).result()
    assert _rejoins(fs, "b", deploy.FAIL_TIMEOUT_S + 15)


def _keys_cli(fs: Fleet, host: str, *args: str) -> subprocess.CompletedProcess:
    """`python -m service.keys ...` run on `host`'s machine, with the fleet's declaration."""
    return subprocess.run(["ip", "netns", "exec", fs.net.ns(host), str(ROOT / ".venv" / "bin" / "python"),
                           "-m", "service.keys", *args], cwd=ROOT, capture_output=True, text=True, check=True,
                          env={**os.environ, "PARSE_CONFIG": str(fs.cfg.path)})


def _six(fs: Fleet, key: str, page: bytes) -> list[Response]:
    """Six parses in a row: with weights 2:1, four reach a and two reach b."""
    return [call(fs, "POST", "/v1/parse", page, "image/png", key=key) for _ in range(6)]


def test_a_revoked_key_is_refused_by_every_host(fleet_stack, page):
    fs = fleet_stack
    offset = fs.access_log.stat().st_size
    new = _keys_cli(fs, "a", "add", "--label", "added-on-a").stdout.strip()
    assert "added-on-a" in _keys_cli(fs, "b", "list").stdout  # one key set, whichever machine asks
    # Works through the front at once (a worker that does not know a key looks again within 1 s).
    first = time.monotonic()
    while (r := call(fs, "POST", "/v1/parse", page, "image/png", key=new)).status == 401:
        assert time.monotonic() - first < 1.5, "a key just added was refused for over 1.5 s"
        time.sleep(0.1)
    assert r.status == 200
    answers = _six(fs, new, page)
    assert [r.status for r in answers] == [200] * 6 and {upstream_host(fs, r.upstream) for r in answers} <= {"a", "b"}
    _keys_cli(fs, "b", "revoke", "added-on-a")
    time.sleep(REFRESH_S + 0.5)  # the documented bound: [store] refresh_seconds
    refused = _six(fs, new, page)
    assert [r.status for r in refused] == [401] * 6, [r.body for r in refused]
    log = _log_since(fs, offset)
    late = [e for e in log if e["status"] == 401][-6:]
    assert hosts_of(fs, late) == {"a", "b"}  # refused by every host
    assert [r.status for r in _six(fs, KEY, page)] == [200] * 6  # the other key is untouched
    print(f"\nrevoked key: 6 requests from {REFRESH_S + 0.5:.1f} s after the revocation (bound {REFRESH_S} s) "
          f"all refused, by a and b")


def test_annotate_links_resolve_for_every_host(fleet_stack, page):
    fs = fleet_stack
    offset = fs.access_log.stat().st_size
    answers = [call(fs, "POST", "/v1/parse?annotate=1", page, "image/png") for _ in range(6)]
    assert [r.status for r in answers] == [200] * 6
    assert hosts_of(fs, _log_since(fs, offset)) == {"a", "b"}  # drawn by the workers of both hosts
    for r in answers:
        url = r.json()["images"][0]["annotated_url"]
        for _ in range(3):  # fetched through the front, from whichever host Nginx picks
            got = call(fs, "GET", url, key=None)
            assert got.status == 200 and got.headers["Content-Type"] == "image/png", got.body[:200]
            assert got.body.startswith(b"\x89PNG\r\n\x1a\n")
    # Nothing went to any host's own results folder.
    assert not [p for h in ("a", "b") for p in (fs.folder / h / "results").iterdir()]
    assert call(fs, "GET", "/results/" + "x" * 22 + ".png", key=None).status == 404


def test_max_running_is_fleet_wide(fleet_stack):
    """[jobs] max_running = 1 over two hosts' coordinators: one job runs at a time. Polling two
    jobs takes two requests, so the proof is in the stamps the store keeps: each job started only
    after the other finished."""
    fs = fleet_stack
    jobs = [submit(fs, 3) for _ in range(2)]
    done = [wait_job(fs, j) for j in jobs]
    assert [d["status"] for d in done] == ["done", "done"], done
    spans = sorted((_when(d["started"]), _when(d["finished"])) for d in done)
    assert spans[0][0] < spans[0][1] <= spans[1][0] < spans[1][1], done


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_store_outage(fleet_stack, page):
    """PostgreSQL stopped for 10 s mid-job: parses go on with the keys each worker read last, job
    routes answer 503 with Retry-After (passed through by Nginx, which must not count them against
    the hosts), and the job finishes once the store is back."""
    fs = fleet_stack
    assert [r.status for r in _six(fs, KEY, page)] == [200] * 6  # every worker has read the key set
    job_id = submit(fs, 6)
    wait_job(fs, job_id, lambda j: j["pages_done"] >= 1)
    fs.pg.stop()
    stopped = time.monotonic()
    try:
        parses = _six(fs, KEY, page)
        routes = [call(fs, "GET", f"/v1/jobs/{job_id}") for _ in range(3)]
        body, ctype = multipart([("image", "p.png", page, "image/png")])
        submitted = call(fs, "POST", "/v1/jobs", body, ctype)
        scrape = call(fs, "GET", fleet.metrics_path("a"), key=None)  # each worker's own metrics still
        drawn = call(fs, "POST", "/v1/parse?annotate=1", page, "image/png")  # read; its PNG has nowhere to go
        time.sleep(max(0.0, 10 - (time.monotonic() - stopped)))
    finally:
        fs.pg.start()
    assert [r.status for r in parses] == [200] * 6, [r.body for r in parses]
    assert scrape.status == 200 and b"parse_requests_total" in scrape.body
    assert drawn.status == 200 and drawn.json()["images"][0]["annotated_url"] is None
    for r in [*routes, submitted]:
        assert r.status == 503 and r.json()["error"]["code"] == "store_unavailable", r.body
        assert int(r.headers["Retry-After"]) > 0
    status = wait_job(fs, job_id)
    assert status["status"] == "done" and status["pages_done"] == 6, status
    images = call(fs, "GET", f"/v1/jobs/{job_id}/result").json()["images"]
    assert page_names(images) == [f"Page {n}" for n in range(1, 7)]
