"""Several hosts from one declaration: where each instance listens, how Nginx reaches it, and TLS.

The uwsgi protocol has no authentication, and whoever reaches a uWSGI socket can set uWSGI's
magic variables (which file to load, which app to run). So an instance's uwsgi socket is on
loopback always. As soon as one instance of the declaration is on another host, every instance
also runs uWSGI's sslrouter gateway on its host's address: TLS that accepts only clients with a
certificate from the fleet's private CA (service/ops/certs.py), passed on to that loopback socket;
Nginx verifies each gateway's certificate the same way. One scheme for the whole upstream:
Nginx's uwsgi_pass takes one (uwsgi:// or suwsgi://) per location.

    python -m service.ops.fleet whoami      this machine's [[hosts]] name
    python -m service.ops.fleet ports       the ports of this host's instances, one a line
    python -m service.ops.fleet is-front    exit 0 when Nginx runs on this host
    python -m service.ops.fleet prometheus  the Prometheus scrape configuration
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import socket
import ssl
import sys
from pathlib import Path

from .. import settings as settings_mod
from ..settings import Host, Instance, Settings

# Where a host keeps its certificate, key and the CA bundle it trusts (sudo make install copies
# them there from pki/hosts/NAME/, which `python -m service.ops.certs` writes).
HOST_TLS = Path("/etc/parse/tls")
CA_FILE = "ca.crt"
CERT_FILE = "host.crt"
KEY_FILE = "host.key"
# Every instance certificate names this as well as its host: Nginx verifies one name per upstream
# group (uwsgi_ssl_name), so the group's common name proves "an instance of this fleet".
INSTANCE_NAME = "parse-instance"
# TLS 1.2 suites with forward secrecy only (TLS 1.3's own suites are all of that kind).
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
# How the front host tells a vanished host from a busy one.
# - The gateway is one event-loop process beside the workers: it completes the TCP and TLS
#   handshakes at once however busy the workers are, and a request then waits in the loopback
#   socket's listen queue behind an established connection. So a connect (which for Nginx includes
#   the handshake) that takes longer than this means the host or its link is gone (a live host on
#   the same network answers within milliseconds); Nginx then tries the next host, and after
#   max_fails such requests skips the host for fail_timeout. Linux's first SYN retry comes after
#   1 s, so a single lost SYN on a live host counts as one failure too, which max_fails absorbs.
CONNECT_TIMEOUT_S = 1
# - An in-flight request hears nothing from a host whose link went down: keepalive probes its idle
#   connection every second and gives it up after one unanswered probe; Nginx then retries the
#   request on another host (uwsgi_next_upstream error). Only sockets that ask for keepalive
#   (uwsgi_socket_keepalive on) use these values, Linux's least.
FRONT_SYSCTL = {"net.ipv4.tcp_keepalive_time": 1, "net.ipv4.tcp_keepalive_intvl": 1,
                "net.ipv4.tcp_keepalive_probes": 1}


def uses_tls(cfg: Settings) -> bool:
    """True when any instance listens beyond loopback: then every instance speaks TLS."""
    return any(not cfg.host(i.host).loopback for i in cfg.instances)


def front(cfg: Settings) -> Host:
    return cfg.host(cfg.nginx.host)


def host_instances(cfg: Settings, host: str) -> list[Instance]:
    return [i for i in cfg.instances if i.host == host]


def host_ports(cfg: Settings, host: str) -> list[int]:
    """The ports of a host's instances: what its probe, its chain reload and `ports` act on."""
    return [i.port for i in host_instances(cfg, host)]


def server_address(cfg: Settings, inst: Instance) -> str:
    """Where Nginx connects to `inst`."""
    return f"{cfg.host(inst.host).reach}:{inst.port}"


