"""make bench-structure: regions, tables and Markdown on ../shared/structure-dev, their cost, and memory.

    python -m tests.bench_structure [--configs default,exact] [--per-subset N] [--soak-pages 50]
        [--ocr-cache DIR] [--skip-e2e] [--out build/bench-structure]

1. Accuracy. Every dev item is read by parse's OCR model, then by the structure models in each
   configuration: `default` (conf/parse.toml's [structure]) and `exact` (layout = "rapidlayout",
   table = "rapidtable": RapidLayout 1.2.1 and RapidTable 0.3.0 reproduced). A page item gets
   regions, tables and Markdown; a table crop (PubTabNet) is one table (TableModel.read with no
   box). Predictions go to OUT/<config>/ in the shape of POST /v1/parse, and
   ../shared/tools/score_structure.py scores them and the reference's outputs
   (../shared/structure-dev-reference/e2e): TEDS and TEDS-Struct per subset, layout mAP@0.5,
   table-region recall, Markdown text NED and heading F1 (and level accuracy).
2. Cost, at 2 threads: seconds per page of layout and per table (structure and cell text), the
   medians over the items above; then a 20-page mixed PDF (scanned pages and born-digital pages)
   read end to end, page by page, plain OCR and OCR + structure + Markdown taking turns.
3. Memory: the live heap (glibc) and RSS of this process over --soak-pages structured pages
   (the dev pages over and over): first, after a warm-up, and last. `make bench-structure
   SOAK_PAGES=500` runs the issue's 500.

--ocr-cache DIR reuses `python -m service.ops.cli --out DIR` results for the dev images (the OCR
is the same model; it spares the time of reading every page again), and keeps there the pages it
had to read.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from service import documents, formats, settings
from service.ocr import allocator
from service.ocr.model import load_model
from service.ocr.types import Line, Page, Word
from service.structure import StructureModel
from tests import pdfs

SHARED = settings.ROOT.parent / "shared"
DEV = SHARED / "structure-dev"
REFERENCE = SHARED / "structure-dev-reference" / "e2e"
SCORER = SHARED / "tools" / "score_structure.py"
THREADS = 2
CONFIGS = {"default": {}, "exact": {"layout": "rapidlayout", "table": "rapidtable"}}


def scorer():
    spec = importlib.util.spec_from_file_location("score_structure", SCORER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def items(per_subset: int | None) -> list[tuple[str, dict, Path]]:
    """The dev items (stem, ground truth, image), or the first `per_subset` of each subset but
    OmniDocBench."""
    out, taken = [], {}
    for path in sorted(DEV.glob("*.json")):
        gt = json.loads(path.read_text())
        image = next((p for p in (path.with_suffix(".png"), path.with_suffix(".jpg")) if p.exists()), None)
        # OmniDocBench's 9 pages carry the layout and Markdown goals: always all of them.
        limited = per_subset and gt["subset"] != "omnidocbench" and taken.get(gt["subset"], 0) >= per_subset
        if image is None or limited:
            continue
        taken[gt["subset"]] = taken.get(gt["subset"], 0) + 1
        out.append((path.stem, gt, image))
    return out


def scored(score, stems: list[str], pred_dir: Path, work: Path) -> dict:
    """score_structure's scores of `pred_dir` on these items only (a folder of links to their GT)."""
    gt = work / "gt"
    shutil.rmtree(gt, ignore_errors=True)
    gt.mkdir(parents=True)
    for stem in stems:
        (gt / f"{stem}.json").symlink_to(DEV / f"{stem}.json")
    return score.score_dirs(str(gt), str(pred_dir))


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def cached_lines(cache: Path | None, stem: str) -> list[Line] | None:
    if cache is None or not (cache / f"{stem}.json").exists():
        return None
    record = json.loads((cache / f"{stem}.json").read_text())
    return [Line(l["text"], l["confidence"], l["quad"],
                 [Word(w["text"], w["confidence"], w["quad"]) for w in l.get("words", [])]) for l in record["lines"]]


def structure_model(cfg: settings.Settings, overrides: dict) -> StructureModel:
    known = {f.name for f in dataclasses.fields(cfg.structure)}
    st = dataclasses.replace(cfg.structure, **{k: v for k, v in overrides.items() if k in known})
    return StructureModel.load(st, cfg.model.weights_dir, torch.device("cpu"))


class Timer:
    """Wraps a model's method to collect its wall seconds per call."""

    def __init__(self, obj, name: str):
        self.seconds: list[float] = []
        inner = getattr(obj, name)

        def timed(*args, **kw):
            start = time.perf_counter()
            try:
                return inner(*args, **kw)
            finally:
                self.seconds.append(time.perf_counter() - start)

        setattr(obj, name, timed)


