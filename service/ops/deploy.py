"""Render conf/parse.toml into what uWSGI, Nginx and systemd read, and run the dev stack.

    python -m service.deploy render [--run-dir DIR]   the dev stack's files under run/
    python -m service.deploy render --host [--destdir D]   a real host's files (sudo make install)
    python -m service.deploy up | down | status        make run / make stop / make status
                                                       (up on a running stack: a rolling reload)
    python -m service.deploy ports                     the declared instance ports, one a line
    python -m service.deploy check                     refuse a declaration that would start but not work

The declaration (conf/parse.toml) names the instances and limits once. The values derived from
it, and the rule for each, live here and nowhere else:
  - each instance's environment file (PARSE_PORT, processes, listen queue, harakiri, stats
    address, metrics folder, master FIFO), read by conf/uwsgi/parse.ini through $(VAR) and by the systemd unit
    through EnvironmentFile=;
  - Nginx fragments included by conf/nginx/parse.conf: the upstream with the weights and the
    admission (max_conns, from the deadline and the time per request), the listen address, client_max_body_size, timeouts and the rate limit;
  - a drop-in for systemd/parse@.service with the stop timeout.
The files that include them (ini, site, unit) are real, commented files in the repository.
"""

from __future__ import annotations

import argparse
import grp
import ipaddress
import math
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from .. import settings as settings_mod
from ..settings import ROOT, Instance, Settings
from . import fleet, probe

# Nginx marks an instance down for FAIL_TIMEOUT after MAX_FAILS failed attempts within it, then
# tries it again: a crashed or restarting instance costs at most two retried requests per 5 s.
MAX_FAILS = 2
FAIL_TIMEOUT_S = 5
# Linux caps a listen queue at net.core.somaxconn (4096 since 5.4); uWSGI refuses to start above it.
SOMAXCONN = Path("/proc/sys/net/core/somaxconn")
STATS_OFFSET = settings_mod.STATS_OFFSET
# Seconds given to a starting instance to load and warm its models.
START_TIMEOUT_S = 300

# Where a real host keeps things (sudo make install); the unit file names the same paths.
HOST_ETC = Path("/etc/parse")
HOST_NGINX = Path("/etc/nginx")
HOST_METRICS = Path("/run/parse/metrics")
HOST_CONTROL = Path("/run/parse/control")
HOST_LOG = Path("/var/log/nginx")
HOST_SYSTEMD = Path("/etc/systemd/system")


def harakiri_s(cfg: Settings) -> int:
    """uWSGI kills a request's worker this long after it started: above the app's deadline."""
    return math.ceil(cfg.limits.deadline_seconds) + 10


def nginx_read_timeout_s(cfg: Settings) -> int:
    """Nginx waits this long for an answer: above harakiri, so a stuck worker is killed and
    reported by uWSGI before Nginx gives up on it."""
    return harakiri_s(cfg) + 10


def gateway_timeout_s(cfg: Settings) -> int:
    """The TLS gateway of an instance beyond loopback (fleet.py) drops a connection idle this long.
    A request's connection is idle while a worker computes, so this stays above Nginx's read
    timeout: Nginx, which can retry elsewhere and answer JSON, is the one that gives up."""
    return nginx_read_timeout_s(cfg) + 10


def stop_timeout_s(cfg: Settings) -> int:
    """A graceful stop waits for in-flight requests, which harakiri bounds; then the kill."""
    return harakiri_s(cfg) + 20


def stats_address(inst: Instance) -> str:
    return inst.stats_address


def admitted(cfg: Settings, inst: Instance) -> int:
    """Requests an instance may hold at once, in flight and waiting: what its workers finish within
    the deadline at the measured time per request (the uWSGI docs' listen ~ workers x SLO / latency).
    One more would wait past its deadline, so Nginx refuses it at once instead (max_conns)."""
    per_slot = max(1, math.floor(cfg.limits.deadline_seconds / cfg.limits.seconds_per_request))
    return inst.processes * inst.batch_pages * per_slot


