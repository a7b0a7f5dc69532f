"""Searchable PDFs from scans: parse against OCRmyPDF 17, on the same scanned PDFs, same machine.

`make bench-pdf` installs OCRmyPDF in a venv of its own (build/ocrmypdf-venv) with Tesseract and
Ghostscript from apt; none of it is a dependency of the service. The scans are made here, into
build/bench-pdf/, from the 40 SROIE receipts of ../shared/ocr-dev: each JPEG embedded as it is
(DCTDecode) at 200 dpi, as a scanner writes it, one single-page PDF per receipt and one PDF of all
40. Each tool turns each scan into a searchable PDF: parse in-process with its model loaded (the
service's path: documents.read_pages -> the model -> formats.render), OCRmyPDF as its command
(`ocrmypdf --output-type pdf`: the original pages kept, no PDF/A rewrite by Ghostscript, which
parse does not do either; its start-up counts, as a user's call pays it). The two take turns on
each single-page PDF, then on the 40-page one (twice, in ABBA order).

Printed per tool: the text layer's words where `pdftotext -bbox` places them, scored by score.py
(which orders them into rows itself, the same way for both tools; case-insensitive CER and word
recall, the dev-set measure of tests/devset.py); output size / input size; seconds per page.
Each tool has 2 cores: on single pages parse has `--threads` torch threads and OCRmyPDF --jobs 2;
on the 40-page file parse spreads pages over `--workers` processes of one thread each, as a job
spreads a document over the service's workers, and OCRmyPDF runs two pages at once (--jobs 2).
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
from concurrent.futures import ProcessPoolExecutor
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


def page_entries(model, data: bytes, cfg: settings_mod.Settings, pages: str | None = None) -> list[dict]:
    """What POST /v1/parse does with the upload's pages, without HTTP: their JSON entries."""
    limits = dataclasses.replace(cfg.limits, max_pages=cfg.limits.max_document_pages)
    options = documents.ReadOptions(pages=documents.parse_pages(pages), grey=model.reads_grey, documents=cfg.documents)
    entries = []
    for doc in documents.read_pages([data], limits, options):
        page = Page(doc.width, doc.height, doc.lines) if doc.lines is not None else \
            model.parse([doc.rgb], [doc.grey])[0]
        entry = formats.image_json(page, words=True) | {"file": doc.file, "page": doc.page, "source": doc.source}
        if doc.dpi is not None:
            entry["dpi"] = doc.dpi
        entries.append(entry)
    return entries


_WORKER: dict = {}


def _start_worker() -> None:
    """A worker process as a service worker is: its own model, one thread."""
    cfg = settings_mod.load()
    _WORKER.update(cfg=cfg, model=load_model(cfg.model, device="cpu", threads=1))
    _WORKER["model"].warmup()


def _read_page(task: tuple[Path, int]) -> list[dict]:
    path, page = task
    return page_entries(_WORKER["model"], path.read_bytes(), _WORKER["cfg"], str(page))


