"""Hostile and broken requests through the real stack (Nginx -> uWSGI -> app) on loopback.

Two stacks, one worker each, so that the numbers are about one worker's capacity:
  - `keyed`: API keys on, generous rate: malformed requests, keys, overload, a stalled upload;
  - `limited`: keys off, 2 requests/s with a burst of 3, a 50 ms deadline: 429 and 504.
"""

from __future__ import annotations

import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from service.ops import deploy
from service.settings import ROOT
from tests.hostile import Reply, encoded, page, request, workers
from tests.stack import Stack, write_config
from tests.support import multipart, png_chunk, png_header

pytestmark = pytest.mark.stack


KEY = "test-key-for-the-hostile-stack"


ONE_WORKER = [{"processes": 1, "threads": 1}]


@pytest.fixture(scope="module")
def keyed(stack_factory) -> Stack:
    return stack_factory(ONE_WORKER, keys=(KEY,))


@pytest.fixture(scope="module")
def limited(stack_factory) -> Stack:
    return stack_factory(ONE_WORKER, rate=(2, 3), deadline_seconds=0.05)


def client_body_timeout_s() -> float:
    """Nginx's client_body_timeout, from the site file that sets it."""
    return float(re.search(r"client_body_timeout (\d+)s;", (ROOT / "conf/nginx/parse.conf").read_text())[1])


def addr(stack: Stack) -> tuple[str, int]:
    host, port = stack.cfg.nginx.listen.split(":")
    return host, int(port)


def post(stack: Stack, body: bytes, ctype: str | None, key: str | None = KEY, timeout: float = 60,
         query: str = "") -> Reply:
    headers = {"Content-Type": ctype} if ctype is not None else {}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return request(*addr(stack), "POST", "/v1/parse" + query, headers, body, timeout=timeout)


def assert_json_error(reply: Reply, status: int, code: str | None = None) -> dict:
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.headers.get("x-content-type-options") == "nosniff"
    error = reply.json()["error"]
    assert error["message"] and (code is None or error["code"] == code), error
    assert "Traceback" not in error["message"]
    return error


# --- malformed requests: each gets a 4xx JSON that says what to fix -----------------------------

def zero_png() -> bytes:
    return png_header(0, 10) + png_chunk(b"IDAT", zlib.compress(b"")) + png_chunk(b"IEND", b"")


def bomb_png() -> bytes:
    return png_header(60000, 60000, depth=1) + png_chunk(b"IDAT", zlib.compress(b"\0" * 100_000)) + png_chunk(b"IEND", b"")


MALFORMED = [
    # (name, body, content type, status, code, a word the message must contain)
    ("empty body", b"", "image/png", 400, "empty_body", "application/pdf"),
    ("misnamed field", *multipart([("upload", "a.png", encoded("PNG"), "image/png")]), 400, "missing_image", "upload"),
    ("no boundary", b"--x\r\n\r\n--x--\r\n", "multipart/form-data", 400, "missing_boundary", "boundary"),
    ("text as image", b"hello, I am not a picture" * 10, "image/png", 415, "unsupported_media_type", "application/pdf"),
    ("truncated png", encoded("PNG")[:120], "image/png", 400, "corrupt_image", "re-export"),
    ("zero-sized png", zero_png(), "image/png", 400, "corrupt_image", "zero-sized"),
    ("decompression bomb", bomb_png(), "image/png", 413, "image_too_large", "downscale"),
    ("page-less pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\n", "application/pdf", 400, "corrupt_pdf", "re-export"),
    ("spreadsheet", b"PK\x03\x04" + b"\0" * 200, "application/vnd.ms-excel", 415, "unsupported_media_type", "application/pdf"),
    ("too many files", *multipart([("image", f"{i}.png", encoded("PNG"), "image/png") for i in range(9)]),
     413, "too_many_images", "8"),
]


# The same refusals when the request also asks for its structure or for Markdown.
STRUCTURE_QUERIES = ("", "?structure=1", "?format=markdown")


