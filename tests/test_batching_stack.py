"""Batching across requests on the real stack: one instance whose worker runs 4 request threads
and one inference thread (batch_pages = 4), behind Nginx. Concurrent clients each get the reading
of their own page, a PDF's or TIFF's pages share model calls with each other and with other
requests' pages, a job's pages (one request each) too, and the pages met in shared model calls."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from service.ops import deploy
from tests import pdfs
from tests.stack import Response, Stack, http
from tests.support import multipart, png

pytestmark = pytest.mark.stack

BATCH = 4
# Pages of one document; a job's pages in flight at once.
DOCUMENT_PAGES = 4
JOB_WORKERS = 3


@pytest.fixture(scope="module")
def stack(stack_factory) -> Stack:
    return stack_factory([{"processes": 1, "batch_pages": BATCH, "batch_wait_ms": 300}],
                         extra=f"[jobs]\nworkers = {JOB_WORKERS}\n")


def batch_counts(stack: Stack) -> tuple[float, float]:
    """(pages read by the model, of which read alone) so far, from parse_batch_pages."""
    metrics = http(stack.url + "/metrics").body.decode()
    family = next(f for f in text_string_to_metric_families(metrics) if f.name == "parse_batch_pages")
    samples = {s.name: s.value for s in family.samples if s.labels.get("le") in (None, "1.0")}
    return samples["parse_batch_pages_count"], samples["parse_batch_pages_bucket"]


def test_threads_and_admission_follow_batch_pages(stack: Stack):
    inst = stack.cfg.instances[0]
    stats = stack.stats(inst)
    assert len(stats["workers"][0]["cores"]) == BATCH  # uWSGI's request threads
    models = http(stack.url + "/v1/models").json()
    assert models["instance"]["batch_pages"] == BATCH
    # Each thread is a request in flight: Nginx admits them all beside the listen queue.
    assert deploy.max_conns(stack.cfg, inst) == BATCH + deploy.listen_queue(stack.cfg, inst)


def test_concurrent_requests_each_get_their_own_page(stack: Stack, render):
    texts = [f"Order {n:03d} paid" for n in range(12)]
    bodies = [png(render([t, f"Table {n}"])) for n, t in enumerate(texts)]
    with ThreadPoolExecutor(len(bodies)) as pool:
        replies = list(pool.map(stack.parse, bodies))
    for text, n, reply in zip(texts, range(len(texts)), replies):
        assert reply.status == 200, reply.body[:300]
        got = [line["text"] for line in reply.json()["images"][0]["lines"]]
        assert got == [text, f"Table {n}"]
        assert reply.json()["timing_ms"]["batch_wait"] >= 0
    count, alone = batch_counts(stack)
    assert count >= len(bodies)
    # Some pages shared a model call (le=1 counts the pages read alone).
    assert alone < count


@pytest.fixture(scope="module")
def uploads(render) -> dict[str, tuple[bytes, str]]:
    """One document as a scanned PDF and as a multi-page TIFF."""
    scans = [render([f"Page {n} of the statement", f"Balance {n}0.75"]) for n in range(1, DOCUMENT_PAGES + 1)]
    return {"pdf": (pdfs.scanned_pdf(scans, resolution=200), "application/pdf"),
            "tiff": (pdfs.multipage_tiff([Image.fromarray(s) for s in scans]), "image/tiff")}


def post(stack: Stack, data: bytes, content_type: str, query: str = "") -> list[dict]:
    reply = http(f"{stack.url}/v1/parse?dpi=200&words=1{query}", data, content_type)
    assert reply.status == 200, reply.body[:300]
    return reply.json()["images"]


def same_json(alone: dict, batched: dict) -> None:
    """One page's answer alone and among others: tests/test_batching.py's standard, on the JSON."""
    assert [line["text"] for line in alone["lines"]] == [line["text"] for line in batched["lines"]]
    assert [line["quad"] for line in alone["lines"]] == [line["quad"] for line in batched["lines"]]
    assert ([[w["text"] for w in line["words"]] for line in alone["lines"]]
            == [[w["text"] for w in line["words"]] for line in batched["lines"]])
    assert ([line["confidence"] for line in alone["lines"]]
            == pytest.approx([line["confidence"] for line in batched["lines"]], abs=2e-4))
    assert (alone["width"], alone["height"], alone["page"]) == (batched["width"], batched["height"], batched["page"])


@pytest.mark.parametrize("kind", ["pdf", "tiff"])
def test_a_documents_pages_share_model_calls(stack: Stack, uploads, render, kind: str):
    """A PDF's or TIFF's pages in one request go to the model together, alone and beside other
    requests, and each gets the answer it gets as a request of its own (?pages=N, one at a time)."""
    data, ctype = uploads[kind]
    alone = [post(stack, data, ctype, f"&pages={n}")[0] for n in range(1, DOCUMENT_PAGES + 1)]
    assert "Page 3 of the statement" in [line["text"] for line in alone[2]["lines"]]

    count, read_alone = batch_counts(stack)
    whole = post(stack, data, ctype)
    assert [(i["page"], i["source"]) for i in whole] == [(n, "ocr") for n in range(1, DOCUMENT_PAGES + 1)]
    for a, b in zip(alone, whole, strict=True):
        same_json(a, b)
    after, after_alone = batch_counts(stack)
    assert after - count == DOCUMENT_PAGES
    assert after_alone - read_alone < DOCUMENT_PAGES  # some of its pages shared a model call

    singles = [f"Receipt {n} cash" for n in range(6)]
    with ThreadPoolExecutor(1 + len(singles)) as pool:
        document = pool.submit(post, stack, data, ctype)
        replies = list(pool.map(lambda text: post(stack, png(render([text])), "image/png"), singles))
    for a, b in zip(alone, document.result(), strict=True):
        same_json(a, b)
    for text, reply in zip(singles, replies, strict=True):
        assert [line["text"] for line in reply[0]["lines"]] == [text]
    final, final_alone = batch_counts(stack)
    assert final - after == DOCUMENT_PAGES + len(singles)
    assert final_alone - after_alone < DOCUMENT_PAGES + len(singles)


def test_a_jobs_pages_share_model_calls(stack: Stack, uploads):
    """A job posts each page as a request of its own, [jobs] workers at once: they meet in the
    inference thread like any concurrent requests, and the job's answer is the synchronous one."""
    data, ctype = uploads["pdf"]
    sync = post(stack, data, ctype)
    count, read_alone = batch_counts(stack)
    body, form = multipart([("image", "statement.pdf", data, ctype)])
    submitted = http(stack.url + "/v1/jobs?dpi=200&words=1", body, form)
    assert submitted.status == 202, submitted.body
    job = wait_done(stack, submitted.json()["id"])
    result = http(f"{stack.url}/v1/jobs/{job['id']}/result")
    assert result.status == 200, result.body[:300]
    for a, b in zip(sync, result.json()["images"], strict=True):
        same_json(a, b)
    after, after_alone = batch_counts(stack)
    assert after - count == DOCUMENT_PAGES
    assert after_alone - read_alone < DOCUMENT_PAGES


def wait_done(stack: Stack, job_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    status: Response | None = None
    while time.monotonic() < deadline:
        status = http(f"{stack.url}/v1/jobs/{job_id}")
        if status.status == 200 and status.json()["status"] in ("done", "failed", "cancelled"):
            assert status.json()["status"] == "done", status.json()
            return status.json()
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish: {status.body if status else b''!r}")
