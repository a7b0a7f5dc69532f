"""Batching across requests (service/ocr/batching.py): pages from many threads read in one model
call, each given exactly its own result, with the real PP-OCR model on the CPU."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

from service import documents
from service.errors import ClientError
from service.ocr import batching
from service.ocr.batching import Batched, batched
from service.settings import ROOT, Limits
from service.ocr.types import Page
from service.web.guards import Deadline
from service.web.reading import readings
from tests import pdfs

pytestmark = pytest.mark.model

TEXTS = [["Invoice 2026-0042", "Total: 12.50 EUR"], ["Thank you", "Table 7"], ["ORDER 1138"],
         ["Receipt No. 55", "Cash 3.20", "Change 0.80"], ["parse service"], ["Line mode 99"]]


@pytest.fixture(scope="module")
def ppocr(load_family):
    return load_family("ppocr", 1)


@pytest.fixture(scope="module")
def pages(render) -> list[np.ndarray]:
    return [render(lines) for lines in TEXTS]


def same(a: Page, b: Page) -> None:
    """One page read alone and in a batch: the same lines, quads and words; confidences equal
    but for float rounding of a batched convolution."""
    assert [line.text for line in a.lines] == [line.text for line in b.lines]
    assert [line.quad for line in a.lines] == [line.quad for line in b.lines]
    assert [[w.text for w in line.words] for line in a.lines] == [[w.text for w in line.words] for line in b.lines]
    assert [line.confidence for line in a.lines] == pytest.approx([line.confidence for line in b.lines], abs=2e-4)
    assert (a.width, a.height, a.angle) == (b.width, b.height, b.angle)


def submit_together(model, calls: list[tuple[str, np.ndarray]]) -> list[Page | BaseException]:
    """Each call from its own thread, all released at once: how a worker's request threads meet."""
    out: list[Page | BaseException] = [None] * len(calls)  # type: ignore[list-item]
    start = threading.Barrier(len(calls))

    def one(i: int, kind: str, image: np.ndarray) -> None:
        start.wait()
        try:
            out[i] = getattr(model, kind)([image])[0]
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i, kind, img)) for i, (kind, img) in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


class Calls:
    """The real model, with a record of which pages (by their pixels' digest) each call read."""

    def __init__(self, model):
        self.model = model
        self.reads_grey = model.reads_grey
        self.calls: list[list[str]] = []

    def parse(self, images, greys=None):
        self.calls.append([digest(image) for image in images])
        return self.model.parse(images, greys)

    def warmup(self):
        self.model.warmup()