def predict(structure: StructureModel, gt: dict, image: np.ndarray, lines: list[Line]) -> tuple[dict, str | None]:
    """One item's prediction as /v1/parse's page entry, and its Markdown."""
    page = formats.image_json(Page(image.shape[1], image.shape[0], lines), words=True)
    if gt["task"] == "table":
        page["tables"] = [structure.table.read(image, None, lines).to_json()]
        return page, None
    found = structure.analyse(image, lines)
    page |= {"text": found.text(lines), **found.to_json()}
    return page, formats.render([page], "markdown")[0].decode()


def accuracy(args, cfg, model, score) -> dict[str, dict]:
    results, timing = {}, {}
    dev = items(args.per_subset)
    stems = [stem for stem, _, _ in dev]
    lines_of: dict[str, list[Line]] = {}
    for stem, _, path in dev:
        lines = cached_lines(args.ocr_cache, stem)
        if lines is None:
            lines = model.parse([rgb(path)], [None])[0].lines
            if args.ocr_cache is not None:  # the next run reads it from there
                args.ocr_cache.mkdir(parents=True, exist_ok=True)
                (args.ocr_cache / f"{stem}.json").write_text(json.dumps(
                    {"lines": [line.to_json(words=True) for line in lines]}, ensure_ascii=False))
        lines_of[stem] = lines
    for name in args.configs:
        structure = structure_model(cfg, CONFIGS[name])
        layout_t, table_t = Timer(structure.layout, "detect"), Timer(structure.table, "read")
        out = args.out / name
        out.mkdir(parents=True, exist_ok=True)
        for stem, gt, path in dev:
            page, md = predict(structure, gt, rgb(path), lines_of[stem])
            (out / f"{stem}.json").write_text(json.dumps({"images": [page]}, ensure_ascii=False))
            if md is not None:
                (out / f"{stem}.md").write_text(md)
        results[name] = scored(score, stems, out, args.out)
        timing[name] = {"layout_s_per_page": statistics.median(layout_t.seconds) if layout_t.seconds else None,
                        "table_s_per_table": statistics.median(table_t.seconds) if table_t.seconds else None,
                        "tables": len(table_t.seconds)}
        del structure
    results["reference"] = scored(score, stems, REFERENCE, args.out)
    return {"scores": results, "timing": timing}


SUBSETS = ("pubtabnet", "icdar2013", "omnidocbench", "publaynet")


def table(report: dict) -> str:
    """The closing note's table: one row per measure, one column per configuration."""
    scores = report["scores"]
    names = list(scores)
    rows = []
    for subset in SUBSETS:
        for key, label in (("teds", "TEDS"), ("teds_struct", "TEDS-Struct")):
            rows.append((f"{subset} {label}", [scores[n]["summary"].get(subset, {}).get(key) for n in names]))
    for subset in ("omnidocbench", "publaynet", "icdar2013"):
        rows.append((f"{subset} layout mAP@0.5", [scores[n]["summary"].get(subset, {}).get("map50") for n in names]))
    rows.append(("icdar2013 table-region recall",
                 [scores[n]["summary"].get("icdar2013", {}).get("table_region_recall") for n in names]))
    for key, label in (("md_ned", "omnidocbench Markdown NED"), ("heading_f1", "omnidocbench heading F1"),
                       ("heading_level_acc", "omnidocbench heading level accuracy")):
        rows.append((label, [scores[n]["summary"].get("omnidocbench", {}).get(key) for n in names]))
    for key, label in (("layout_s_per_page", "layout s/page"), ("table_s_per_table", "table s/table")):
        rows.append((label, [report["timing"].get(n, {}).get(key) for n in names]))
    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    lines = ["| measure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {label} | " + " | ".join(fmt(v) for v in values) + " |" for label, values in rows]
    return "\n".join(lines)


def mixed_pdf(count: int) -> bytes:
    """One PDF of `count` pages: dev page images as scans (150 dpi), every fifth page the report page of
    tests/structure_page.py, born-digital (its text in the text layer)."""
    import io

    import pypdfium2 as pdfium

    from tests import structure_page
    scans = [p for _, gt, p in items(None) if gt["task"] == "page" and gt["subset"] != "icdar2013"]
    scans += [p for _, gt, p in items(None) if gt["subset"] == "icdar2013"]
    scanned = pdfium.PdfDocument(pdfs.scanned_pdf([Image.open(p).convert("RGB") for p in scans[:count]],
                                                  resolution=150.0))
    digital = pdfium.PdfDocument(structure_page.pdf())
    mixed = pdfium.PdfDocument.new()
    for k in range(count):
        if (k + 1) % 5:
            mixed.import_pages(scanned, [k])
        else:
            mixed.import_pages(digital, [0])
    out = io.BytesIO()
    mixed.save(out)
    for doc in (mixed, scanned, digital):
        doc.close()
    return out.getvalue()