def somaxconn() -> int:
    try:
        return int(SOMAXCONN.read_text())
    except (OSError, ValueError):
        return 4096


def listen_queue(cfg: Settings, inst: Instance) -> int:
    """The listen queue holds what is admitted beyond one request per worker thread (at least 1)."""
    return max(1, admitted(cfg, inst) - inst.processes * inst.batch_pages)


def check(cfg: Settings) -> None:
    """Refuse declarations that would start but not work."""
    if not cfg.instances:
        raise ValueError(f"{cfg.path}: declare at least one [[instances]]")
    for host in {i.host for i in cfg.instances}:
        insts = fleet.host_instances(cfg, host)
        ports = {i.port for i in insts} | {i.port + STATS_OFFSET for i in insts}
        if len(ports) != 2 * len(insts):
            raise ValueError(f"{cfg.path}: instance ports collide with stats ports (port + {STATS_OFFSET})")
    fleet.check(cfg)
    for inst in cfg.instances:
        if inst.weight < 1 or inst.processes < 1 or inst.threads < 1 or inst.batch_pages < 1:
            raise ValueError(f"{cfg.path}: instance {inst.port} needs weight, processes, threads and batch_pages >= 1")
        if not 0 <= inst.batch_wait_ms <= 1000:
            raise ValueError(f"{cfg.path}: instance {inst.port}: batch_wait_ms must be within 0..1000")
        if listen_queue(cfg, inst) > somaxconn():
            raise ValueError(f"{cfg.path}: instance {inst.port} would admit {admitted(cfg, inst)} requests; its listen "
                             f"queue exceeds net.core.somaxconn ({somaxconn()}): raise seconds_per_request or "
                             "lower deadline_seconds, or raise the sysctl")


def instance_env(cfg: Settings, inst: Instance, metrics_dir: Path, fifo_dir: Path) -> str:
    values = {
        "PARSE_CONFIG": cfg.path,
        "PARSE_PORT": inst.port,
        "PARSE_PROCESSES": inst.processes,
        "PARSE_THREADS": inst.threads,
        "PARSE_REQUEST_THREADS": inst.batch_pages,
        "UWSGI_LISTEN": listen_queue(cfg, inst),  # conf/uwsgi/parse.ini says why not $(VAR)
        "PARSE_HARAKIRI": harakiri_s(cfg),
        "PARSE_WORKER_MEMORY_MIB": cfg.limits.worker_memory_mib,
        "PARSE_STATS": stats_address(inst),
        "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
        "PARSE_MASTER_FIFO": fifo_path(fifo_dir, inst),
    }
    head = f"# Rendered from {cfg.path} by python -m service.deploy; edit that file, not this one.\n"
    return head + "".join(f"{k}={v}\n" for k, v in values.items())


def fifo_path(fifo_dir: Path, inst: Instance) -> Path:
    """The instance master's command FIFO: `c` written to it starts a chain reload (service/ops/reload.py)."""
    return fifo_dir / f"{inst.port}.fifo"


def max_conns(cfg: Settings, inst: Instance) -> int:
    """What Nginx sends an instance at once: what the deadline admits (`admitted`), which is a
    request per worker thread plus its full listen queue. So a connect never waits on a full kernel queue
    (Linux drops the SYN and the client hangs); with every instance full, Nginx fails over at once
    to "no live upstreams", answered as a 503 JSON with Retry-After in about a millisecond."""
    return inst.processes * inst.batch_pages + listen_queue(cfg, inst)