def digest(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


DOCUMENT_TEXTS = [["Page 1 of the report", "Net 10.00"], ["Page 2 of the report", "Tax 1.90"],
                  ["Page 3 of the report", "Total 11.90"], ["Page 4 of the report", "Signed"]]


@pytest.fixture(scope="module")
def uploads(render) -> dict[str, bytes]:
    """One 4-page document as a scanned PDF and as a multi-page TIFF."""
    scans = [render(lines) for lines in DOCUMENT_TEXTS]
    return {"pdf": pdfs.scanned_pdf(scans, resolution=200),
            "tiff": pdfs.multipage_tiff([Image.fromarray(s) for s in scans])}


def document_pages(data: bytes) -> list[documents.PageImage]:
    return list(documents.read_pages([data], Limits(), documents.ReadOptions(dpi=200)))


def read_document(model, data: bytes) -> list[Page]:
    with_pages = list(readings(model, iter(documents.read_pages([data], Limits(), documents.ReadOptions(dpi=200))),
                               "page", Deadline(600), keep_pixels=False))
    assert all(doc.rgb is None for doc, _ in with_pages)  # no output draws them: they went once read
    return [page for _, page in with_pages]


@pytest.mark.parametrize("kind", ["pdf", "tiff"])
def test_a_documents_pages_are_read_together_each_as_alone(ppocr, uploads, pages, kind):
    """A request's pages go to the inference thread as they are rendered, so they share model
    calls with each other (alone) and with other requests' pages (beside them), and each page
    gets exactly the reading it gets alone."""
    data = uploads[kind]
    scans = document_pages(data)
    alone = [ppocr.parse([doc.rgb])[0] for doc in scans]
    mine = {digest(doc.rgb) for doc in scans}

    calls = Calls(ppocr)
    model = Batched(calls, max_pages=8, max_wait_ms=200, stuck_seconds=600)
    for a, b in zip(alone, read_document(model, data), strict=True):
        same(a, b)
    assert max(sum(d in mine for d in call) for call in calls.calls) > 1, calls.calls

    # Beside six single-page requests from their own threads.
    calls.calls.clear()
    others: list[Page | BaseException] = []
    thread = threading.Thread(target=lambda: others.extend(submit_together(model, [("parse", p) for p in pages])))
    thread.start()
    together = read_document(model, data)
    thread.join(120)
    for a, b in zip(alone, together, strict=True):
        same(a, b)
    for page, result in zip(pages, others, strict=True):
        same(ppocr.parse([page])[0], result)
    assert any(len(set(call) & mine) and len(set(call) - mine) for call in calls.calls), calls.calls


def test_a_document_hands_in_at_most_a_batch_ahead(ppocr, uploads):
    """A long document never has more than max_pages of its pages handed in and unanswered:
    its rendered pages stay bounded whatever its length."""
    model = Batched(Calls(ppocr), max_pages=2, max_wait_ms=50, stuck_seconds=600)
    scans = iter(documents.read_pages([uploads["tiff"]], Limits(), documents.ReadOptions()))
    rendered = 0

    def counted():
        nonlocal rendered
        for doc in scans:
            rendered += 1
            yield doc

    answered = 0
    for doc, page in readings(model, counted(), "page", Deadline(600), keep_pixels=True):
        answered += 1
        assert rendered - answered <= model.max_pages - 1
        assert page.batch_pages <= 2
        assert doc.rgb is not None  # an output that draws the page (?annotate=1) still has it
    assert answered == len(DOCUMENT_TEXTS)


class PassesWhileWaiting(Deadline):
    """A deadline that passes once the request's pages are all handed in and it waits for them."""

    def check(self, stage: str) -> None:
        if stage.startswith("the model call"):
            raise ClientError(504, "deadline_exceeded", f"the test's deadline passed at {stage}")


def test_a_failed_request_withdraws_its_pages(ppocr, uploads, pages):
    """A request that stops (an error, its deadline) cancels its pages that no model call has
    taken: the inference thread skips them and serves the next request."""
    calls = Calls(ppocr)
    gate = threading.Event()
    first_call = calls.parse

    def held(images, greys=None):  # the model busy with another request's page until the gate opens
        gate.wait(120)
        return first_call(images, greys)

    calls.parse = held
    model = Batched(calls, max_pages=8, max_wait_ms=0, stuck_seconds=600)
    busy = model.submit("parse", pages[0])
    with pytest.raises(ClientError, match="deadline passed"):
        next(readings(model, iter(document_pages(uploads["pdf"])), "page", PassesWhileWaiting(600), keep_pixels=False))
    gate.set()
    same(ppocr.parse([pages[0]])[0], busy.result())
    same(ppocr.parse([pages[1]])[0], model.parse([pages[1]])[0])  # the thread serves on
    assert calls.calls == [[digest(pages[0])], [digest(pages[1])]]  # no page of the withdrawn request


def test_batch_of_one_is_the_model_itself(ppocr):
    assert batched(ppocr, 1, 5, 600) is ppocr


@pytest.mark.parametrize("family", ["ppocr", "easyocr"])
def test_pages_from_several_threads_each_get_their_own_result(family, load_family, pages):
    """Both families pad each line crop to a width of its own, so batching changes no reading."""
    model_alone = load_family(family, 1)
    alone = [model_alone.parse([p])[0] for p in pages]
    model = Batched(model_alone, max_pages=8, max_wait_ms=500, stuck_seconds=600)
    results = submit_together(model, [("parse", p) for p in pages])
    for a, b in zip(alone, results):
        assert isinstance(b, Page), b
        same(a, b)
    # They met: at least some pages were read in a call with others.
    assert max(r.batch_pages for r in results) > 1
    assert all(r.timing["batch_wait"] >= 0 for r in results)


def test_batches_stop_at_max_pages(ppocr, pages):
    model = Batched(ppocr, max_pages=2, max_wait_ms=500, stuck_seconds=600)
    results = submit_together(model, [("parse", p) for p in pages])
    assert all(isinstance(r, Page) and r.batch_pages <= 2 for r in results)


def test_a_bad_page_fails_alone(ppocr, pages):
    """A page the model cannot read (here a 2-D array where pages are HxWx3) fails its own
    request; the pages batched with it are read again alone and succeed."""
    model = Batched(ppocr, max_pages=8, max_wait_ms=500, stuck_seconds=600)
    calls = [("parse", pages[0]), ("parse", np.zeros((40, 60), np.uint8)), ("parse", pages[2])]
    good0, bad, good2 = submit_together(model, calls)
    assert isinstance(bad, Exception)
    same(ppocr.parse([pages[0]])[0], good0)
    same(ppocr.parse([pages[2]])[0], good2)
    # The inference thread lives on.
    same(ppocr.parse([pages[1]])[0], model.parse([pages[1]])[0])


def test_line_mode_and_page_mode_share_the_thread(ppocr, pages, render):
    crop = render(["Line mode 99"], margin=6)
    model = Batched(ppocr, max_pages=8, max_wait_ms=200, stuck_seconds=600)
    results = submit_together(model, [("parse", pages[0]), ("recognize", crop), ("parse", pages[1]), ("recognize", crop)])
    same(ppocr.parse([pages[0]])[0], results[0])
    same(ppocr.parse([pages[1]])[0], results[2])
    for r in (results[1], results[3]):
        assert [line.text for line in r.lines] == ["Line mode 99"]


def test_gpu_shapes_read_the_same_on_the_cpu(ppocr, pages):
    """What a GPU worker does to make shapes repeat, done here on the CPU: recognizer batches
    padded with blank rows to a power of two change nothing; detector inputs padded to 128 px
    steps (`det_bucket`) read the same text with quads within a few pixels."""
    alone = [ppocr.parse([p])[0] for p in pages]
    try:
        ppocr.pad_rows = True
        for a, b in zip(alone, ppocr.parse(pages)):
            same(a, b)
        ppocr.det_bucket = 128
        for a, b in zip(alone, ppocr.parse(pages)):
            assert [line.text for line in a.lines] == [line.text for line in b.lines]
            for la, lb in zip(a.lines, b.lines):
                assert np.abs(np.array(la.quad) - np.array(lb.quad)).max() <= 3
    finally:
        ppocr.pad_rows, ppocr.det_bucket = False, 0


def test_a_lone_client_does_not_wait_for_a_batch(ppocr, pages):
    """One request at a time: no other page can join, so none waits the batch_wait_ms."""
    model = Batched(ppocr, max_pages=8, max_wait_ms=2000, stuck_seconds=600)
    for page in pages[:3]:
        result = model.parse([page])[0]
        assert result.batch_pages == 1
        assert result.timing["batch_wait"] < model.max_wait / 2  # it did not wait for company


def test_a_stuck_model_call_ends_the_worker():
    """A model call that never returns (here: a model whose parse blocks forever, the fault
    injected) ends the process once a page has waited `stuck_seconds`, as harakiri would; uWSGI's
    master then starts a fresh worker. Run in a child process, since it exits."""
    script = """
import threading
from service.ocr.batching import Batched
class Hangs:
    info = device = precision = None
    reads_grey = False
    def parse(self, images, greys=None):
        threading.Event().wait()
import numpy as np
Batched(Hangs(), max_pages=4, max_wait_ms=1, stuck_seconds=1).parse([np.zeros((8, 8, 3), np.uint8)])
print("returned")
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == batching.STUCK_EXIT, (done.returncode, done.stderr[-2000:])
    assert "returned" not in done.stdout
    assert "inference thread is stuck" in done.stderr
