"""Searchable PDFs from scans: parse against OCRmyPDF 17, on the same scanned PDFs, same machine.

`make bench-pdf` installs OCRmyPDF in a venv of its own (build/ocrmypdf-venv) with Tesseract and
Ghostscript from apt; none of it is a dependency of the service. The scans are made here, into
build/bench-pdf/, from the 40 SROIE receipts of ../shared/ocr-dev: each JPEG embedded as it is
(DCTDecode) at 200 dpi, as a scanner writes it, one single-page PDF per receipt and one PDF of all
40. Each tool turns each scan into a searchable PDF: parse in-process with its model loaded (the
service's path: documents.read_pages -> the model -> formats.render), OCRmyPDF as its command
(`ocrmypdf --output-type pdf`: the original pages kept, no PDF/A rewrite by Ghostscript, which
parse does not do either; its start-up counts, as a user's call pays it). The two take turns on
each single-page PDF, then on the 40-page one.

Printed per tool: the text layer as pdftotext reads it, scored by score.py (case-insensitive CER
and word recall, the dev-set measure of tests/devset.py); output size / input size (the
single-page files together, and the 40-page file); seconds per page (median of the single pages,
and the 40-page file's total / 40). Both are given 2 cores: torch 2 threads; OCRmyPDF --jobs 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import re
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pikepdf
from PIL import Image

from service import documents, formats
from service import settings as settings_mod
from service.ocr.model import load_model
from service.ocr.types import Page
from service.settings import ROOT
from tests import devset

BUILD = ROOT / "build" / "bench-pdf"
OCRMYPDF = ROOT / "build" / "ocrmypdf-venv" / "bin" / "ocrmypdf"
SCAN_DPI = 200


def scan_pdf(jpegs: list[bytes]) -> bytes:
    """The JPEGs as pages of one PDF, each as it came (DCTDecode), each page its image at SCAN_DPI."""
    pdf = pikepdf.new()
    for data in jpegs:
        with Image.open(io.BytesIO(data)) as img:
            width, height, mode = img.width, img.height, img.mode
        image = pikepdf.Stream(pdf, data, Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image, Width=width,
                               Height=height, BitsPerComponent=8,
                               ColorSpace=pikepdf.Name("/DeviceGray" if mode == "L" else "/DeviceRGB"))
        image.Filter = pikepdf.Name.DCTDecode
        w, h = width * 72 / SCAN_DPI, height * 72 / SCAN_DPI
        page = pdf.add_blank_page(page_size=(w, h))
        page.obj.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=pdf.make_indirect(image)))
        page.obj.Contents = pdf.make_stream(f"q {w:.4f} 0 0 {h:.4f} 0 0 cm /Im0 Do Q".encode())
    out = io.BytesIO()
    pdf.save(out)
    return out.getvalue()


def parse_pdf(model, data: bytes, cfg: settings_mod.Settings) -> bytes:
    """What POST /v1/parse?format=pdf does with the upload, without HTTP."""
    limits = dataclasses.replace(cfg.limits, max_pages=cfg.limits.max_document_pages)
    options = documents.ReadOptions(grey=model.reads_grey, documents=cfg.documents)
    entries = []
    for doc in documents.read_pages([data], limits, options):
        page = Page(doc.width, doc.height, doc.lines) if doc.lines is not None else \
            model.parse([doc.rgb], [doc.grey])[0]
        entry = formats.image_json(page, words=True) | {"file": doc.file, "page": doc.page, "source": doc.source}
        if doc.dpi is not None:
            entry["dpi"] = doc.dpi
        entries.append(entry)
    return formats.render(entries, "pdf", [data])[0]


def ocrmypdf(src: Path, dst: Path) -> None:
    subprocess.run([str(OCRMYPDF), "--output-type", "pdf", "--jobs", "2", "--quiet", str(src), str(dst)],
                   check=True, env={**os.environ, "OMP_THREAD_LIMIT": "1"})


def text_pages(path: Path) -> list[str]:
    out = subprocess.run(["pdftotext", str(path), "-"], check=True, capture_output=True, text=True).stdout
    return out.split("\f")[:-1] if out.endswith("\f") else out.split("\f")


def words_with_boxes(path: Path) -> list[dict]:
    """The first page's words as `pdftotext -bbox` places them, each a prediction line with its
    quad: score.py then orders them into rows itself, the same way for both tools, so the score is
    the text layer's words and places, not pdftotext's guess at columns."""
    out = subprocess.run(["pdftotext", "-f", "1", "-l", "1", "-bbox", str(path), "-"], check=True,
                         capture_output=True, text=True).stdout
    root = ET.fromstring(re.sub(r"<!DOCTYPE[^>]*>", "", out))
    lines = []
    for word in root.iter("{http://www.w3.org/1999/xhtml}word"):
        x0, y0, x1, y1 = (float(word.get(k)) for k in ("xMin", "yMin", "xMax", "yMax"))
        lines.append({"text": word.text or "", "quad": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]})
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=40, help="receipts to use (default all 40)")
    parser.add_argument("--threads", type=int, default=2, help="parse's torch threads (default 2)")
    args = parser.parse_args()
    if not OCRMYPDF.exists():
        sys.exit(f"{OCRMYPDF} is absent: `make bench-pdf` installs it")
    items = devset.dev_items({"sroie"})[:args.pages]
    for folder in ("in", "parse", "ocrmypdf", "pred-parse", "pred-ocrmypdf"):
        (BUILD / folder).mkdir(parents=True, exist_ok=True)
    jpegs = [path.read_bytes() for path, _ in items]
    singles = []
    for (path, _), data in zip(items, jpegs):
        src = BUILD / "in" / f"{path.stem}.pdf"
        src.write_bytes(scan_pdf([data]))
        singles.append(src)
    multi = BUILD / "in" / "all.pdf"
    multi.write_bytes(scan_pdf(jpegs))

    cfg = settings_mod.load()
    model = load_model(cfg.model, device="cpu", threads=args.threads)
    model.warmup()
    tools = {"parse": lambda s, d: d.write_bytes(parse_pdf(model, s.read_bytes(), cfg)), "ocrmypdf": ocrmypdf}
    seconds: dict[str, list[float]] = {t: [] for t in tools}
    sizes: dict[str, int] = {t: 0 for t in tools}
    for src in singles:
        for tool, run in tools.items():  # taking turns, page by page
            dst = BUILD / tool / src.name
            start = time.perf_counter()
            run(src, dst)
            seconds[tool].append(time.perf_counter() - start)
            sizes[tool] += dst.stat().st_size
            (BUILD / f"pred-{tool}" / f"{src.stem}.json").write_text(json.dumps(
                {"lines": words_with_boxes(dst)}, ensure_ascii=False))
        print(f"{src.stem}: parse {seconds['parse'][-1]:.2f}s, ocrmypdf {seconds['ocrmypdf'][-1]:.2f}s", flush=True)
    multi_seconds, multi_ratio, multi_same = {}, {}, {}
    for tool, run in tools.items():
        dst = BUILD / tool / multi.name
        start = time.perf_counter()
        run(multi, dst)
        multi_seconds[tool] = (time.perf_counter() - start) / len(items)
        multi_ratio[tool] = dst.stat().st_size / multi.stat().st_size
        # The 40-page file's text layer, page for page, against the single pages' (same reads).
        multi_same[tool] = sum(" ".join(a.split()) == " ".join(b.split()) for a, b in zip(
            text_pages(dst), [text_pages(BUILD / tool / s.name)[0] for s in singles])) / len(items)
    input_size = sum(s.stat().st_size for s in singles)
    print(f"\n{len(items)} SROIE receipts, scanned PDFs at {SCAN_DPI} dpi; parse {args.threads} thread(s), "
          f"OCRmyPDF --jobs 2; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    print(f"{'tool':9} {'CERci':>7} {'Wrec_ci':>8} {'size/in 1p':>11} {'size/in 40p':>12} "
          f"{'s/page 1p (median)':>19} {'s/page 40p':>11} {'40p text = 1p':>14}")
    for tool in tools:
        score = devset.cer(BUILD / f"pred-{tool}", {"sroie"}, pages=len(items))["sroie"]
        print(f"{tool:9} {score['cer_ci_micro']:7.4f} {score['word_recall_ci']:8.4f} {sizes[tool] / input_size:11.3f} "
              f"{multi_ratio[tool]:12.3f} {statistics.median(seconds[tool]):19.2f} {multi_seconds[tool]:11.2f} "
              f"{multi_same[tool]:14.2f}")


if __name__ == "__main__":
    main()
