"""What one fleet declaration renders for each host, checked without starting anything."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from service import settings as settings_mod
from service.ops import certs, deploy, fleet
from service.settings import ROOT

pytestmark = pytest.mark.unit


def fleet_cfg(tmp_path):
    text = ("[nginx]\nhost = \"front\"\nlisten = \"0.0.0.0:8100\"\n\n[tls]\ndir = \"%s\"\n\n" % (tmp_path / "pki")
            + "[store]\nurl = \"postgresql://parse@10.251.0.9:5432/parse\"\n\n[auth]\nkeys_in_store = true\n\n"
            + "".join(f"[[hosts]]\nname = \"{h}\"\nbind = \"10.251.0.{n}\"\n\n" for n, h in ((1, "front"), (2, "a"), (3, "b")))
            + "[[instances]]\nport = 6001\nhost = \"a\"\nweight = 2\n\n[[instances]]\nport = 6001\nhost = \"b\"\n")
    (tmp_path / "parse.toml").write_text(text)
    return settings_mod.load(tmp_path / "parse.toml")


def test_each_host_gets_its_own_files(tmp_path):
    cfg = fleet_cfg(tmp_path)
    out = tmp_path / "fleet"
    rendered = deploy.render_fleet(cfg, out)
    rel = {h: {str(p.relative_to(out / h)) for p in paths} for h, paths in rendered.items()}
    assert "etc/nginx/parse/http.conf" in rel["front"] and "etc/sysctl.d/60-parse.conf" in rel["front"]
    assert not any(p.startswith("etc/nginx") for p in rel["a"] | rel["b"])
    assert "etc/parse/instances/6001.env" in rel["a"] and not any("instances" in p for p in rel["front"])
    env = deploy.read_env(out / "a/etc/parse/instances/6001.env")
    assert env["PARSE_HOST"] == "a"
    # A CA given with "!" is what makes uWSGI's gateway require a client certificate.
    assert env["PARSE_SSLROUTER"] == (f"10.251.0.2:6001,{fleet.HOST_TLS}/host.crt,{fleet.HOST_TLS}/host.key,"
                                      f"{fleet.CIPHERS},!{fleet.HOST_TLS}/ca.crt")
    # The gateway outwaits Nginx, which decides when a request has taken too long.
    assert int(env["PARSE_SSLROUTER_TIMEOUT"]) > deploy.nginx_read_timeout_s(cfg)
    assert "IPAddressAllow=10.251.0.1" in (out / "a/etc/systemd/system/parse@.service.d/fleet.conf").read_text()
    # Every instance reaches the store's server through the unit's IP allow-list.
    assert "IPAddressAllow=10.251.0.9" in (out / "a/etc/systemd/system/parse@.service.d/parse-toml.conf").read_text()
    http = (out / "front/etc/nginx/parse/http.conf").read_text()
    assert re.findall(r"server (10\.251\.0\.\d:6001) weight=(\d)", http) == [("10.251.0.2:6001", "2"), ("10.251.0.3:6001", "1")]
    assert "uwsgi_pass suwsgi://parse_instances;" in (out / "front/etc/nginx/parse/pass.conf").read_text()
    tls = (out / "front/etc/nginx/parse/tls.conf").read_text()
    assert "uwsgi_ssl_verify on;" in tls and f"uwsgi_ssl_name {fleet.INSTANCE_NAME};" in tls
    # The gateways handshake at once, so the connect timeout is short, not the read timeout.
    assert f"uwsgi_connect_timeout {fleet.CONNECT_TIMEOUT_S}s;" in tls
    prom = (out / "prometheus.yml").read_text()
    assert prom.count("__metrics_path__") == 2 and '"/metrics/hosts/b"' in prom
    # A Prometheus on another machine reaches the front host's address, not the wildcard Nginx binds.
    assert prom.count('targets: ["10.251.0.1:8100"]') == 2 and "0.0.0.0" not in prom
    # The coordinators of every host post job pages there too.
    assert fleet.front_url(cfg) == "http://10.251.0.1:8100"


@pytest.mark.parametrize("change, refusal", [
    (("[store]\nurl = \"postgresql://parse@10.251.0.9:5432/parse\"\n", ""), "name the fleet's PostgreSQL"),
    (("keys_in_store = true", "keys_in_store = false\nkeys_file = \"keys\""), "a keys file is one host's"),
    (("0.0.0.0:8100", "127.0.0.1:8100"), "is loopback"),
])
def test_a_fleet_without_a_shared_store_is_refused(tmp_path, change, refusal):
    """Jobs, keys and annotated results on one host's disk would be seen by that host alone."""
    fleet_cfg(tmp_path)
    text = (tmp_path / "parse.toml").read_text()
    (tmp_path / "parse.toml").write_text(text.replace(*change))
    with pytest.raises(ValueError, match=refusal):
        deploy.check(settings_mod.load(tmp_path / "parse.toml"))
    done = subprocess.run([str(ROOT / ".venv/bin/python"), "-m", "service.deploy", "check"], cwd=ROOT,
                          env={"PARSE_CONFIG": str(tmp_path / "parse.toml"), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True)
    assert done.returncode != 0 and refusal in done.stderr


def test_front_site_passes_nginx_t_with_certificates(tmp_path):
    cfg = fleet_cfg(tmp_path)
    certs.issue_all(cfg)
    layout = deploy.render_dev(cfg, tmp_path / "run")
    (layout.run / "tls").mkdir()
    for f in (fleet.CA_FILE, fleet.CERT_FILE, fleet.KEY_FILE):
        (layout.run / "tls" / f).write_bytes((cfg.tls.dir / "hosts" / "front" / f).read_bytes())
    subprocess.run([*deploy.nginx_command(layout), "-t", "-q"], check=True, capture_output=True)


def test_one_host_stays_plain_loopback(tmp_path):
    cfg = settings_mod.load(settings_mod.DEFAULT_CONFIG)
    assert not fleet.uses_tls(cfg) and [h.name for h in cfg.hosts] == ["local"]
    assert fleet.instance_env(cfg, cfg.instances[0], fleet.HOST_TLS, deploy.gateway_timeout_s(cfg)) == \
        "PARSE_HOST=local\n"
    assert fleet.nginx_pass(cfg).endswith("uwsgi_pass parse_instances;\ninclude parse/tls.conf;\n")
    assert fleet.front_url(cfg) == "http://127.0.0.1:8100" and not cfg.store.url
    deploy.check(cfg)  # SQLite in [jobs] dir: nothing to declare, nothing to install


def test_wildcard_bind_is_refused(tmp_path):
    cfg = fleet_cfg(tmp_path)
    text = (tmp_path / "parse.toml").read_text()
    (tmp_path / "parse.toml").write_text(text.replace('bind = "10.251.0.2"', 'bind = "0.0.0.0"\naddress = "10.251.0.2"'))
    with pytest.raises(ValueError, match="127.0.0.1"):
        deploy.check(settings_mod.load(tmp_path / "parse.toml"))
    # Loopback with a network address in front (NAT): the gateway would take the uwsgi socket's port.
    (tmp_path / "parse.toml").write_text(text.replace('bind = "10.251.0.2"', 'bind = "127.0.0.1"\naddress = "10.251.0.2"'))
    with pytest.raises(ValueError, match="network address"):
        deploy.check(settings_mod.load(tmp_path / "parse.toml"))
    deploy.check(cfg)


def test_certificate_rotation_keeps_both_cas_trusted(tmp_path):
    cfg = fleet_cfg(tmp_path)
    certs.issue_all(cfg)
    assert certs.issue_all(cfg) == []  # nothing due
    certs.new_ca(cfg.tls.dir / "ca")
    done = certs.issue_all(cfg)
    assert len(done) == 3 and all("older CA" in d for d in done)
    assert (cfg.tls.dir / "hosts/a/ca.crt").read_text().count("BEGIN CERTIFICATE") == 2
    certs.retire_old(cfg)
    assert (cfg.tls.dir / "hosts/a/ca.crt").read_text().count("BEGIN CERTIFICATE") == 1


def test_dashboard_panels_query_metrics_that_exist():
    dash = json.loads((ROOT / "conf/grafana/parse-dashboard.json").read_text())
    assert dash["schemaVersion"] >= 36 and dash["uid"] and len({p["id"] for p in dash["panels"]}) == len(dash["panels"])
    source = (ROOT / "service/web/metrics.py").read_text()
    declared = set(re.findall(r'(?:Counter|Histogram|Gauge)\("(\w+)"', source)) | {"parse_queue_seconds"}
    for p in dash["panels"]:
        assert {"type", "title", "gridPos", "targets", "datasource"} <= set(p)
        for t in p["targets"]:
            names = {re.sub(r"_(bucket|total)$", "", n) for n in re.findall(r"\bparse_\w+", t["expr"])}
            assert names and names <= {re.sub(r"_total$", "", d) for d in declared}, t["expr"]


def test_a_host_reloads_its_own_instances(tmp_path, monkeypatch):
    """Hosts a and b both run port 6001: each host's chain reload takes its own, by host."""
    cfg = fleet_cfg(tmp_path)
    assert fleet.host_ports(cfg, "a") == [6001] and fleet.host_ports(cfg, "front") == []
    monkeypatch.setenv("PARSE_HOST", "b")
    assert fleet.whoami(cfg).name == "b"
    assert cfg.instance(6001, fleet.whoami(cfg).name).host == "b"