def end_to_end(args, cfg, model) -> dict:
    """The mixed PDF page by page: plain OCR, then OCR + structure + Markdown, taking turns."""
    data = mixed_pdf(args.e2e_pages)
    structure = structure_model(cfg, {})
    plain, structured = [], []
    limits = dataclasses.replace(cfg.limits, max_pages=10_000)
    for index in range(args.e2e_pages):
        for turn in ("plain", "structured"):
            options = documents.ReadOptions(pages=documents.PageSelection(((index + 1, index + 1),)),
                                            documents=cfg.documents, pixels=turn == "structured")
            start = time.perf_counter()
            doc = next(documents.read_pages([data], limits, options))
            page = Page(doc.width, doc.height, doc.lines) if doc.lines is not None else \
                model.parse([doc.rgb], [None])[0]
            entry = formats.image_json(page, words=True)
            if turn == "structured":
                found = structure.analyse(doc.rgb, page.lines)
                entry |= {"text": found.text(page.lines), **found.to_json()}
                formats.render([entry], "markdown")
            else:
                formats.render([entry], "text")
            (plain if turn == "plain" else structured).append(time.perf_counter() - start)
    return {"pages": args.e2e_pages, "plain_s": round(sum(plain), 2), "markdown_s": round(sum(structured), 2),
            "ratio": round(sum(structured) / sum(plain), 3),
            "median_page_ratio": round(statistics.median(s / p for s, p in zip(structured, plain)), 3)}


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def soak(args, cfg, model) -> dict:
    """Live heap and RSS over --soak-pages structured pages (the dev pages, round and round)."""
    structure = structure_model(cfg, {})
    pages = [(p, cached_lines(args.ocr_cache, stem)) for stem, gt, p in items(None) if gt["task"] == "page"][:12]
    samples = []
    for k in range(args.soak_pages):
        path, lines = pages[k % len(pages)]
        image = rgb(path)
        if lines is None:
            lines = model.parse([image], [None])[0].lines
        found = structure.analyse(image, lines)
        formats.render([formats.image_json(Page(image.shape[1], image.shape[0], lines), words=True)
                        | found.to_json()], "markdown")
        allocator.release_above(cfg.limits.worker_memory_bytes)
        if k in (len(pages) - 1, args.soak_pages - 1) or (k + 1) % 50 == 0:
            heap = allocator.heap_in_use_bytes()
            samples.append({"page": k + 1, "heap_mib": None if heap is None else round(heap / 2**20, 1),
                            "rss_mib": round(rss_mib(), 1)})
    return {"pages": args.soak_pages, "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="default,exact")
    parser.add_argument("--per-subset", type=int, default=None, help="only the first N items of each subset")
    parser.add_argument("--soak-pages", type=int, default=50)
    parser.add_argument("--e2e-pages", type=int, default=20)
    parser.add_argument("--ocr-cache", type=Path)
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--soak-only", action="store_true", help="only the memory soak (fast with --ocr-cache)")
    parser.add_argument("--out", type=Path, default=settings.ROOT / "build" / "bench-structure")
    args = parser.parse_args()
    args.configs = [c for c in args.configs.split(",") if c]
    if not DEV.is_dir() or not SCORER.exists():
        sys.exit(f"bench-structure needs {DEV} and {SCORER}")
    torch.set_num_threads(THREADS)
    cfg = settings.load()
    model = load_model(cfg.model, "cpu", THREADS)
    model.warmup()
    print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} (shared with other work: timings are "
          "comparable within this run only)", flush=True)
    report = {} if args.soak_only else accuracy(args, cfg, model, scorer())
    if report:
        print(table(report), flush=True)
    if not (args.skip_e2e or args.soak_only):
        report["end_to_end"] = end_to_end(args, cfg, model)
        print(f"{args.e2e_pages}-page mixed PDF, page by page:", json.dumps(report["end_to_end"]), flush=True)
    report["soak"] = soak(args, cfg, model)
    print("memory over structured pages:", json.dumps(report["soak"]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
