"""Checks every output format must pass, for unit tests and for the app's own results alike.

poppler's pdftotext (Debian poppler-utils; `make poppler` installs it) reads the searchable PDF
back: its words, page by page, and with -bbox where it places each one (within 2 px).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from service.formats.pdf import DEFAULT_DPI

XHTML = "{http://www.w3.org/1999/xhtml}"
ALTO = "{http://www.loc.gov/standards/alto/ns-v4#}"
BBOX = re.compile(r"bbox (\d+) (\d+) (\d+) (\d+)")
TOLERANCE_PX = 2.0


def _box(quad) -> tuple[float, float, float, float]:
    xs, ys = [p[0] for p in quad], [p[1] for p in quad]
    return min(xs), min(ys), max(xs), max(ys)


def _inside(inner, outer, tol: float = TOLERANCE_PX) -> bool:
    return (inner[0] >= outer[0] - tol and inner[1] >= outer[1] - tol
            and inner[2] <= outer[2] + tol and inner[3] <= outer[3] + tol)


def words_of(images: list[dict]) -> list[list[dict]]:
    return [[w for line in image["lines"] for w in line["words"]] for image in images]


def check_hocr(document: bytes, images: list[dict]) -> None:
    root = ET.fromstring(document)
    pages = root.findall(f".//{XHTML}div[@class='ocr_page']")
    assert len(pages) == len(images)
    for page, words in zip(pages, words_of(images)):
        found = page.findall(f".//{XHTML}span[@class='ocrx_word']")
        assert sorted(w.text for w in found) == sorted(w["text"] for w in words)
        for w in found:
            assert BBOX.search(w.get("title")) and "x_wconf" in w.get("title"), w.get("title")
        for cls in ("ocr_carea", "ocr_par", "ocr_line"):
            assert all(BBOX.search(e.get("title")) for e in page.iter() if e.get("class") == cls)


def check_alto(document: bytes, images: list[dict]) -> None:
    root = ET.fromstring(document)
    assert root.tag == f"{ALTO}alto"
    pages = root.findall(f".//{ALTO}Page")
    assert len(pages) == len(images)
    for page, words in zip(pages, words_of(images)):
        assert page.find(f"{ALTO}PrintSpace") is not None
        strings = page.findall(f".//{ALTO}TextBlock/{ALTO}TextLine/{ALTO}String")
        assert sorted(s.get("CONTENT") for s in strings) == sorted(w["text"] for w in words)
        for s in strings:
            assert all(s.get(k) is not None for k in ("HPOS", "VPOS", "WIDTH", "HEIGHT", "WC")), s.attrib


def pdftotext() -> str:
    path = shutil.which("pdftotext")
    if not path:
        pytest.skip("pdftotext is absent: `make poppler` installs poppler-utils")
    return path


def check_pdf(document: bytes, images: list[dict], tmp: Path) -> None:
    """pdftotext finds every word on its page, and -bbox puts each inside the word's box."""
    tool = pdftotext()
    path = tmp / "doc.pdf"
    path.write_bytes(document)
    text = subprocess.run([tool, "-layout", str(path), "-"], check=True, capture_output=True, text=True).stdout
    pages_text = text.split("\f")
    for page_text, words in zip(pages_text, words_of(images)):
        for w in words:
            assert w["text"] in page_text, (w["text"], page_text)
    xhtml = subprocess.run([tool, "-bbox", str(path), "-"], check=True, capture_output=True, text=True).stdout
    root = ET.fromstring(re.sub(r"<!DOCTYPE[^>]*>", "", xhtml))
    pdf_pages = root.findall(f".//{XHTML}page")
    assert len(pdf_pages) == len(images)
    scale = DEFAULT_DPI / 72  # points -> pixels (these pages carry no resolution of their own)
    for pdf_page, image, words in zip(pdf_pages, images, words_of(images)):
        assert abs(float(pdf_page.get("width")) * scale - image["width"]) < 1
        placed = [(e.text, [float(e.get(k)) * scale for k in ("xMin", "yMin", "xMax", "yMax")])
                  for e in pdf_page.findall(f"{XHTML}word")]
        assert sorted(t for t, _ in placed) == sorted(w["text"] for w in words)
        remaining = list(words)
        for t, box in placed:
            match = next((w for w in remaining if w["text"] == t and _inside(box, _box(w["quad"]))), None)
            assert match is not None, (t, box, [(w["text"], _box(w["quad"])) for w in words if w["text"] == t])
            remaining.remove(match)


def check_words(images: list[dict]) -> None:
    """Each line's words, joined, give its text; each word lies inside its line's box."""
    for image in images:
        for line in image["lines"]:
            assert " ".join(w["text"] for w in line["words"]) == " ".join(line["text"].split()), line
            for w in line["words"]:
                assert _inside(_box(w["quad"]), _box(line["quad"])), (w, line["quad"])
