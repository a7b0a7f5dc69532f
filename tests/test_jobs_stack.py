"""Jobs on the real stack: two uWSGI instances (one worker and one coordinator mule each) behind Nginx.

API keys are on for the whole module, so every page a coordinator posts goes through the same
auth as a client's, with the internal key from the store. A job here is several single-image files, each
file one page: /v1/parse in this branch reads the first frame of a TIFF only, so multi-page TIFFs
are counted (tests/test_jobs_store.py) but not read page by page until ?pages=K selects them.
"""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import statistics
import subprocess
import time

import pikepdf
import pytest

from tests import pdfs
from tests.formats_check import pdftotext
from tests.stack import Response, Stack, http
from tests.support import multipart, png

pytestmark = pytest.mark.stack

KEY_A, KEY_B = "key-a-" + "x" * 20, "key-b-" + "y" * 20
TTL_SECONDS = 25


@pytest.fixture(scope="module")
def stack(stack_factory) -> Stack:
    extra = (f"[jobs]\nttl_seconds = {TTL_SECONDS}\nlease_seconds = 10\nworkers = 1\nmax_running = 1\nmax_waiting = 3\n")
    return stack_factory([{"processes": 1}, {"processes": 1}], deadline_seconds=60, keys=(KEY_A, KEY_B), extra=extra)


@pytest.fixture(scope="module")
def pages(render) -> list[bytes]:
    return [png(render([f"Page {n} of the report", f"Total {n}.50"])) for n in range(1, 7)]


def pdftotext_of(document: bytes, tmp_path) -> str:
    path = tmp_path / "doc.pdf"
    path.write_bytes(document)
    return subprocess.run([pdftotext(), str(path), "-"], check=True, capture_output=True, text=True).stdout


def call(stack: Stack, method: str, path: str, key: str = KEY_A, body: bytes | None = None,
         content_type: str | None = None) -> Response:
    return http(stack.url + path, body, content_type, headers={"Authorization": f"Bearer {key}"}, method=method)


def submit(stack: Stack, files: list[bytes], key: str = KEY_A) -> str:
    body, ctype = multipart([("image", f"page{n}.png", f, "image/png") for n, f in enumerate(files)])
    r = call(stack, "POST", "/v1/jobs", key, body, ctype)
    assert r.status == 202, r.body
    assert r.headers["Location"] == f"/v1/jobs/{r.json()['id']}"
    assert r.json()["status"] == "queued" and r.json()["pages_total"] == len(files)
    return r.json()["id"]


def wait_for(stack: Stack, job_id: str, until, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = call(stack, "GET", f"/v1/jobs/{job_id}")
        if r.status == 200 and until(r.json()):
            return r.json()
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} never reached the state wanted: {r.status} {r.body!r}")


def done(stack: Stack, job_id: str) -> dict:
    status = wait_for(stack, job_id, lambda j: j["status"] in ("done", "failed", "cancelled"))
    assert status["status"] == "done", status
    r = call(stack, "GET", f"/v1/jobs/{job_id}/result")
    assert r.status == 200, r.body
    return r.json()


def texts(body: dict) -> list[str]:
    return [image["text"] for image in body["images"]]


@pytest.fixture(scope="module")
def sync_texts(stack: Stack, pages: list[bytes]) -> list[str]:
    body, ctype = multipart([("image", f"page{n}.png", f, "image/png") for n, f in enumerate(pages)])
    r = call(stack, "POST", "/v1/parse", KEY_A, body, ctype)
    assert r.status == 200, r.body
    return texts(r.json())


def store_rows(stack: Stack, sql: str, *params) -> list[tuple]:
    """Rows of the stack's store: SQLite in [jobs] dir, on one host."""
    db = sqlite3.connect(stack.cfg.jobs.db)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def page_rows(stack: Stack, job_id: str) -> list[tuple[int, int]]:
    return store_rows(stack, "SELECT idx, done FROM job_page WHERE job_id = ? ORDER BY idx", job_id)


def upload_gone(stack: Stack, job_id: str) -> bool:
    return store_rows(stack, "SELECT count(*) FROM job_upload WHERE job_id = ?", job_id) == [(0,)]