def front_url(cfg: Settings) -> str:
    """The front Nginx as every host reaches it (the coordinators post job pages there): [nginx]
    listen, a wildcard address replaced by the front host's own (by loopback on one host)."""
    host, _, port = cfg.nginx.listen.rpartition(":")
    if host in ("", "0.0.0.0", "*", "[::]"):
        host = front(cfg).reach if uses_tls(cfg) else ("[::1]" if host == "[::]" else "127.0.0.1")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _listen_is_loopback(cfg: Settings) -> bool:
    host = cfg.nginx.listen.rpartition(":")[0].strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def check(cfg: Settings) -> None:
    """Refuse fleets that would start but not work."""
    if uses_tls(cfg) and front(cfg).loopback:
        raise ValueError(f"{cfg.path}: instances listen beyond loopback, so [nginx] host must name a host "
                         f"with a network address (it is {cfg.nginx.host!r})")
    if uses_tls(cfg):
        # Jobs, API keys and ?annotate=1 results are state that every host must see.
        if not cfg.store.url:
            raise ValueError(f"{cfg.path}: instances on several hosts share jobs, API keys and annotated "
                             "results; name the fleet's PostgreSQL database in [store] url")
        if cfg.auth.keys_file is not None and not cfg.auth.keys_in_store:
            raise ValueError(f"{cfg.path}: a keys file is one host's; in a fleet set [auth] keys_in_store = true "
                             "(python -m service.keys then manages the store's keys)")
        if _listen_is_loopback(cfg):
            raise ValueError(f"{cfg.path}: [nginx] listen {cfg.nginx.listen} is loopback, but the coordinators "
                             "of every host post job pages to the front Nginx: listen on the front host's "
                             "address (or 0.0.0.0)")
    for host in cfg.hosts:
        if not host_instances(cfg, host.name):
            continue
        # The gateway on bind:PORT and the uwsgi socket on 127.0.0.1:PORT share the port; a
        # wildcard bind would take the loopback address too.
        bind = ipaddress.ip_address(host.bind)
        if bind.is_unspecified:
            raise ValueError(f"{cfg.path}: host {host.name!r} binds {host.bind}; name the one address its "
                             "instances listen on (the uwsgi socket itself keeps 127.0.0.1)")
        if uses_tls(cfg) and bind.is_loopback:
            raise ValueError(f"{cfg.path}: host {host.name!r} binds {host.bind}, but in a fleet whose instances "
                             "speak TLS each gateway needs the host's network address: 127.0.0.1:PORT is "
                             "its uwsgi socket")


def instance_env(cfg: Settings, inst: Instance, tls_dir: Path, gateway_timeout_s: int) -> str:
    """What an instance's environment file adds in a fleet: its host (read by the app and the
    readiness probe) and, beyond loopback, its TLS gateway (read by conf/uwsgi/parse.ini)."""
    host = cfg.host(inst.host)
    values: dict[str, object] = {"PARSE_HOST": inst.host}
    if uses_tls(cfg):
        # uWSGI's sslrouter: address,cert,key,ciphers,client CA. The "!" before the CA makes a
        # client certificate mandatory; without it uWSGI verifies one only when a client offers it.
        values["PARSE_SSLROUTER"] = (f"{host.bind}:{inst.port},{tls_dir / CERT_FILE},{tls_dir / KEY_FILE},"
                                     f"{CIPHERS},!{tls_dir / CA_FILE}")
        values["PARSE_SSLROUTER_TIMEOUT"] = gateway_timeout_s
    return "".join(f"{k}={v}\n" for k, v in values.items())


def scheme(cfg: Settings) -> str:
    return "suwsgi://" if uses_tls(cfg) else ""


def nginx_pass(cfg: Settings) -> str:
    """parse/pass.conf, included by each location of conf/nginx/parse.conf that reaches the app."""
    return (f"# Rendered from {cfg.path} by python -m service.deploy; edit that file, not this one.\n"
            f"uwsgi_pass {scheme(cfg)}parse_instances;\n"
            "include parse/tls.conf;\n")


def nginx_results(cfg: Settings) -> str:
    """parse/results.conf: where /results/<id>.png comes from, Nginx's disk on one host, the app
    (which reads the store) when a store is declared."""
    head = f"# Rendered from {cfg.path} by python -m service.deploy; edit that file, not this one.\n"
    if cfg.store.url:
        # A 503 here is the store's, the same on every instance: never counted against one.
        return head + ("location ~ ^/results/[A-Za-z0-9_-]+\\.png$ {\n    uwsgi_next_upstream error timeout;\n"
                       "    include parse/pass.conf;\n}\n")
    return head + ("location ~ ^/results/([A-Za-z0-9_-]+\\.png)$ {\n    alias $parse_results_dir/$1;\n"
                   "    default_type image/png;\n}\n")


def nginx_tls(cfg: Settings, tls_dir: Path) -> str:
    """parse/tls.conf: how Nginx speaks to the instances beyond loopback (empty on one host)."""
    head = f"# Rendered from {cfg.path} by python -m service.deploy; edit that file, not this one.\n"
    if not uses_tls(cfg):
        return head + "# Every instance is on loopback: plain uwsgi.\n"
    return (head
            # Nginx proves itself to the instances with the front host's certificate ...
            + f"uwsgi_ssl_certificate {tls_dir / CERT_FILE};\n"
            f"uwsgi_ssl_certificate_key {tls_dir / KEY_FILE};\n"
            # ... and talks only to instances whose certificate the fleet's CA signed.
            "uwsgi_ssl_verify on;\n"
            f"uwsgi_ssl_trusted_certificate {tls_dir / CA_FILE};\n"
            f"uwsgi_ssl_name {INSTANCE_NAME};\n"
            "uwsgi_ssl_protocols TLSv1.2 TLSv1.3;\n"
            f"uwsgi_ssl_ciphers {CIPHERS};\n"
            # A resumed session skips the certificate exchange on the next connection.
            "uwsgi_ssl_session_reuse on;\n"
            f"uwsgi_connect_timeout {CONNECT_TIMEOUT_S}s;\n"
            "uwsgi_socket_keepalive on;\n")


