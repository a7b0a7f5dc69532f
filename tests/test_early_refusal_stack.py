"""Requests refused before their body is read, through the real stack (Nginx -> uWSGI -> app).

Nginx passes a body on only after it has buffered it whole; an app that answers before reading it
must still take it off the socket, or uWSGI closes the connection under Nginx's write, Nginx counts
the instance as failed (502), retries another and at last answers 503. Each refusal here must be
the client's own 4xx, answered by the first instance tried, with one upstream status in the log.
"""

from __future__ import annotations

import io
import json
import os
import re
import time

import pytest
from PIL import Image

from service.settings import ROOT
from service.web import openapi
from tests.hostile import Reply, request
from tests.stack import Stack

pytestmark = pytest.mark.stack

KEY = "test-key-for-early-refusals"
TRIES = 10


@pytest.fixture(scope="module")
def stack(stack_factory) -> Stack:
    # Two instances: a request whose first instance failed would be retried on the other.
    return stack_factory([{"processes": 1, "threads": 1}] * 2, keys=(KEY,))


def post(stack: Stack, path: str, body: bytes, ctype: str, key: str | None = KEY) -> Reply:
    host, port = stack.cfg.nginx.listen.split(":")
    headers = {"Content-Type": ctype, **({"Authorization": f"Bearer {key}"} if key else {})}
    return request(host, int(port), "POST", path, headers, body, timeout=60)


def log_entries(stack: Stack, ids: set[str]) -> dict[str, dict]:
    """The access log's entries for these request ids (Nginx writes each once its answer is sent)."""
    deadline = time.monotonic() + 10
    while True:
        text = (stack.layout.logs / "access.json").read_text()
        lines = text[:text.rfind("\n") + 1].splitlines()  # complete lines only
        found = {e["request_id"]: e for e in map(json.loads, lines) if e["request_id"] in ids}
        if len(found) == len(ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


CASES = {
    # name: path, body, Content-Type, status, code
    "text_4mb": ("/v1/parse", b"word " * (4 << 18), "text/plain", 415, "unsupported_media_type"),
    "pdf_5mb_dpi": ("/v1/parse?dpi=5", b"%PDF-1.7\n" + os.urandom(5 << 20), "application/pdf", 400, "invalid_dpi"),
    "pdf_5mb_xml": ("/v1/parse?format=xml", b"%PDF-1.7\n" + os.urandom(5 << 20), "application/pdf", 400,
                    "invalid_format"),
    "pdf_5mb_annotate": ("/v1/parse?annotate=yes", b"%PDF-1.7\n" + os.urandom(5 << 20), "application/pdf", 400,
                         "invalid_annotate"),
    "job_5mb_words": ("/v1/jobs?words=true", b"%PDF-1.7\n" + os.urandom(5 << 20), "application/pdf", 400,
                      "invalid_words"),
    "job_5mb_xml": ("/v1/jobs?format=xml", b"%PDF-1.7\n" + os.urandom(5 << 20), "application/pdf", 400,
                    "invalid_format"),
}


@pytest.mark.parametrize("name", CASES)
def test_early_refusal_of_a_large_body_is_its_own_4xx(stack: Stack, name: str) -> None:
    path, body, ctype, status, code = CASES[name]
    replies = [post(stack, path, body, ctype) for _ in range(TRIES)]
    assert [r.status for r in replies] == [status] * TRIES, [(r.status, r.body[:200]) for r in replies]
    assert {r.json()["error"]["code"] for r in replies} == {code}
    entries = log_entries(stack, {r.headers["x-request-id"] for r in replies})
    assert len(entries) == TRIES
    # One instance tried, and it answered the 4xx itself: no 502 and no retry.
    assert {e["upstream_status"] for e in entries.values()} == {str(status)}, list(entries.values())


def test_refused_key_with_a_large_body_is_401(stack: Stack) -> None:
    replies = [post(stack, "/v1/parse", b"%PDF-1.7\n" + os.urandom(5 << 20), "application/pdf", key="wrong")
               for _ in range(3)]
    assert [r.status for r in replies] == [401] * 3, [(r.status, r.body[:200]) for r in replies]
    entries = log_entries(stack, {r.headers["x-request-id"] for r in replies})
    assert {e["upstream_status"] for e in entries.values()} == {"401"}


def test_deleting_a_finished_job_says_deleted(stack: Stack, render) -> None:
    """The README's job statuses include the one DELETE answers for a finished job."""
    buf = io.BytesIO()
    Image.fromarray(render(["Invoice 7"])).save(buf, format="PNG")
    job = post(stack, "/v1/jobs", buf.getvalue(), "image/png").json()
    deadline = time.monotonic() + 120
    while (status := get(stack, "GET", f"/v1/jobs/{job['id']}").json()["status"]) != "done":
        assert status in ("queued", "running") and time.monotonic() < deadline, status
        time.sleep(0.2)
    assert get(stack, "DELETE", f"/v1/jobs/{job['id']}").json()["status"] == "deleted"
    assert get(stack, "GET", f"/v1/jobs/{job['id']}").status == 404
    readme = (ROOT / "README.md").read_text()
    said = " ".join(line.partition("# status ")[2] for line in readme.splitlines()
                    if "/v1/jobs/" in line and "# status " in line)
    statuses = set(openapi.SCHEMAS["Job"]["properties"]["status"]["enum"])
    assert statuses <= set(re.findall(r"[a-z]+", said)), said


def get(stack: Stack, method: str, path: str) -> Reply:
    host, port = stack.cfg.nginx.listen.split(":")
    return request(host, int(port), method, path, {"Authorization": f"Bearer {KEY}"}, timeout=60)