def nginx_http(cfg: Settings) -> str:
    servers = "".join(f"    server {fleet.server_address(cfg, i)} weight={i.weight} max_fails={MAX_FAILS} "
                      f"fail_timeout={FAIL_TIMEOUT_S}s max_conns={max_conns(cfg, i)};\n" for i in cfg.instances)
    return (f"# Rendered from {cfg.path} by python -m service.deploy; edit that file, not this one.\n"
            # The zone (shared memory) makes max_conns one count across all Nginx worker processes.
            f"upstream parse_instances {{\n    zone parse_instances 64k;\n{servers}}}\n"
            f"limit_req_zone $binary_remote_addr zone=parse_per_client:10m rate={cfg.nginx.rate_per_second}r/s;\n"
            f"limit_req_zone $http_authorization zone=parse_per_key:10m rate={cfg.nginx.rate_per_second}r/s;\n"
            f"{fleet.nginx_metrics_upstreams(cfg)}")


def nginx_server(cfg: Settings, access_log: Path) -> str:
    read = nginx_read_timeout_s(cfg)
    return (f"# Rendered from {cfg.path} by python -m service.deploy; edit that file, not this one.\n"
            f"listen {cfg.nginx.listen};\n"
            f"client_max_body_size {cfg.limits.max_body_bytes};\n"
            f"set $parse_max_body_bytes {cfg.limits.max_body_bytes};\n"
            # Where the try-it page and the ?annotate=1 result files are (conf/nginx/parse.conf).
            f"set $parse_static_dir \"{ROOT / 'service' / 'web' / 'static'}\";\n"
            f"set $parse_results_dir \"{cfg.results.dir}\";\n"
            f"uwsgi_read_timeout {read}s;\n"
            f"uwsgi_next_upstream_timeout {read}s;\n"
            f"access_log {access_log} parse_json;\n")


def nginx_limit_req(cfg: Settings) -> str:
    # Each key has the rate too (requests without the header are not counted by that zone), so one
    # key spread over many addresses is still limited. It is there with keys off as well: keys turn
    # on without a reload (service/web/live.py), and Nginx's files must not depend on them.
    return (f"# Rendered from {cfg.path} by python -m service.deploy; edit that file, not this one.\n"
            f"limit_req zone=parse_per_client burst={cfg.nginx.rate_burst} nodelay;\n"
            f"limit_req zone=parse_per_key burst={cfg.nginx.rate_burst} nodelay;\n")


def nginx_jobs(cfg: Settings) -> str:
    return (f"# Rendered from {cfg.path} by python -m service.deploy; edit that file, not this one.\n"
            f"client_max_body_size {cfg.jobs.max_bytes};\n"
            f"set $parse_max_body_bytes {cfg.jobs.max_bytes};\n")


def systemd_dropin(cfg: Settings) -> str:
    return (f"# Rendered from {cfg.path} by python -m service.deploy; edit that file, not this one.\n"
            f"[Service]\n"
            f"# In-flight requests finish (harakiri {harakiri_s(cfg)} s bounds them), then the kill.\n"
            f"TimeoutStopSec={stop_timeout_s(cfg)}\n"
            # ProtectSystem=strict leaves only these writable: ?annotate=1's result PNGs, and the
            # job store (SQLite, uploads, page results).
            f"ReadWritePaths={cfg.results.dir} {cfg.jobs.dir}\n"
            + "".join(f"# The store, PostgreSQL at {cfg.store.url}.\nIPAddressAllow={a}\n"
                      for a in store_addresses(cfg)))


def store_addresses(cfg: Settings) -> list[str]:
    """The addresses of the store's server, for the units' IP allow-list (none for SQLite)."""
    if not cfg.store.url:
        return []
    host = urllib.parse.urlsplit(cfg.store.url).hostname or "127.0.0.1"
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)})
    except OSError as err:
        raise ValueError(f"{cfg.path}: [store] url names host {host!r}, which does not resolve here ({err})") from err