def test_job_gives_what_the_synchronous_call_gives(stack: Stack, pages: list[bytes], sync_texts: list[str]):
    job_id = submit(stack, pages)
    body = done(stack, job_id)
    assert texts(body) == sync_texts
    assert "Page 3" in body["images"][2]["text"]
    assert set(body) == {"request_id", "model", "images", "timing_ms"}
    status = call(stack, "GET", f"/v1/jobs/{job_id}").json()
    assert status["pages_done"] == status["pages_total"] == 6 and status["finished"] and status["error"] is None
    # Its pages were read through Nginx by the workers of both instances, each log line with the job id.
    logs = "".join(p.read_text() for p in stack.layout.logs.glob("uwsgi-*.log"))
    assert f"job={job_id} submitted" in logs and f"job={job_id} done" in logs
    # The metrics see the store and the coordinators' observations.
    metrics = http(stack.url + "/metrics").body.decode()
    assert 'parse_jobs{status="done"}' in metrics and "parse_job_pages_waiting" in metrics
    assert 'parse_job_seconds_count{status="done"}' in metrics


def test_a_pdf_job_reads_each_page_as_the_synchronous_call_does(stack: Stack, render, tmp_path):
    """A 6-page scanned PDF: each page is posted as a one-page PDF of its own, and the result is
    the synchronous call's, page for page; ?format=text renders the assembled result, and
    ?format=pdf the upload itself with a text layer."""
    scans = [render([f"Scan page {n}", f"Amount {n}.25"]) for n in range(1, 7)]
    document = pdfs.scanned_pdf(scans, resolution=200)
    body, ctype = multipart([("image", "scan.pdf", document, "application/pdf")])
    sync = call(stack, "POST", "/v1/parse?dpi=200", KEY_A, body, ctype)
    assert sync.status == 200, sync.body
    r = call(stack, "POST", "/v1/jobs?dpi=200", KEY_A, body, ctype)
    assert r.status == 202 and r.json()["pages_total"] == 6, r.body
    result = done(stack, r.json()["id"])
    assert [(i["file"], i["page"], i["dpi"]) for i in result["images"]] == [(0, n, 200) for n in range(1, 7)]
    assert texts(result) == texts(sync.json())
    text = call(stack, "GET", f"/v1/jobs/{r.json()['id']}/result?format=text")
    assert text.status == 200 and text.headers["Content-Type"].startswith("text/plain"), text.body[:200]
    assert text.body.decode().count("\f") == 5 and "Scan page 6" in text.body.decode()
    # The searchable PDF is the job's upload with text added: each page's image is the same object.
    searchable = call(stack, "GET", f"/v1/jobs/{r.json()['id']}/result?format=pdf")
    assert searchable.status == 200 and searchable.headers["Content-Type"] == "application/pdf", searchable.body[:200]
    before, after = pikepdf.open(io.BytesIO(document)), pikepdf.open(io.BytesIO(searchable.body))
    for page_in, page_out in zip(before.pages, after.pages, strict=True):
        assert [x.read_raw_bytes() for x in page_out.obj.Resources.XObject.values()] == \
            [x.read_raw_bytes() for x in page_in.obj.Resources.XObject.values()]
    assert len(searchable.body) <= len(document) * 1.1 + 20_000 * 6
    assert "Amount 6.25" in pdftotext_of(searchable.body, tmp_path)


def test_errors_are_json(stack: Stack, pages: list[bytes]):
    unknown = call(stack, "GET", "/v1/jobs/" + "A" * 22)
    assert unknown.status == 404 and unknown.json()["error"]["code"] == "job_not_found"
    job_id = submit(stack, pages)
    early = call(stack, "GET", f"/v1/jobs/{job_id}/result")
    assert early.status == 409 and early.json()["error"]["code"] == "job_not_done"
    # Another key: the job does not exist for it, whichever route it tries.
    for method, path in (("GET", f"/v1/jobs/{job_id}"), ("GET", f"/v1/jobs/{job_id}/result"),
                         ("DELETE", f"/v1/jobs/{job_id}")):
        other = call(stack, method, path, key=KEY_B)
        assert other.status == 404 and other.json()["error"]["code"] == "job_not_found", (method, path)
    no_key = http(stack.url + f"/v1/jobs/{job_id}")
    assert no_key.status == 401
    bad = call(stack, "POST", "/v1/jobs", body=b"not an image", content_type="image/png")
    assert bad.status == 415 and bad.json()["error"]["code"] == "unsupported_media_type"
    # Cancelled: visible as such, its upload gone, and its result never comes.
    cancelled = call(stack, "DELETE", f"/v1/jobs/{job_id}")
    assert cancelled.status == 200 and cancelled.json()["status"] == "cancelled"
    assert upload_gone(stack, job_id)
    assert call(stack, "GET", f"/v1/jobs/{job_id}/result").status == 409


