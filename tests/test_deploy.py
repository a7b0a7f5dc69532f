"""What service.deploy renders from one declaration, and the systemd units that use it.

The units are checked the way they will run: `systemd-analyze verify` must print nothing, and the
exact command lines they hold (ExecStart, ExecStartPost, KillSignal to the main PID) are run here
against a real uWSGI instance. systemd itself is never started.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from service.ops import deploy, probe
from service import settings as settings_mod
from service.settings import ROOT
from tests.stack import write_config

pytestmark = pytest.mark.unit


UNITS = ROOT / "systemd"


@pytest.fixture
def cfg(tmp_path):
    return write_config(tmp_path, [{"weight": 3, "processes": 2, "threads": 2}, {"weight": 1}], deadline_seconds=45)


def test_dev_render_follows_the_declaration(cfg, tmp_path):
    layout = deploy.render_dev(cfg, tmp_path / "run")
    a, b = cfg.instances
    env = deploy.read_env(layout.env_file(a))
    assert env["PARSE_PORT"] == str(a.port) and env["PARSE_PROCESSES"] == "2" and env["PARSE_THREADS"] == "2"
    assert env["PARSE_CONFIG"] == str(cfg.path)
    # Admission from the deadline: 2 workers x floor(45 s / 2 s per request) = 44 at once, 2 in flight.
    assert (cfg.limits.deadline_seconds, cfg.limits.seconds_per_request) == (45, 2.0)
    assert deploy.admitted(cfg, a) == 44 and env["UWSGI_LISTEN"] == "42"
    assert f"port = {a.port}" in cfg.path.read_text()
    assert f"127.0.0.1:{a.port} weight=3 max_fails=2 fail_timeout=5s max_conns=44;" in (
        layout.nginx_dir / "parse" / "http.conf").read_text()
    assert env["PARSE_MASTER_FIFO"] == str(layout.control / f"{a.port}.fifo")
    assert env["PARSE_STATS"] == f"127.0.0.1:{a.port + deploy.STATS_OFFSET}"
    assert env["PROMETHEUS_MULTIPROC_DIR"] == str(layout.metrics)
    # harakiri above the app's deadline, Nginx's read timeout above harakiri.
    harakiri = int(env["PARSE_HARAKIRI"])
    server = (layout.nginx_dir / "parse" / "server.conf").read_text()
    read_timeout = int(re.search(r"uwsgi_read_timeout (\d+)s;", server).group(1))
    assert cfg.limits.deadline_seconds < harakiri < read_timeout
    # One memory allowance: the app gives back what it keeps past it, uWSGI recycles a worker past it.
    assert env["PARSE_WORKER_MEMORY_MIB"] == str(cfg.limits.worker_memory_mib)
    assert "\nreload-on-rss = $(PARSE_WORKER_MEMORY_MIB)\n" in (deploy.ROOT / "conf" / "uwsgi" / "parse.ini").read_text()
    assert f"client_max_body_size {cfg.limits.max_body_bytes};" in server
    assert f"listen {cfg.nginx.listen};" in server
    http = (layout.nginx_dir / "parse" / "http.conf").read_text()
    servers = re.findall(r"server 127\.0\.0\.1:(\d+) weight=(\d+) max_fails=\d+ fail_timeout=\d+s\b", http)
    assert servers == [(str(a.port), "3"), (str(b.port), "1")]
    # Nginx itself accepts the site with the rendered fragments.
    subprocess.run([*deploy.nginx_command(layout), "-t", "-q"], check=True, capture_output=True)


def test_host_render(cfg, tmp_path):
    files = deploy.render_host(cfg, tmp_path)
    rel = {str(p.relative_to(tmp_path)) for p in files}
    assert rel == {f"etc/parse/instances/{i.port}.env" for i in cfg.instances} | {
        "etc/nginx/parse/http.conf", "etc/nginx/parse/server.conf", "etc/nginx/parse/limit_req.conf", "etc/nginx/parse/jobs.conf",
        "etc/nginx/parse/pass.conf", "etc/nginx/parse/tls.conf", "etc/nginx/parse/metrics.conf",
        "etc/nginx/parse/results.conf", "etc/systemd/system/parse@.service.d/parse-toml.conf"}
    # One host, no store: Nginx serves ?annotate=1 PNGs from the results folder itself.
    assert "alias $parse_results_dir/$1;" in (tmp_path / "etc/nginx/parse/results.conf").read_text()
    env = deploy.read_env(tmp_path / f"etc/parse/instances/{cfg.instances[0].port}.env")
    assert env["PROMETHEUS_MULTIPROC_DIR"] == str(deploy.HOST_METRICS)
    dropin = (tmp_path / "etc/systemd/system/parse@.service.d/parse-toml.conf").read_text()
    assert f"TimeoutStopSec={deploy.stop_timeout_s(cfg)}" in dropin
    # An instance removed from the declaration loses its environment file on the next render.
    stale = tmp_path / "etc/parse/instances/1.env"
    stale.write_text("PARSE_PORT=1\n")
    deploy.render_host(cfg, tmp_path)
    assert not stale.exists()


def test_declaration_errors(cfg, tmp_path):
    clash = write_config(tmp_path, [{}, {}])
    a = clash.instances[0]
    bad = dataclasses.replace(clash, instances=(a, dataclasses.replace(a, port=a.port + deploy.STATS_OFFSET)))
    with pytest.raises(ValueError, match="collide"):
        deploy.check(bad)
    with pytest.raises(ValueError, match="at least one"):
        deploy.check(dataclasses.replace(clash, instances=()))


def installed_units(tmp_path: Path, cfg=None) -> Path:
    """The units as `sudo make install PREFIX=<this checkout>` writes them (sed /opt/parse), with
    the rendered drop-in beside them when `cfg` is given (SYSTEMD_UNIT_PATH makes systemd read it)."""
    out = tmp_path / "units"
    out.mkdir()
    for unit in ("parse@.service", "parse.target"):
        (out / unit).write_text((UNITS / unit).read_text().replace("/opt/parse", str(ROOT)))
    if cfg is not None:
        (out / "parse@.service.d").mkdir()
        (out / "parse@.service.d" / "parse-toml.conf").write_text(deploy.systemd_dropin(cfg))
    return out


def unit_values(text: str, key: str) -> list[str]:
    return [m.group(1) for m in re.finditer(rf"^{key}=(.*)$", text, re.M)]


needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")


@needs_analyze
def test_units_verify_clean(cfg, tmp_path):
    units = installed_units(tmp_path, cfg)
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"}  # the trailing ":" keeps the default path
    r = subprocess.run(["systemd-analyze", "verify", "parse@6001.service", "parse.target"],
                       cwd=units, env=env, capture_output=True, text=True)
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


@needs_analyze
def test_unit_exposure_is_low(cfg, tmp_path):
    units = installed_units(tmp_path, cfg)
    env = {**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"}
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", "parse@6001.service"],
                       cwd=units, env=env, capture_output=True, text=True)
    score = float(re.search(r"Overall exposure level for parse@6001\.service: ([\d.]+)", r.stdout).group(1))
    assert score <= 2.0, r.stdout


@pytest.mark.stack  # a real uWSGI instance loads a model
def test_unit_commands_run_as_written(cfg, tmp_path):
    """ExecStart (READY=1 over sd_notify before any model), /readyz 503 while loading, ExecStartPost
    returns once every worker is ready, KillSignal to the main PID stops it gracefully."""
    unit = (installed_units(tmp_path) / "parse@.service").read_text()
    inst = cfg.instances[1]
    deploy.render_dev(cfg, tmp_path / "run")
    env = {**os.environ, **deploy.read_env(deploy.DevLayout(tmp_path / "run").env_file(inst))}
    os.makedirs(env["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

    def command(key: str) -> list[str]:
        [line] = unit_values(unit, key)
        return shlex.split(line.replace("%i", str(inst.port)))

    workdir = unit_values(unit, "WorkingDirectory")[0]
    assert unit_values(unit, "KillSignal") == ["SIGTERM"] and unit_values(unit, "KillMode") == ["mixed"]
    assert unit_values(unit, "Type") == ["notify"]
    # Type=notify: systemd's notification socket, played by this test.
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(120)
    env["NOTIFY_SOCKET"] = str(tmp_path / "notify")
    log = tmp_path / "uwsgi.log"
    with open(log, "wb") as out:
        main = subprocess.Popen(command("ExecStart"), env=env, cwd=workdir, start_new_session=True,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        messages = b""
        while b"READY=1" not in messages:
            messages += notify.recv(4096)
        # uWSGI says READY before its lazy workers have a model: why ExecStartPost waits on the probe.
        assert not probe.state(inst.port)[0]
        # Before the model is ready the worker answers /readyz with 503 JSON.
        statuses = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and 200 not in statuses:
            try:
                statuses.append(probe.request(inst.port)[0])
            except OSError:
                pass
            time.sleep(0.05)
        assert statuses and statuses[0] == 503, statuses
        post = subprocess.run(command("ExecStartPost"), env=env, cwd=workdir, capture_output=True, text=True, timeout=330)
        assert post.returncode == 0, post.stdout + post.stderr
        assert "ready (1/1 workers ready)" in post.stdout
        assert probe.request(inst.port)[0] == 200
        main.send_signal(signal.SIGTERM)  # KillMode=mixed: to the main process only
        assert main.wait(timeout=deploy.stop_timeout_s(cfg)) == 0
        assert "graceful shutdown" in log.read_text() and "goodbye to uWSGI" in log.read_text()
    finally:
        try:
            os.killpg(main.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        main.wait()
        notify.close()


def test_winograd_must_be_a_boolean(tmp_path):
    path = tmp_path / "parse.toml"
    path.write_text('[model]\nwinograd = false\n')
    assert settings_mod.load(path).model.winograd is False
    path.write_text('[model]\nwinograd = "false"\n')
    with pytest.raises(ValueError, match="winograd .* must be true or false"):
        settings_mod.load(path)


def test_gpu_settings_are_checked(tmp_path):
    """Batching and shape settings of the wrong type or range are refused with the key's name."""
    path = tmp_path / "parse.toml"
    for text, match in (('[model]\ndet_bucket = 64.0\n', "det_bucket"), ('[model]\ndet_bucket = 100\n', "det_bucket"),
                        ('[model]\ncudnn = "true"\n', "cudnn"),
                        ('[[instances]]\nport = 6001\nbatch_pages = "4"\n', "batch_pages"),
                        ('[[instances]]\nport = 6001\nbatch_wait_ms = true\n', "batch_wait_ms")):
        path.write_text(text)
        with pytest.raises(ValueError, match=match):
            settings_mod.load(path)
    path.write_text('[model]\ndet_bucket = 128\ncudnn = true\n[[instances]]\nport = 6001\nbatch_pages = 8\nbatch_wait_ms = 2\n')
    cfg = settings_mod.load(path)
    assert (cfg.model.det_bucket, cfg.model.cudnn, cfg.instances[0].batch_pages) == (128, True, 8)
    path.write_text('[[instances]]\nport = 6001\nbatch_pages = 0\n')
    with pytest.raises(ValueError, match="batch_pages"):
        deploy.check(settings_mod.load(path))
