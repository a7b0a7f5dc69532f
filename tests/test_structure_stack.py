"""Document structure through the real stack (Nginx -> uWSGI -> app, the layout and table models
loaded in the worker): the report page of tests/structure_page.py as a scan and as a born-digital
PDF, Markdown, hOCR/ALTO, determinism under concurrency with batching on, and a page of hundreds
of tables (answered or refused with a 4xx, never a 5xx or a hang)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageDraw

from service.structure.regions import TYPES
from tests import structure_page as report
from tests.formats_check import check_alto, check_hocr
from tests.stack import Stack, http
from tests.support import png

pytestmark = pytest.mark.stack

CLIENTS = 4


@pytest.fixture(scope="module")
def stack(stack_factory) -> Stack:
    # Batching across requests on: the outputs must not depend on which pages meet in a model call.
    return stack_factory([{"processes": 1, "batch_pages": CLIENTS, "batch_wait_ms": 50}], deadline_seconds=120)


def post(stack: Stack, body: bytes, query: str, content_type: str = "image/png"):
    return http(f"{stack.url}/v1/parse?{query}", body, content_type, timeout=180)


@pytest.fixture(scope="module")
def scan_png() -> bytes:
    return png(report.image())


@pytest.fixture(scope="module")
def scanned(stack: Stack, scan_png: bytes) -> dict:
    reply = post(stack, scan_png, "structure=1")
    assert reply.status == 200, reply.body[:500]
    return reply.json()["images"][0]


@pytest.fixture(scope="module")
def digital(stack: Stack) -> dict:
    reply = post(stack, report.pdf(), f"structure=1&dpi={report.DPI}", "application/pdf")
    assert reply.status == 200, reply.body[:500]
    return reply.json()["images"][0]


def texts(page: dict, kind: str) -> list[str]:
    return [" ".join(page["lines"][i]["text"] for i in r["lines"]) for r in page["regions"] if r["type"] == kind]


def check_structure(page: dict) -> None:
    """The report page's regions and table, whichever way its text was read."""
    regions = page["regions"]
    assert {r["type"] for r in regions} <= set(TYPES)
    held = [i for r in regions for i in r["lines"]]
    assert len(held) == len(set(held))  # every line in at most one region
    assert texts(page, "title") == [report.TITLE] or texts(page, "heading") == [report.TITLE], regions
    body = " ".join(texts(page, "text"))
    for paragraph in report.PARAGRAPHS:
        assert paragraph[0].split()[0] in body and paragraph[-1].split()[-1] in body
    assert [r["type"] for r in regions].count("table") == 1 and len(page["tables"]) == 1
    assert any(r["type"] == "figure" for r in regions)
    assert texts(page, "caption") == [report.CAPTION]
    assert texts(page, "footer") == [report.PAGE_NUMBER]
    html = page["tables"][0]["html"]
    assert 'colspan="2"' in html
    for text in (*report.HEADER, *(t for row in report.ROWS for t in row)):
        assert text in html, (text, html)
    # The text follows the regions: the title first, the page number last.
    assert page["text"].startswith(report.TITLE) and page["text"].rstrip().endswith(report.PAGE_NUMBER)


def test_report_page_scanned(scanned: dict) -> None:
    check_structure(scanned)
    assert scanned["source"] == "ocr"


def test_report_page_born_digital(digital: dict, scanned: dict) -> None:
    check_structure(digital)
    assert digital["source"] == "text-layer"
    from service.documents.pdf import PdfFile
    doc = PdfFile(report.pdf())
    try:
        layer = [line.text for line in doc.text_lines(0, report.DPI)]
    finally:
        doc.close()
    assert [line["text"] for line in digital["lines"]] == layer  # the text layer, exactly
    assert [r["type"] for r in digital["regions"]] == [r["type"] for r in scanned["regions"]]


@pytest.mark.parametrize("kind", ["scan", "pdf"])
def test_markdown(stack: Stack, scan_png: bytes, kind: str) -> None:
    body, ctype, query = (scan_png, "image/png", "format=markdown") if kind == "scan" else \
        (report.pdf(), "application/pdf", f"format=markdown&dpi={report.DPI}")
    reply = post(stack, body, query, ctype)
    assert reply.status == 200, reply.body[:500]
    assert reply.headers["Content-Type"].startswith("text/markdown")
    md = reply.body.decode()
    assert f"# {report.TITLE}\n" in md
    if kind == "pdf":  # the scan's words are the OCR's; the text layer's are exact
        assert report.paragraph_text(0) in md and report.paragraph_text(1) in md
    assert "<table>" in md and 'colspan="2"' in md
    assert report.CAPTION in md and "![figure" in md
    assert not any(line.strip() == report.PAGE_NUMBER for line in md.splitlines())


def test_hocr_and_alto_carry_the_structure(stack: Stack, scan_png: bytes, scanned: dict) -> None:
    words = json.loads(post(stack, scan_png, "structure=1&words=1").body)["images"]
    hocr = post(stack, scan_png, "structure=1&format=hocr")
    check_hocr(hocr.body, words)
    assert b'class="ocr_table"' in hocr.body and b'class="ocr_caption"' in hocr.body
    alto = post(stack, scan_png, "structure=1&format=alto")
    check_alto(alto.body, words)
    assert b'TYPE="table"' in alto.body and b"<Illustration" in alto.body.replace(b"ns0:", b"")


def test_concurrent_clients_get_identical_outputs(stack: Stack, scan_png: bytes) -> None:
    """One client alone, then CLIENTS at once (their pages batched together): the same bytes."""
    queries = ("structure=1", "format=markdown")

    def one(query: str) -> bytes:
        reply = post(stack, scan_png, query)
        assert reply.status == 200, reply.body[:300]
        if query.startswith("format="):
            return reply.body
        return json.dumps(reply.json()["images"], sort_keys=True).encode()  # less request id and timings

    alone = {q: one(q) for q in queries}
    with ThreadPoolExecutor(CLIENTS) as pool:
        for q in queries:
            together = list(pool.map(one, [q] * CLIENTS))
            assert all(t == alone[q] for t in together), q


def tables_page(count: int) -> bytes:
    """A page of `count` small ruled tables of numbers."""
    img = Image.new("L", (2400, 3200), 255)
    draw = ImageDraw.Draw(img)
    per_row = 10
    for k in range(count):
        x, y = 40 + (k % per_row) * 236, 40 + (k // per_row) * 104
        for r in range(4):
            draw.line([(x, y + r * 30), (x + 210, y + r * 30)], fill=0, width=2)
        for c in range(4):
            draw.line([(x + c * 70, y), (x + c * 70, y + 90)], fill=0, width=2)
        for r in range(3):
            for c in range(3):
                draw.text((x + c * 70 + 12, y + r * 30 + 8), str((k + r * 3 + c) % 97), fill=0)
    return png(np.asarray(img.convert("RGB")))


def test_hundreds_of_tables_answered_or_refused(stack: Stack) -> None:
    reply = post(stack, tables_page(300), "structure=1")
    assert reply.status in (200, 422), (reply.status, reply.body[:300])
    if reply.status == 422:
        assert reply.json()["error"]["code"] == "too_many_regions"
    else:
        assert len(reply.json()["images"][0]["tables"]) <= stack.cfg.structure.max_tables


def test_structure_with_line_mode_is_refused(stack: Stack, scan_png: bytes) -> None:
    reply = post(stack, scan_png, "mode=line&structure=1")
    assert reply.status == 400 and reply.json()["error"]["code"] == "invalid_structure"
    assert post(stack, scan_png, "structure=yes").json()["error"]["code"] == "invalid_structure"
