"""POST /v1/parse with PDFs and multi-page TIFFs, in-process with the real model (no uWSGI, no Nginx)."""

from __future__ import annotations

import pytest
from PIL import Image

from service import settings as settings_mod
from tests import pdfs
from tests.support import loaded_app, multipart, png

pytestmark = pytest.mark.model

TEXTS = [["FIRST PAGE 101", "alpha beta"], ["SECOND PAGE 202", "gamma delta"], ["THIRD PAGE 303", "epsilon"]]


@pytest.fixture(scope="module")
def client():
    return loaded_app().test_client()


@pytest.fixture(scope="module")
def scans(render):
    return [render(lines) for lines in TEXTS]


def post(client, data: bytes, query: str = "", content_type: str | None = None):
    if content_type:
        return client.post(f"/v1/parse{query}", data=data, content_type=content_type)
    body, ctype = multipart([("image", "doc.pdf", data, "application/octet-stream")])
    return client.post(f"/v1/parse{query}", data=body, content_type=ctype)


def texts(body) -> list[str]:
    return [image["text"] for image in body["images"]]


def test_a_scanned_pdf_reads_like_its_page_images(client, scans):
    # At the scan's own resolution the PDF's pages are the images: the same reads, the same boxes.
    resp = post(client, pdfs.scanned_pdf(scans, resolution=200), "?dpi=200")
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    as_images = [post(client, png(s)).get_json()["images"][0] for s in scans]
    assert [(i["file"], i["page"], i["source"], i["dpi"]) for i in body["images"]] == [
        (0, 1, "ocr", 200), (0, 2, "ocr", 200), (0, 3, "ocr", 200)]
    assert texts(body) == [i["text"] for i in as_images]
    for page, image, scan in zip(body["images"], as_images, scans):
        assert (page["width"], page["height"]) == (scan.shape[1], scan.shape[0])
        # Pillow's PDF writer stores each scan as a JPEG, so the detector sees the page's pixels
        # a little changed: the boxes agree to a few pixels, not exactly.
        for a, b in zip(page["lines"], image["lines"]):
            assert max(abs(p - q) for pa, pb in zip(a["quad"], b["quad"]) for p, q in zip(pa, pb)) < 8
    assert "FIRST PAGE 101" in texts(body)[0]


def test_pages_picks_pages_and_a_raw_pdf_body_is_accepted(client, scans):
    data = pdfs.scanned_pdf(scans, resolution=200)
    body = post(client, data, "?pages=3,1-2&dpi=200", content_type="application/pdf").get_json()
    assert [i["page"] for i in body["images"]] == [3, 1, 2]
    assert "THIRD PAGE 303" in body["images"][0]["text"]
    single = post(client, data, "?pages=2&dpi=200").get_json()
    assert [i["page"] for i in single["images"]] == [2] and "SECOND PAGE 202" in single["images"][0]["text"]
    past = post(client, data, "?pages=4")
    assert past.status_code == 400 and "has 3 pages" in past.get_json()["error"]["message"]


def test_a_born_digital_page_returns_its_exact_text(client):
    lines = ["Quarterly report 2024", "Net revenue: 12,345.67 (+4.2%)"]
    resp = post(client, pdfs.born_digital_pdf([lines]))
    image = resp.get_json()["images"][0]
    assert image["source"] == "text-layer" and image["dpi"] == settings_mod.load().documents.dpi
    assert [line["text"] for line in image["lines"]] == lines
    # The page text is in reading order: these two lines may stand as two blocks, a blank line apart.
    assert [row for row in image["text"].split("\n") if row] == lines
    assert all(line["confidence"] == 1.0 for line in image["lines"])
    forced = post(client, pdfs.born_digital_pdf([lines]), "?ocr=force").get_json()["images"][0]
    assert forced["source"] == "ocr" and "Quarterly" in forced["text"]


def test_a_multipage_tiff_and_images_in_one_request(client, scans):
    tiff = pdfs.multipage_tiff([Image.fromarray(s) for s in scans[:2]])
    body, ctype = multipart([("image", "scan.tif", tiff, "image/tiff"), ("image", "page.png", png(scans[2]), "image/png")])
    out = client.post("/v1/parse", data=body, content_type=ctype).get_json()
    assert [(i["file"], i["page"], i["source"]) for i in out["images"]] == [(0, 1, "ocr"), (0, 2, "ocr"), (1, 1, "ocr")]
    assert "dpi" not in out["images"][0]
    assert "SECOND PAGE 202" in out["images"][1]["text"] and "THIRD PAGE 303" in out["images"][2]["text"]


@pytest.mark.parametrize("name, make, status, words", [
    ("5000 pages", lambda: pdfs.blank_pdf(5000), 413, "5,000 pages"),
    ("too many for one request", lambda: pdfs.blank_pdf(17), 413, "/v1/jobs"),
    ("200 inches square", lambda: pdfs.blank_pdf(1, size=(14400, 14400)), 413, "inches"),
    ("encrypted", lambda: pdfs.born_digital_pdf([["x"]], encrypt="pw"), 400, "password-protected"),
    ("truncated", lambda: pdfs.born_digital_pdf([["x"]])[:300], 400, "re-export"),
    ("zero pages", pdfs.zero_page_pdf, 400, "no pages"),
    ("hundreds of tiny TIFF pages", lambda: pdfs.multipage_tiff([Image.new("L", (1, 1))] * 400), 413, "/v1/jobs"),
])
def test_hostile_documents_get_a_4xx_that_says_what_to_fix(client, name, make, status, words):
    resp = post(client, make())
    assert resp.status_code == status, (name, resp.get_json())
    assert words in resp.get_json()["error"]["message"]


def test_javascript_never_runs_and_a_broken_xref_is_repaired(client):
    assert post(client, pdfs.javascript_pdf()).status_code == 200
    fixed = post(client, pdfs.broken_xref(pdfs.born_digital_pdf([["still readable"]]))).get_json()
    assert fixed["images"][0]["text"] == "still readable"


@pytest.mark.parametrize("query, code", [("?pages=0", "invalid_pages"), ("?dpi=9999", "invalid_dpi"),
                                         ("?ocr=maybe", "invalid_ocr")])
def test_bad_options_are_refused(client, query, code):
    resp = post(client, pdfs.blank_pdf(1), query)
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == code