@dataclass(frozen=True)
class DevLayout:
    """Where the dev stack (make run, tests) keeps its files: everything under one run folder."""

    run: Path

    @property
    def env_dir(self) -> Path:
        return self.run / "uwsgi"

    @property
    def nginx_dir(self) -> Path:
        return self.run / "nginx"

    @property
    def metrics(self) -> Path:
        return self.run / "metrics"

    @property
    def control(self) -> Path:
        return self.run / "control"

    @property
    def logs(self) -> Path:
        return self.run / "log"

    @property
    def pids(self) -> Path:
        return self.run / "pid"

    def env_file(self, inst: Instance) -> Path:
        return self.env_dir / f"{inst.port}.env"

    def pid_file(self, name: str) -> Path:
        return self.pids / f"{name}.pid"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _nginx_user() -> str:
    """Nginx workers run as the repository's owner when started as root, so they read its files."""
    st = ROOT.stat()
    return f"user {pwd.getpwuid(st.st_uid).pw_name} {grp.getgrgid(st.st_gid).gr_name};\n"


def nginx_main_dev(layout: DevLayout) -> str:
    """A minimal nginx.conf for the dev stack around the site file (a host uses its own)."""
    tmp = layout.nginx_dir / "tmp"
    temp_paths = "".join(f"    {kind}_temp_path {tmp / kind};\n" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return ("# Rendered by python -m service.deploy for the dev stack (make run, tests).\n"
            "# Foreground: the launcher keeps the master's PID and stops it by that PID.\n"
            "daemon off;\n"
            + (_nginx_user() if os.geteuid() == 0 else "")
            + "# One worker: a loopback stack on a small machine; the CPU belongs to the models.\n"
            "worker_processes 1;\n"
            f"pid {layout.nginx_dir / 'nginx.pid'};\n"
            f"error_log {layout.logs / 'nginx.error.log'} warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            f"{temp_paths}"
            f"    include {ROOT / 'conf' / 'nginx' / 'parse.conf'};\n"
            "}\n")


def render_dev(cfg: Settings, run: Path) -> DevLayout:
    """Write the dev stack's files under `run`; relative includes resolve against run/nginx/."""
    check(cfg)
    layout = DevLayout(run.resolve())
    for inst in cfg.instances:
        _write(layout.env_file(inst), instance_env(cfg, inst, layout.metrics, layout.control))
    parse_dir = layout.nginx_dir / "parse"
    _write(parse_dir / "http.conf", nginx_http(cfg))
    _write(parse_dir / "server.conf", nginx_server(cfg, layout.logs / "access.json"))
    _write(parse_dir / "limit_req.conf", nginx_limit_req(cfg))
    _write(parse_dir / "jobs.conf", nginx_jobs(cfg))
    _write(parse_dir / "pass.conf", fleet.nginx_pass(cfg))
    _write(parse_dir / "tls.conf", fleet.nginx_tls(cfg, layout.run / "tls"))
    _write(parse_dir / "metrics.conf", fleet.nginx_metrics(cfg))
    _write(parse_dir / "results.conf", fleet.nginx_results(cfg))
    shutil.copyfile(HOST_NGINX / "uwsgi_params", layout.nginx_dir / "uwsgi_params")
    _write(layout.nginx_dir / "nginx.conf", nginx_main_dev(layout))
    for d in (layout.logs, layout.pids, layout.metrics, layout.control, *(layout.nginx_dir / "tmp" / k for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))):
        d.mkdir(parents=True, exist_ok=True)
    return layout