def parse_pdf(model, src: Path, cfg: settings_mod.Settings, pool: ProcessPoolExecutor | None = None) -> bytes:
    """?format=pdf for the file: read in-process, or page by page over the pool's workers, as a
    job spreads a document over the service's workers; then one render over the upload."""
    data = src.read_bytes()
    if pool is None:
        entries = page_entries(model, data, cfg)
    else:
        count = documents.count_pages(data, cfg.limits)
        entries = [e for part in pool.map(_read_page, [(src, n) for n in range(1, count + 1)]) for e in part]
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
    parser.add_argument("--threads", type=int, default=2, help="parse's torch threads on single pages (default 2)")
    parser.add_argument("--workers", type=int, default=2,
                        help="parse's worker processes (1 thread each) on the 40-page file, as [jobs] workers (default 2)")
    parser.add_argument("--multi-only", action="store_true",
                        help="only the 40-page file (the single pages' outputs of an earlier run are compared)")
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
    tools = ("parse", "ocrmypdf")
    if not args.multi_only:
        model = load_model(cfg.model, device="cpu", threads=args.threads)
        model.warmup()
        singles_table(items, singles, model, cfg, args.threads)
    with ProcessPoolExecutor(args.workers, initializer=_start_worker) as pool:
        list(pool.map(_read_page, [(singles[0], 1)] * args.workers))  # every worker loaded and warm
        runs = {"parse": lambda s, d: d.write_bytes(parse_pdf(None, s, cfg, pool)), "ocrmypdf": ocrmypdf}
        multi_seconds: dict[str, list[float]] = {t: [] for t in tools}
        for order in (tools, tools[::-1]):  # ABBA: a change in the machine's load falls on both
            for tool in order:
                dst = BUILD / tool / multi.name
                start = time.perf_counter()
                runs[tool](multi, dst)
                multi_seconds[tool].append((time.perf_counter() - start) / len(items))
                print(f"{multi.name}: {tool} {multi_seconds[tool][-1]:.2f} s/page", flush=True)
    print(f"\n{len(items)}-page scanned PDF; parse {args.workers} workers of 1 thread, OCRmyPDF --jobs 2; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    print(f"{'tool':9} {'size/in':>8} {'s/page (2 runs)':>16} {'text = single pages':>20}")
    for tool in tools:
        dst = BUILD / tool / multi.name
        # The 40-page file's text layer, page for page, against the single pages' (same reads).
        same = sum(" ".join(a.split()) == " ".join(b.split()) for a, b in zip(
            text_pages(dst), [text_pages(BUILD / tool / s.name)[0] for s in singles])) / len(items)
        runs_s = " / ".join(f"{v:.2f}" for v in multi_seconds[tool])
        print(f"{tool:9} {dst.stat().st_size / multi.stat().st_size:8.3f} {runs_s:>16} {same:20.2f}")


def singles_table(items, singles: list[Path], model, cfg: settings_mod.Settings, threads: int) -> None:
    """Each single-page scan through both tools, taking turns; scored with score.py."""
    runs = {"parse": lambda s, d: d.write_bytes(parse_pdf(model, s, cfg)), "ocrmypdf": ocrmypdf}
    seconds: dict[str, list[float]] = {t: [] for t in runs}
    sizes: dict[str, int] = {t: 0 for t in runs}
    for src in singles:
        for tool, run in runs.items():  # taking turns, page by page
            dst = BUILD / tool / src.name
            start = time.perf_counter()
            run(src, dst)
            seconds[tool].append(time.perf_counter() - start)
            sizes[tool] += dst.stat().st_size
            (BUILD / f"pred-{tool}" / f"{src.stem}.json").write_text(json.dumps(
                {"lines": words_with_boxes(dst)}, ensure_ascii=False))
        print(f"{src.stem}: parse {seconds['parse'][-1]:.2f}s, ocrmypdf {seconds['ocrmypdf'][-1]:.2f}s", flush=True)
    input_size = sum(s.stat().st_size for s in singles)
    print(f"\n{len(items)} SROIE receipts, single-page scanned PDFs at {SCAN_DPI} dpi; parse {threads} thread(s), "
          f"OCRmyPDF --jobs 2; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    print(f"{'tool':9} {'CERci':>7} {'Wrec_ci':>8} {'size/in':>8} {'s/page (median)':>16} {'parse/ocrmypdf':>15}")
    ratio = statistics.median(p / o for p, o in zip(seconds["parse"], seconds["ocrmypdf"]))
    for tool in runs:
        score = devset.cer(BUILD / f"pred-{tool}", {"sroie"}, pages=len(items))["sroie"]
        print(f"{tool:9} {score['cer_ci_micro']:7.4f} {score['word_recall_ci']:8.4f} {sizes[tool] / input_size:8.3f} "
              f"{statistics.median(seconds[tool]):16.2f} {ratio if tool == 'parse' else 1:15.2f}")
    print()


if __name__ == "__main__":
    main()