@pytest.mark.parametrize("query", STRUCTURE_QUERIES)
@pytest.mark.parametrize("name,body,ctype,status,code,word", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_requests(keyed: Stack, name: str, body: bytes, ctype: str, status: int, code: str, word: str,
                            query: str) -> None:
    error = assert_json_error(post(keyed, body, ctype, query=query), status, code)
    assert word in error["message"], error


def test_body_over_limit_refused_by_nginx_before_upload(keyed: Stack) -> None:
    """Content-Length over max_body_bytes: Nginx answers 413 JSON from the header alone."""
    size = keyed.cfg.limits.max_body_bytes + 1
    head = (f"POST /v1/parse HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {size}\r\n"
            f"Authorization: Bearer {KEY}\r\nConnection: close\r\n\r\n").encode()
    reply = request(*addr(keyed), "POST", "/v1/parse", raw_head=head, timeout=10)
    assert_json_error(reply, 413, "payload_too_large")
    # No body was sent: had Nginx waited for it, the answer would be client_body_timeout's 408.
    assert reply.seconds < client_body_timeout_s() / 2, reply.seconds


def test_chunked_upload(keyed: Stack) -> None:
    """A body without Content-Length (chunked): Nginx buffers it and the app sees its real length."""
    image = encoded("PNG", page())
    body = f"{len(image):x}\r\n".encode() + image + b"\r\n0\r\n\r\n"
    head = (f"POST /v1/parse HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n"
            f"Authorization: Bearer {KEY}\r\nConnection: close\r\n\r\n").encode()
    reply = request(*addr(keyed), "POST", "/v1/parse", raw_head=head, body=body)
    assert reply.status == 200, reply.body[:300]
    empty = request(*addr(keyed), "POST", "/v1/parse", raw_head=head, body=b"0\r\n\r\n")
    assert_json_error(empty, 400, "empty_body")


def test_header_and_url_too_large(keyed: Stack) -> None:
    assert_json_error(request(*addr(keyed), "GET", "/healthz", {"X-Junk": "a" * 40_000}), 431, "header_too_large")
    assert_json_error(request(*addr(keyed), "GET", "/healthz?" + "a" * 40_000), 414, "uri_too_long")


def test_security_headers(keyed: Stack) -> None:
    reply = request(*addr(keyed), "GET", "/healthz")
    assert reply.status == 200 and reply.headers["server"] == "nginx"  # no version token
    assert reply.headers["x-content-type-options"] == "nosniff"
    csp = reply.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    home = request(*addr(keyed), "GET", "/")  # the page carries the same policy
    assert home.status == 200 and home.headers["content-security-policy"] == csp
    assert home.headers["x-content-type-options"] == "nosniff"
    missing = request(*addr(keyed), "GET", "/nope")
    assert_json_error(missing, 404)
    assert b"nginx/" not in missing.body


# --- keys ---------------------------------------------------------------------------------------

def test_keys_through_nginx(keyed: Stack) -> None:
    image = encoded("PNG", page())
    assert_json_error(post(keyed, image, "image/png", key=None), 401, "missing_api_key")
    wrong = post(keyed, image, "image/png", key="nope")
    assert_json_error(wrong, 401, "invalid_api_key")
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    assert post(keyed, image, "image/png").status == 200
    for path in ("/healthz", "/readyz", "/metrics"):  # open without a key (metrics: from loopback)
        assert request(*addr(keyed), "GET", path).status == 200, path


def test_keys_cli_takes_effect_without_restart(keyed: Stack) -> None:
    env = {**os.environ, "PARSE_CONFIG": str(keyed.cfg.path)}
    cli = [sys.executable, "-m", "service.keys"]
    new_key = subprocess.run([*cli, "add", "--label", "cli"], env=env, cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.strip()
    image = encoded("PNG", page())
    pids = keyed.worker_pids(keyed.cfg.instances[0])
    assert post(keyed, image, "image/png", key=new_key).status == 200
    subprocess.run([*cli, "revoke", "cli"], env=env, cwd=ROOT, check=True, capture_output=True)
    assert_json_error(post(keyed, image, "image/png", key=new_key), 401, "invalid_api_key")
    assert keyed.worker_pids(keyed.cfg.instances[0]) == pids  # same workers: no restart happened


# --- overload -----------------------------------------------------------------------------------

def test_overload_fast_503_and_accepted_requests_finish(keyed: Stack) -> None:
    """More concurrent requests than workers x (1 + queue): the excess gets a fast 503 JSON with
    Retry-After, and every request let in still finishes with 200."""
    inst = keyed.cfg.instances[0]
    capacity = deploy.max_conns(keyed.cfg, inst)
    total = capacity + 10
    # A tiny page: the queue must drain within Nginx's read timeout even on a loaded 2-core box.
    image = encoded("PNG", page((48, 20), "7"))
    barrier = threading.Barrier(total)

    def one(_: int) -> Reply:
        barrier.wait()
        return post(keyed, image, "image/png", timeout=120)

    with ThreadPoolExecutor(total) as pool:
        replies = list(pool.map(one, range(total)))
    rejected = [r for r in replies if r.status == 503]
    served = [r for r in replies if r.status != 503]
    latency_ms = sorted(r.seconds * 1000 for r in rejected)
    print(f"\noverload: {total} concurrent, capacity {capacity} (1 worker + listen {deploy.listen_queue(keyed.cfg, inst)}): "
          f"{len(served)} served, {len(rejected)} rejected; rejection latency ms "
          f"p50 {statistics.median(latency_ms):.1f} max {latency_ms[-1]:.1f}; "
          f"slowest served {max(r.seconds for r in served):.2f} s")
    assert all(r.status == 200 for r in served), [(r.status, r.body[:200]) for r in served if r.status != 200]
    assert len(rejected) >= total - capacity
    for r in rejected:
        assert_json_error(r, 503, "unavailable")
        assert int(r.headers["retry-after"]) > 0
    # Rejected at once, not after waiting for a worker: each refusal came back before the first
    # answer that needed a model call (an order, not a figure; `make bench` measures the latency).
    assert latency_ms[-1] < min(r.seconds for r in served) * 1000, (latency_ms, sorted(r.seconds for r in served))


# --- a stalled upload: cut off by Nginx, no worker held -----------------------------------------

def test_stalled_upload_is_cut_off_without_holding_a_worker(keyed: Stack) -> None:
    """Nginx buffers bodies: a client that stops sending mid-body never reaches a worker, which
    keeps serving; after client_body_timeout Nginx closes the connection (it writes no answer on
    a read timeout; the access log records 408)."""
    host, port = addr(keyed)
    sock = socket.create_connection((host, port), timeout=60)
    try:
        sock.sendall(b"POST /v1/parse HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n"
                     + f"Authorization: Bearer {KEY}\r\n\r\n".encode() + b"\x89PNG")
        start = time.monotonic()
        assert post(keyed, encoded("PNG", page()), "image/png").status == 200  # the worker is free
        data = sock.recv(65536)
        waited = time.monotonic() - start
    finally:
        sock.close()
    assert waited < client_body_timeout_s() + 10 and (data == b"" or data.startswith(b"HTTP/1.1 408")), (waited, data[:100])
    log = (keyed.layout.logs / "access.json").read_text()
    # Complete lines only: Nginx may be writing the next entry.
    assert any(json.loads(line)["status"] == 408 for line in log[:log.rfind("\n") + 1].splitlines())


# --- rate limit, keys off, deadline -------------------------------------------------------------

def test_keys_off_parse_needs_no_key(limited: Stack) -> None:
    error = assert_json_error(post(limited, b"", "image/png", key=None), 400, "empty_body")
    assert "image" in error["message"]


def test_rate_limit_429_with_retry_after(limited: Stack) -> None:
    time.sleep(1.0)  # refill the bucket after the other tests' requests
    replies = [request(*addr(limited), "GET", "/v1/models") for _ in range(8)]
    statuses = [r.status for r in replies]
    assert statuses[:3].count(429) == 0 and 429 in statuses, statuses
    for r in replies:
        if r.status == 429:
            assert_json_error(r, 429, "rate_limited")
            assert int(r.headers["retry-after"]) >= 1
    assert request(*addr(limited), "GET", "/healthz").status == 200  # health is not rate-limited


def test_deadline_504_and_the_worker_lives(limited: Stack) -> None:
    """A 50 ms deadline is over by the end of the model call: 504 JSON, same worker, no respawn."""
    time.sleep(2.0)
    before = workers(limited.stats_ports())
    reply = post(limited, encoded("PNG", page((400, 120), "Deadline test 123")), "image/png", key=None)
    error = assert_json_error(reply, 504, "deadline_exceeded")
    assert "deadline" in error["message"]
    time.sleep(0.6)
    assert request(*addr(limited), "GET", "/healthz").status == 200
    after = workers(limited.stats_ports())
    assert {k: (v["pid"], v["respawn_count"]) for k, v in after.items()} == \
        {k: (v["pid"], v["respawn_count"]) for k, v in before.items()}


# --- the rendered Nginx pieces (no stack needed) ------------------------------------------------

def test_rendered_rate_limits_and_max_conns(tmp_path: Path) -> None:
    """Per-client and per-key rates always (keys turn on without a reload); max_conns = workers + listen queue."""
    for name in ("off", "on"):
        (tmp_path / name).mkdir()
    off = write_config(tmp_path / "off", ONE_WORKER)
    assert "limit_req zone=parse_per_key burst=" in deploy.nginx_limit_req(off)
    on = write_config(tmp_path / "on", ONE_WORKER, keys=(KEY,), rate=(7, 9))
    http_conf, limit_conf = deploy.nginx_http(on), deploy.nginx_limit_req(on)
    assert "limit_req_zone $http_authorization zone=parse_per_key:10m rate=7r/s;" in http_conf
    assert "limit_req zone=parse_per_key burst=9 nodelay;" in limit_conf
    assert "limit_req zone=parse_per_client burst=9 nodelay;" in limit_conf
    inst = on.instances[0]
    assert f"max_conns={inst.processes + deploy.listen_queue(on, inst)};" in http_conf
    assert "zone parse_instances" in http_conf