def render_host(cfg: Settings, destdir: Path = Path("/"), host: str = settings_mod.LOCAL_HOST) -> list[Path]:
    """Write the rendered files of the machine that is [[hosts]] `host` under `destdir` (/ for
    sudo make install): its own instances, and the Nginx site when it is the front host."""
    check(cfg)

    def at(path: Path) -> Path:
        return destdir / path.relative_to("/")

    me = cfg.host(host)
    files = {
        **{at(HOST_ETC / "instances" / f"{i.port}.env"):
           instance_env(cfg, i, HOST_METRICS, HOST_CONTROL)
           + fleet.instance_env(cfg, i, fleet.HOST_TLS, gateway_timeout_s(cfg))
           for i in fleet.host_instances(cfg, host)},
        at(HOST_SYSTEMD / "parse@.service.d" / "parse-toml.conf"): systemd_dropin(cfg),
    }
    if not me.loopback:
        files[at(HOST_SYSTEMD / "parse@.service.d" / "fleet.conf")] = fleet.systemd_dropin(cfg, me)
    if host == cfg.nginx.host:
        nginx = at(HOST_NGINX / "parse")
        files |= {
            nginx / "http.conf": nginx_http(cfg),
            nginx / "server.conf": nginx_server(cfg, HOST_LOG / "parse.access.json"),
            nginx / "limit_req.conf": nginx_limit_req(cfg),
            nginx / "jobs.conf": nginx_jobs(cfg),
            nginx / "pass.conf": fleet.nginx_pass(cfg),
            nginx / "tls.conf": fleet.nginx_tls(cfg, fleet.HOST_TLS),
            nginx / "metrics.conf": fleet.nginx_metrics(cfg),
            nginx / "results.conf": fleet.nginx_results(cfg),
        }
        if fleet.uses_tls(cfg):
            files[at(Path("/etc/sysctl.d/60-parse.conf"))] = fleet.sysctl_conf(cfg)
    for path, text in files.items():
        _write(path, text)
    # Instances no longer declared lose their environment file (make install disables their units).
    for old in at(HOST_ETC / "instances").glob("*.env"):
        if old not in files:
            old.unlink()
    return sorted(files)


def render_fleet(cfg: Settings, out: Path) -> dict[str, list[Path]]:
    """Every host's files, each under out/NAME/ as they lie under / there, and the Prometheus
    scrape configuration: what to review (or ship) before `sudo make install` on each host."""
    rendered = {h.name: render_host(cfg, out / h.name, h.name) for h in cfg.hosts}
    _write(out / "prometheus.yml", fleet.prometheus(cfg))
    return rendered


# --- the dev stack: start, stop and ask every process by its PID --------------------------------

def uwsgi_command() -> list[str]:
    """The command line every instance runs, the same one systemd/parse@.service holds."""
    return [str(ROOT / ".venv" / "bin" / "uwsgi"), "--ini", str(ROOT / "conf" / "uwsgi" / "parse.ini")]


def nginx_command(layout: DevLayout) -> list[str]:
    # /usr/sbin is not on every user's PATH; -e: the error log before the config is read.
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    return [binary, "-p", str(layout.nginx_dir), "-c", str(layout.nginx_dir / "nginx.conf"),
            "-e", str(layout.logs / "nginx.error.log")]


def read_env(path: Path) -> dict[str, str]:
    lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
    return dict(ln.split("=", 1) for ln in lines)


def _spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Start a process in its own session, output to `log`; returns its PID (it outlives us)."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, cwd=ROOT, start_new_session=True)
    return proc.pid


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (our own child not yet reaped) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def start_instance(layout: DevLayout, inst: Instance) -> int:
    pid = _spawn(uwsgi_command(), layout.logs / f"uwsgi-{inst.port}.log", read_env(layout.env_file(inst)))
    layout.pid_file(f"uwsgi-{inst.port}").write_text(f"{pid}\n")
    return pid


def start_nginx(layout: DevLayout) -> int:
    subprocess.run([*nginx_command(layout), "-t", "-q"], check=True, cwd=ROOT)
    pid = _spawn(nginx_command(layout), layout.logs / "nginx.log")
    layout.pid_file("nginx").write_text(f"{pid}\n")
    return pid


