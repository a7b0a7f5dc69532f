"""Command line: run the configured model on image, PDF and TIFF files, for people and benchmarks.

    .venv/bin/python -m service.cli FILE... [--out DIR] [--format json|text|markdown|hocr|alto|pdf]
        [--words] [--structure] [--mode page|line|table] [--threads N] [--device D] [--recognize-only]
        [--pages 2-4,7] [--dpi N] [--ocr auto|force] [--pipeline parse|rapidocr]

Without --out, each file's text is printed in reading order (pages apart by a form feed), as the
API's format=text gives it; with --format, each file's document in that format is printed instead
(json, text, markdown, hocr, alto: one after another; pdf is a binary file and needs --out). With
--out, each file gives DIR/<stem>.<ext>: by default the JSON /v1/parse answers for that file (the
same builder, service/formats/answer.py: "images", one entry per page, with "text", "lines",
"blocks", "angle", "source", ...; no request_id), or with --format another of the API's formats,
rendered by the same call the API makes. --structure adds each page's
"regions" and "tables" (the API's ?structure=1; implied by --format markdown), --mode table reads each
image as one table (the API's ?mode=table).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .. import documents, formats
from .. import settings as settings_mod
from ..errors import ClientError
from ..formats.answer import answer, page_json, read, structure_json, table_json
from ..ocr import allocator
from ..ocr.model import OcrModel, load_model
from ..structure import StructureModel


def main(argv: list[str] | None = None) -> None:
    cfg = settings_mod.load()
    parser = argparse.ArgumentParser(prog="python -m service.cli", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="images, PDFs, multi-page TIFFs")
    parser.add_argument("--out", type=Path, help="write <stem>.<ext> per file here (else print the text)")
    parser.add_argument("--format", choices=list(formats.FORMATS),
                        help="as the API's ?format=: what --out holds (default json), or what is printed "
                             "without --out (default the text); pdf needs --out")
    parser.add_argument("--words", action="store_true", help="each line's words in the JSON (the API's ?words=1)")
    parser.add_argument("--pages", help="pages to read from each file, e.g. 2-4,7 (default all)")
    parser.add_argument("--dpi", help=f"PDF rendering resolution (default {cfg.documents.dpi:g})")
    parser.add_argument("--ocr", default="auto", help="auto (a PDF page's text layer where it has one) or force")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N (default cpu)")
    parser.add_argument("--mode", default="page", choices=("page", "line", "table"),
                        help="page (default), line: each image is one text line, table: each image is one table")
    parser.add_argument("--recognize-only", action="store_true", help="the same as --mode line")
    parser.add_argument("--model", default=cfg.model.family, help=f"model family (default {cfg.model.family})")
    parser.add_argument("--precision", default=cfg.model.precision, help="auto, fp32 or a family's opt-in (README; default from config)")
    parser.add_argument("--pipeline", default=cfg.model.pipeline, choices=settings_mod.PIPELINES,
                        help=f"ppocr: parse's own pipeline or RapidOCR's exact one (default {cfg.model.pipeline})")
    parser.add_argument("--structure", action="store_true",
                        help="add regions and tables (the API's ?structure=1; implied by --format markdown)")
    args = parser.parse_args(argv)
    if args.format == "pdf" and not args.out:
        parser.error("--format pdf writes a binary file: add --out DIR")
    printed = None if args.out else args.format  # without --out or --format: the plain text
    args.format = args.format or "json"
    mode = "line" if args.recognize_only else args.mode
    args.structure = (args.structure or args.format == "markdown") and mode == "page"
    if mode == "line" and (args.structure or args.format == "markdown"):
        parser.error("--mode line reads each image as one text line, which has no layout: drop --structure")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    model_cfg = dataclasses.replace(cfg.model, family=args.model, precision=args.precision,
                                    pipeline=args.pipeline)
    model = load_model(model_cfg, device=args.device, threads=args.threads)
    model.warmup()
    structure = StructureModel.load(cfg.structure, cfg.model.weights_dir, torch.device(args.device)) \
        if args.structure or mode == "table" else None
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    try:
        # A command line has no request deadline: a long document is read whole.
        limits = dataclasses.replace(cfg.limits, max_pages=cfg.limits.max_document_pages)
        options = documents.ReadOptions(pages=documents.parse_pages(args.pages),
                                        dpi=documents.parse_dpi(args.dpi, cfg.documents),
                                        ocr=documents.parse_ocr(args.ocr), grey=model.reads_grey,
                                        documents=cfg.documents, pixels=structure is not None)
    except ClientError as err:
        parser.error(err.message)
    failed = False
    for path in args.files:
        try:
            data = path.read_bytes()
            entries, timing = read_file(model, data, limits, options, mode,
                                        words=args.words or args.format != "json", cfg=cfg, structure=structure)
        except ClientError as err:
            print(f"{path.name}: refused: {err.message}", file=sys.stderr)
            failed = True
            continue
        if not args.out and printed is None:
            print("\f".join(e["text"] + "\n" for e in entries), end="")  # as format=text parts pages
            continue
        if args.format == "json":
            document = json.dumps(answer(model, entries, timing), ensure_ascii=False).encode()
        else:
            # The same call, with the same arguments, as the API's (service/web/api.py).
            document, _ = formats.render(entries, args.format, [data])
        if not args.out:
            sys.stdout.buffer.write(document + (b"" if document.endswith(b"\n") else b"\n"))
            sys.stdout.flush()
            continue
        target = args.out / f"{path.stem}.{formats.FORMATS[args.format][1]}"
        target.write_bytes(document)
        lines = sum(len(e["lines"]) for e in entries)
        print(f"{path.name}: {len(entries)} page(s), {lines} lines in {timing['total']:.3f}s -> {target}",
              file=sys.stderr)
    raise SystemExit(1 if failed else 0)


def read_file(model: OcrModel, data: bytes, limits: settings_mod.Limits, options: documents.ReadOptions,
              mode: str, words: bool, cfg: settings_mod.Settings, structure: StructureModel | None = None
              ) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """One file's page entries, timed by stage as the API times a request; with `structure`, each
    page's regions and tables (or, in mode table, the image's one table)."""
    timing = {"decode": 0.0, "detect": 0.0, "recognize": 0.0}
    entries = []
    start = time.perf_counter()
    for doc in documents.read_pages([data], limits, options):
        timing["decode"] += doc.decode_seconds
        page = read(model, doc, mode)
        if doc.lines is None:
            allocator.release_above(cfg.limits.worker_memory_bytes)  # a worker's allowance (service/web/api.py)
        timing["detect"] += page.timing.get("detect", 0.0)
        timing["recognize"] += page.timing.get("recognize", 0.0)
        entry = page_json(doc, page, words)
        if structure is not None:
            began = time.perf_counter()
            entry |= table_json(structure, doc, page) if mode == "table" else structure_json(structure, doc, page)
            stage = "table" if mode == "table" else "structure"
            timing[stage] = timing.get(stage, 0.0) + time.perf_counter() - began
        entries.append(entry)
    timing["total"] = time.perf_counter() - start
    return entries, timing


if __name__ == "__main__":
    main()