def test_worker_and_coordinator_killed_mid_job(stack: Stack, pages: list[bytes], sync_texts: list[str]):
    job_id = submit(stack, pages)
    wait_for(stack, job_id, lambda j: j["pages_done"] >= 1)
    for inst in stack.cfg.instances:  # the worker of each instance, then a mule holding a page
        for pid in stack.worker_pids(inst)[:1]:
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while not (held := store_rows(stack, "SELECT lease_owner FROM job_page WHERE job_id = ? AND done = 0 "
                                         "AND lease_owner IS NOT NULL", job_id)):
        assert time.monotonic() < deadline, "no page of the job was claimed within 60 s"
        time.sleep(0.05)
    os.kill(int(held[0][0].rpartition(":")[2]), signal.SIGKILL)
    body = done(stack, job_id)
    assert texts(body) == sync_texts
    assert page_rows(stack, job_id) == [(i, 1) for i in range(6)]


def test_full_stop_and_start_mid_job(stack: Stack, pages: list[bytes], sync_texts: list[str]):
    job_id = submit(stack, pages)
    wait_for(stack, job_id, lambda j: j["pages_done"] >= 1)
    stack.stop()  # make stop: Nginx, then every instance, by PID
    stack.start()  # make run
    body = done(stack, job_id)
    assert texts(body) == sync_texts
    assert call(stack, "GET", f"/v1/jobs/{job_id}").json()["pages_done"] == 6


def test_interactive_latency_beside_a_long_job(stack: Stack, pages: list[bytes]):
    """A single image's latency while a 30-page job runs, against the idle stack's (printed).

    The job holds one worker of the two ([jobs] workers = 1); an interactive request that Nginx's
    round-robin sends to that worker waits at most one page, so its latency stays near the idle
    one's, at worst about twice it. Asserted at 3x: the two cores are shared with other work."""
    def latencies(n: int) -> list[float]:
        out = []
        for i in range(n):
            start = time.perf_counter()
            r = call(stack, "POST", "/v1/parse", body=pages[i % 6], content_type="image/png")
            assert r.status == 200, r.body
            out.append(time.perf_counter() - start)
        return out

    idle = statistics.median(latencies(6))
    job_id = submit(stack, pages * 5)
    wait_for(stack, job_id, lambda j: j["status"] == "running")
    busy = statistics.median(latencies(6))
    still_running = call(stack, "GET", f"/v1/jobs/{job_id}").json()
    print(f"\ninteractive median latency: idle {idle * 1000:.0f} ms, beside a 30-page job {busy * 1000:.0f} ms "
          f"({busy / idle:.2f}x); the job had read {still_running['pages_done']} pages")
    assert still_running["status"] == "running"
    assert busy < 3 * idle
    assert call(stack, "DELETE", f"/v1/jobs/{job_id}").json()["status"] == "cancelled"


def test_finished_jobs_expire(stack: Stack, pages: list[bytes]):
    job_id = submit(stack, pages[:1])
    done(stack, job_id)
    deadline = time.monotonic() + TTL_SECONDS + 30
    while time.monotonic() < deadline:
        if call(stack, "GET", f"/v1/jobs/{job_id}").status == 404:
            break
        time.sleep(1)
    r = call(stack, "GET", f"/v1/jobs/{job_id}")
    assert r.status == 404, r.body
    assert upload_gone(stack, job_id) and not page_rows(stack, job_id)