def stop_pid(pid: int, sig: signal.Signals, timeout: float) -> bool:
    """Send `sig` (the graceful one) and wait; after `timeout`, kill the process group. True if graceful."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)  # each process was started as its own session/group leader
    except ProcessLookupError:
        pass
    return False


def stop_all(layout: DevLayout, cfg: Settings) -> None:
    """Nginx first (no new requests), then every instance gracefully; by the PIDs in run/pid/."""
    for pid_file, sig, timeout in [(layout.pid_file("nginx"), signal.SIGQUIT, 10.0),
                                   *((p, signal.SIGTERM, float(stop_timeout_s(cfg)))
                                     for p in sorted(layout.pids.glob("uwsgi-*.pid")))]:
        if not pid_file.exists():
            continue
        pid = int(pid_file.read_text())
        graceful = stop_pid(pid, sig, timeout)
        print(f"stopped {pid_file.stem} (pid {pid}){'' if graceful else ' by SIGKILL after the timeout'}")
        pid_file.unlink()


def running(layout: DevLayout) -> list[str]:
    return [p.stem for p in layout.pids.glob("*.pid") if pid_alive(int(p.read_text()))]


def up(cfg: Settings, run: Path) -> DevLayout:
    """make run: render, start every instance and Nginx, return once each instance is ready."""
    layout = DevLayout(run.resolve())
    if layout.pids.is_dir() and running(layout):
        raise SystemExit(f"already running: {', '.join(running(layout))}; `make stop` first")
    layout = render_dev(cfg, run)
    # Nothing runs, so the metrics of the previous run can go: this run's counters start at zero.
    shutil.rmtree(layout.metrics, ignore_errors=True)
    layout.metrics.mkdir(parents=True)
    for inst in cfg.instances:
        start_instance(layout, inst)
    start_nginx(layout)
    try:
        probe.wait_ready([i.port for i in cfg.instances], START_TIMEOUT_S)
    except TimeoutError:
        stop_all(layout, cfg)
        raise
    return layout


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service.deploy", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["check", "render", "up", "down", "status", "ports", "fleet"])
    parser.add_argument("--run-dir", type=Path, default=ROOT / "run", help="the dev stack's folder (default run/)")
    parser.add_argument("--host", action="store_true", help="render a real host's files (with render)")
    parser.add_argument("--destdir", type=Path, default=Path("/"), help="root to render host files under")
    parser.add_argument("--out", type=Path, default=ROOT / "run" / "fleet",
                        help="fleet: render every host's files under OUT/NAME/ (default run/fleet)")
    args = parser.parse_args(argv)
    cfg = settings_mod.load()
    layout = DevLayout(args.run_dir.resolve())

    if args.command == "check":
        try:
            check(cfg)
        except ValueError as err:
            sys.exit(f"refused: {err}")
        print(f"{cfg.path}: ok ({len(cfg.instances)} instances on {len({i.host for i in cfg.instances})} hosts, "
              f"store {'PostgreSQL' if cfg.store.url else 'SQLite in ' + str(cfg.jobs.dir)})")
    elif args.command == "ports":
        print("\n".join(str(i.port) for i in cfg.instances))
    elif args.command == "render" and args.host:
        for path in render_host(cfg, args.destdir, fleet.whoami(cfg).name):
            print(path)
    elif args.command == "fleet":
        for host, paths in render_fleet(cfg, args.out).items():
            print(f"{host}:\n" + "".join(f"  {p}\n" for p in paths), end="")
        print(args.out / "prometheus.yml")
    elif args.command == "render":
        render_dev(cfg, args.run_dir)
        print(f"rendered into {layout.run}")
    elif args.command == "up":
        if layout.pids.is_dir() and running(layout):
            from . import reload  # reload is built on this module, so it is imported only here
            try:
                reload.apply(cfg, args.run_dir, START_TIMEOUT_S)
            except (TimeoutError, OSError) as exc:
                sys.exit(f"reload stopped: {exc}")
            return
        up(cfg, args.run_dir)
        print(f"parse is up: http://{cfg.nginx.listen}/  (logs in {layout.logs}; stop with `make stop`)")
    elif args.command == "down":
        stop_all(layout, cfg)
    elif args.command == "status":
        alive = set(running(layout)) if layout.pids.is_dir() else set()
        print(f"nginx: {'running' if 'nginx' in alive else 'not running'} (http://{cfg.nginx.listen}/)")
        ok = probe.report([i.port for i in cfg.instances])
        sys.exit(0 if ok and "nginx" in alive else 1)


if __name__ == "__main__":
    main()
