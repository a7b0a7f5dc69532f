"""The serving stack with real processes on loopback: Nginx -> weighted uWSGI instances -> models.

One stack for the module (its startup is the costly part): instance A with weight 3 and two
workers, instance B with weight 1 and one. The tests run in file order; the last ones stop B.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pikepdf
import pytest
from PIL import Image

from service.ops import deploy
from tests import pdfs
from tests.formats_check import pdftotext
from tests.stack import Response, Stack, http
from tests.support import multipart, png, sha256sums, words

pytestmark = pytest.mark.stack


LINES = ["Invoice 2024", "Total 42.50"]


@pytest.fixture(scope="module")
def stack(stack_factory) -> Stack:
    # A long deadline (harakiri 70 s): two shared cores may be busy with other work.
    return stack_factory([{"weight": 3, "processes": 2}, {"weight": 1, "processes": 1}], deadline_seconds=60)


@pytest.fixture(scope="module")
def page(render) -> bytes:
    return png(render(LINES))


@pytest.fixture(scope="module")
def word(render) -> bytes:
    """The smallest useful image: one word."""
    return png(render(["parse"], size=20, margin=8))


@pytest.fixture(scope="module")
def slow_page(render) -> bytes:
    """Enough lines that a request stays in flight for a while (graceful-stop test)."""
    return png(render([f"Line {i} of the slow page" for i in range(4)]))


def test_parse_through_nginx(stack: Stack, page: bytes):
    r = stack.parse(page)
    assert r.status == 200, r.body
    body = r.json()
    assert set(body) == {"request_id", "model", "images", "timing_ms"}
    assert body["request_id"] == r.headers["X-Request-ID"]
    assert r.upstream in {stack.addr(i) for i in stack.cfg.instances}
    assert set(body["model"]) == {"name", "version", "weights_sha256"}
    # The sums the worker computed from the files it loaded: the ones weights/SHA256SUMS pins.
    assert len(body["model"]["weights_sha256"]) >= 2  # at least a detector and a recognizer
    assert body["model"]["weights_sha256"].items() <= sha256sums().items()
    assert set(body["timing_ms"]) == {"decode", "detect", "recognize", "total"}
    assert body["timing_ms"]["total"] >= body["timing_ms"]["detect"] + body["timing_ms"]["recognize"]
    [image] = body["images"]
    assert (image["width"], image["height"]) == Image.open(io.BytesIO(page)).size
    assert len(image["lines"]) == len(LINES)
    assert image["text"] == "\n".join(line["text"] for line in image["lines"])
    assert {"invoice", "2024", "total", "42.50"} <= words(image["text"])
    for line in image["lines"]:
        assert 0 <= line["confidence"] <= 1 and len(line["quad"]) == 4


def test_multipart_fields(stack: Stack, page: bytes, word: bytes):
    body, ctype = multipart([("image", "page.png", page, "image/png"), ("image", "word.png", word, "image/png"),
                                ("file", "word.png", word, "image/png")])
    r = http(stack.url + "/v1/parse", body, ctype)
    assert r.status == 200, r.body
    images = r.json()["images"]
    assert len(images) == 3
    assert "invoice" in words(images[0]["text"]) and "parse" in words(images[1]["text"])


def test_searchable_pdf_through_nginx(stack: Stack, render, tmp_path):
    """A scripted PDF of a vector page and a scan: the answer is the upload, scripts gone, the
    vector page as it was, the scan's image the same bytes, and the scan's words extractable."""
    doc = pikepdf.open(io.BytesIO(pdfs.mixed_pdf(["Vector page"], render(LINES))))
    doc.Root.OpenAction = doc.make_indirect(pikepdf.Dictionary(S=pikepdf.Name.JavaScript, JS=pikepdf.String("app.alert(1)")))
    buf = io.BytesIO()
    doc.save(buf)
    doc = pikepdf.open(io.BytesIO(buf.getvalue()))  # as uploaded: saving rewrote its streams
    r = http(stack.url + "/v1/parse?format=pdf", *multipart([("image", "doc.pdf", buf.getvalue(), "application/pdf")]))
    assert r.status == 200 and r.headers["Content-Type"] == "application/pdf", r.body[:300]
    out = pikepdf.open(io.BytesIO(r.body))
    assert "/OpenAction" not in out.Root and b"app.alert" not in r.body
    assert out.pages[0].obj.Contents.read_raw_bytes() == doc.pages[0].obj.Contents.read_raw_bytes()
    assert [x.read_raw_bytes() for x in out.pages[1].obj.Resources.XObject.values()] == \
        [x.read_raw_bytes() for x in doc.pages[1].obj.Resources.XObject.values()]
    (tmp_path / "out.pdf").write_bytes(r.body)
    text = subprocess.run([pdftotext(), str(tmp_path / "out.pdf"), "-"], capture_output=True, text=True).stdout
    assert {"invoice", "2024", "total", "42.50"} <= words(text.split("\f")[1])


def test_errors_are_json(stack: Stack, page: bytes):
    cases = [
        (http(stack.url + "/v1/parse", b"hello", "text/plain"), 415, "unsupported_media_type"),
        (http(stack.url + "/v1/parse", *multipart([("other", "page.png", page, "image/png")])), 400, "missing_image"),
        (http(stack.url + "/nowhere"), 404, "not_found"),
        # Nginx refuses it before any instance sees it.
        (http(stack.url + "/v1/parse", b"\0" * (stack.cfg.limits.max_body_bytes + 1), "image/png"), 413,
         "payload_too_large"),
    ]
    for r, status, code in cases:
        assert (r.status, r.json()["error"]["code"]) == (status, code), r.body
        assert r.headers["Content-Type"].startswith("application/json")
        assert r.headers["X-Request-ID"]


def test_health_models_openapi(stack: Stack):
    assert http(stack.url + "/healthz").json()["status"] == "ok"
    ready = http(stack.url + "/readyz").json()
    assert ready["status"] == "ready" and ready["instance"]["workers_ready"] == ready["instance"]["workers"]
    models = http(stack.url + "/v1/models").json()
    assert models["family"] == stack.cfg.model.family and models["device"] == "cpu"
    assert models["instance"]["port"] in {i.port for i in stack.cfg.instances}
    doc = http(stack.url + "/openapi.json").json()
    assert {"/v1/parse", "/v1/models", "/healthz", "/readyz", "/metrics", "/openapi.json"} <= set(doc["paths"])


def test_weights_spread_requests(stack: Stack):
    """100 API requests (GET /v1/models: the same location and upstream as /v1/parse, without the
    OCR cost) land on the instances in proportion to their weights."""
    counts = {stack.addr(i): 0 for i in stack.cfg.instances}
    for _ in range(100):
        r = http(stack.url + "/v1/models")
        assert r.status == 200, r.body
        # The instance that answered says so itself, and Nginx agrees.
        assert r.upstream == f"127.0.0.1:{r.json()['instance']['port']}"
        counts[r.upstream] += 1
    total_weight = sum(i.weight for i in stack.cfg.instances)
    for inst in stack.cfg.instances:
        expected = 100 * inst.weight / total_weight
        assert abs(counts[stack.addr(inst)] - expected) <= 2, counts


def test_metrics_sum_every_worker(stack: Stack, word: bytes):
    before = http(stack.url + "/metrics").body.decode()
    assert stack.parse(word).status == 200
    text = http(stack.url + "/metrics").body.decode()

    def value(metrics: str, name: str) -> float:
        return sum(float(m) for m in re.findall(rf"^{re.escape(name)} (\S+)$", metrics, re.M))

    for inst in stack.cfg.instances:
        assert value(text, f'parse_worker_ready{{instance="{inst.port}"}}') == inst.processes
    # Whichever worker answered the scrape, the sum covers the request another one served.
    route = 'parse_requests_total{route="/v1/parse",status="200"}'
    assert value(text, route) == value(before, route) + 1
    assert value(text, "parse_images_total") >= 2
    # Each successful parse observes every stage once.
    assert value(text, 'parse_stage_seconds_count{stage="total"}') == value(text, route)
    assert value(text, "parse_model_load_seconds_count") >= 3


def burst(stack: Stack, image: bytes, n: int, concurrency: int, during=None) -> list[Response]:
    """n parse requests at `concurrency`; `during()` runs once the first requests are in flight."""
    with ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(stack.parse, image) for _ in range(n)]
        if during is not None:
            during()
        return [f.result() for f in futures]


def test_kill9_worker_during_burst(stack: Stack, page: bytes, word: bytes):
    a = stack.cfg.instances[0]
    victim = stack.worker_pids(a)[0]

    def kill():
        time.sleep(0.5)
        os.kill(victim, signal.SIGKILL)

    results = burst(stack, page, 12, 4, kill)
    assert [r.status for r in results] == [200] * 12, [r.body for r in results if r.status != 200]
    assert all("invoice" in words(r.json()["images"][0]["text"]) for r in results)
    # uWSGI respawned the worker; the instance comes back to full readiness ...
    stack.wait_ready(a)
    assert victim not in stack.worker_pids(a)
    assert http(stack.url + "/metrics").body.decode().count(f'parse_worker_ready{{instance="{a.port}"}} 2.0') == 1
    # ... and Nginx, which counted its failures (max_fails), sends it requests again after fail_timeout.
    deadline = time.monotonic() + deploy.FAIL_TIMEOUT_S + 20
    while stack.parse(word).headers["X-Upstream"] != stack.addr(a):
        assert time.monotonic() < deadline, "Nginx did not take instance A back"
        time.sleep(0.5)


def test_graceful_stop_loses_nothing_in_flight(stack: Stack, slow_page: bytes):
    """SIGTERM to instance B while it serves: what it had in flight finishes there, the rest goes to A."""
    a, b = stack.cfg.instances
    b_pid = stack.master_pid(b)
    stopped = threading.Event()
    stop_result: list[bool] = []

    def stop_b_while_busy():
        stack.wait_busy(b)
        stopped.set()
        stop_result.append(deploy.stop_pid(b_pid, signal.SIGTERM, 60))

    results = burst(stack, slow_page, 8, 4, stop_b_while_busy)
    assert stopped.is_set() and stop_result == [True], "B did not exit by itself after SIGTERM"
    assert [r.status for r in results] == [200] * 8, [r.body for r in results if r.status != 200]
    # At least one request was in flight on B when it got SIGTERM, and B itself answered it.
    served_by_b_alone = [r for r in results if r.headers["X-Upstream"] == stack.addr(b)]
    assert served_by_b_alone
    assert all("slow" in words(r.json()["images"][0]["text"]) for r in results)


def test_one_instance_stopped_all_served_by_other(stack: Stack, word: bytes):
    a, b = stack.cfg.instances
    assert not deploy.pid_alive(stack.master_pid(b))  # stopped by the test above
    results = [stack.parse(word) for _ in range(12)]
    assert [r.status for r in results] == [200] * 12
    assert {r.upstream for r in results} == {stack.addr(a)}
