"""Configuration changes on a running stack, as the README tells a user to make them.

API keys turned on in parse.toml and a key added with `service.keys` lock /v1/* from the next
request (the bound the README states), with no reload; turned off, the API is open again at once.
`make run` (service.deploy up) on a running stack applies edits by a rolling reload and exits 0,
and names the command for what a reload cannot apply.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from service.settings import ROOT
from tests.stack import Stack, http
from tests.support import png

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def stack(stack_factory) -> Stack:
    return stack_factory([{}], deadline_seconds=60)


@pytest.fixture(scope="module")
def page(render) -> bytes:
    return png(render(["Keys 42"], size=24, margin=12))


def command(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    """A documented command, run as a user runs it, against this stack's settings file."""
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PARSE_CONFIG": str(stack.cfg.path)})


def parse(stack: Stack, page: bytes, key: str | None = None):
    return http(stack.url + "/v1/parse", page, "image/png", headers={"Authorization": f"Bearer {key}"} if key else {})


def test_keys_on_and_off_take_effect_at_the_next_request(stack: Stack, page: bytes):
    original = stack.cfg.path.read_text()
    assert parse(stack, page).status == 200
    refused = command(stack, "service.keys", "add", "--label", "alice")
    assert refused.returncode == 2 and 'keys_file = "run/api-keys"' in refused.stderr, refused.stderr
    keys_file = stack.cfg.path.parent / "api-keys"
    try:
        stack.cfg.path.write_text(original + f'\n[auth]\nkeys_file = "{keys_file}"\n')
        added = command(stack, "service.keys", "add", "--label", "alice")
        assert added.returncode == 0, added.stderr
        key = added.stdout.strip()
        # The very next request, without a reload: the bound the README states.
        reply = parse(stack, page)
        assert reply.status == 401 and reply.json()["error"]["code"] == "missing_api_key", reply.body
        assert parse(stack, page, "not-a-key").json()["error"]["code"] == "invalid_api_key"
        assert parse(stack, page, key).status == 200
    finally:
        stack.cfg.path.write_text(original)
    assert parse(stack, page).status == 200
    log = (stack.layout.logs / f"uwsgi-{stack.cfg.instances[0].port}.log").read_text()
    assert "[auth] now requires API keys" in log and "[auth] now lets requests in without keys" in log


def test_broken_edit_keeps_keys_on(stack: Stack, page: bytes):
    """An edit that does not load (a typo) never opens a locked API: the settings in force stay."""
    original = stack.cfg.path.read_text()
    keys_file = stack.cfg.path.parent / "api-keys"
    try:
        stack.cfg.path.write_text(original + f'\n[auth]\nkeys_file = "{keys_file}"\n')
        assert parse(stack, page).status == 401
        stack.cfg.path.write_text(original + "\n[auth\n")
        assert parse(stack, page).status == 401
    finally:
        stack.cfg.path.write_text(original)
    assert parse(stack, page).status == 200


def test_make_run_on_a_running_stack_reloads(stack: Stack, page: bytes):
    inst = stack.cfg.instances[0]
    before = stack.worker_pids(inst)
    done = command(stack, "service.deploy", "up", "--run-dir", str(stack.run))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rolling reload" in done.stdout and f"instance {inst.port}: 1 worker(s) replaced" in done.stdout
    assert not set(stack.worker_pids(inst)) & set(before)
    assert parse(stack, page).status == 200


def test_make_run_names_what_needs_a_restart(stack: Stack, page: bytes):
    original = stack.cfg.path.read_text()
    try:
        stack.cfg.path.write_text(original.replace("processes = 1", "processes = 2"))
        done = command(stack, "service.deploy", "up", "--run-dir", str(stack.run))
        assert done.returncode == 0 and "make stop && make run" in done.stdout, done.stdout + done.stderr
        stack.cfg.path.write_text(original.replace(f"port = {stack.cfg.instances[0].port}", "port = 1"))
        done = command(stack, "service.deploy", "up", "--run-dir", str(stack.run))
        assert done.returncode == 0 and "`make stop && make run` starts what is declared" in done.stdout, done.stdout
    finally:
        stack.cfg.path.write_text(original)
    assert parse(stack, page).status == 200