def sysctl_conf(cfg: Settings) -> str:
    return (f"# Rendered from {cfg.path} by python -m service.deploy; edit that file, not this one.\n"
            "# A front host notices an instance host that vanished mid-request within 2 s\n"
            "# (service/ops/fleet.py, FRONT_SYSCTL).\n"
            + "".join(f"{k} = {v}\n" for k, v in FRONT_SYSCTL.items()))


def systemd_dropin(cfg: Settings, host: Host) -> str:
    """Beyond loopback the unit's IP allow-list (localhost only) must let the front host in, both
    ways: its Nginx connects to the TLS gateway, and this host's coordinator posts job pages to it."""
    return (f"# Rendered from {cfg.path} by python -m service.deploy; edit that file, not this one.\n"
            f"[Service]\n# Nginx on {front(cfg).name} connects to the TLS gateway on {host.bind}; the\n"
            f"# coordinator posts job pages to {front_url(cfg)}.\n"
            f"IPAddressAllow={front(cfg).reach}\n")


def metrics_path(host: str) -> str:
    return f"/metrics/hosts/{host}"


def nginx_metrics(cfg: Settings) -> str:
    """parse/metrics.conf: one upstream per host, and /metrics/hosts/NAME passed to it.

    The instances of a host share one metrics folder, so any of them answers for the whole host;
    Prometheus scrapes each host through Nginx here, over the same TLS as requests, and the app's
    [auth] metrics_allow decides who may read (REMOTE_ADDR is Prometheus's address).
    """
    out = f"# Rendered from {cfg.path} by python -m service.deploy; edit that file, not this one.\n"
    for host in cfg.hosts:
        insts = host_instances(cfg, host.name)
        if not insts:
            continue
        out += (f"location = {metrics_path(host.name)} {{\n"
                # The app routes on PATH_INFO ($uri); a uwsgi_param here would drop the server's.
                "    rewrite ^ /metrics break;\n"
                f"    uwsgi_pass {scheme(cfg)}parse_host_{host.name};\n"
                "    include parse/tls.conf;\n"
                "}\n")
    return out


def nginx_metrics_upstreams(cfg: Settings) -> str:
    out = ""
    for host in cfg.hosts:
        insts = host_instances(cfg, host.name)
        if insts:
            servers = "".join(f"    server {server_address(cfg, i)};\n" for i in insts)
            out += f"upstream parse_host_{host.name} {{\n{servers}}}\n"
    return out


def prometheus(cfg: Settings) -> str:
    """A scrape job over every host, through the front Nginx at the address every machine reaches
    it by (service/web/metrics.py)."""
    target = front_url(cfg).removeprefix("http://")
    lines = [f"# Rendered from {cfg.path} by python -m service.deploy; edit that file, not this one.",
             "# Each target is one host's instances, merged; `host` labels every series.",
             "scrape_configs:", "  - job_name: parse", "    scrape_interval: 15s", "    static_configs:"]
    for host in cfg.hosts:
        if host_instances(cfg, host.name):
            lines += [f"      - targets: [{json.dumps(target)}]",
                      "        labels:",
                      f"          host: {json.dumps(host.name)}",
                      f"          instance: {json.dumps(host.name)}",
                      f"          __metrics_path__: {json.dumps(metrics_path(host.name))}"]
    return "\n".join(lines) + "\n"


def client_context(tls_dir: Path) -> ssl.SSLContext:
    """How a probe (or any client of this fleet) speaks to an instance: our certificate, their CA."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls_dir / CA_FILE))
    ctx.load_cert_chain(str(tls_dir / CERT_FILE), str(tls_dir / KEY_FILE))
    return ctx


def _bindable(address: str) -> bool:
    try:
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as s:
            s.bind((address, 0))
        return True
    except OSError:
        return False


def whoami(cfg: Settings) -> Host:
    """This machine's host: $PARSE_HOST, else the declared host whose bind address is one of
    this machine's (loopback only when no network host matches)."""
    if os.environ.get("PARSE_HOST"):
        return cfg.host(os.environ["PARSE_HOST"])
    mine = [h for h in cfg.hosts if not h.loopback and _bindable(h.bind)]
    if not mine:
        mine = [h for h in cfg.hosts if h.loopback]
    if len(mine) != 1:
        names = ", ".join(h.name for h in (mine or cfg.hosts))
        raise SystemExit(f"cannot tell which host this is (candidates: {names}); set PARSE_HOST=NAME")
    return mine[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service.ops.fleet", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["whoami", "ports", "is-front", "prometheus"])
    args = parser.parse_args(argv)
    cfg = settings_mod.load()
    if args.command == "prometheus":
        sys.stdout.write(prometheus(cfg))
        return
    me = whoami(cfg)
    if args.command == "whoami":
        print(me.name)
    elif args.command == "ports":
        print("\n".join(map(str, host_ports(cfg, me.name))))
    elif args.command == "is-front":
        sys.exit(0 if me.name == cfg.nginx.host else 1)


if __name__ == "__main__":
    main()
