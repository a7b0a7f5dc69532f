"""Command line: run the configured model on image, PDF and TIFF files, for people and benchmarks.

    .venv/bin/python -m service.cli FILE... [--out DIR] [--threads N] [--device D] [--recognize-only]
        [--pages 2-4,7] [--dpi N] [--ocr auto|force]
        [--pipeline parse|rapidocr] [--structure] [--format json|markdown]

With --out, each file gives DIR/<stem>.json. A single image: {"lines": [...], "seconds": <parse
call alone>}, the format the dev-set scorer reads (tests/devset.py). A PDF or a multi-page TIFF: the same keys
for its first page, plus "pages": one such record per page (with "page", "source", "width",
"height" and, for PDFs, "dpi"). --structure adds each page's "regions", "tables" and "text" in their
reading order, as the API's ?structure=1; --format markdown (structure implied) writes DIR/<stem>.md
instead. Without --out the text is printed, page by page.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import torch

from .. import documents, formats
from .. import settings as settings_mod
from ..errors import ClientError
from ..ocr import allocator
from ..ocr.model import load_model
from ..structure import StructureModel, TooManyRegions


def main(argv: list[str] | None = None) -> None:
    cfg = settings_mod.load()
    parser = argparse.ArgumentParser(prog="python -m service.cli", description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="images, PDFs, multi-page TIFFs")
    parser.add_argument("--out", type=Path, help="write <stem>.json per file here")
    parser.add_argument("--pages", help="pages to read from each file, e.g. 2-4,7 (default all)")
    parser.add_argument("--dpi", help=f"PDF rendering resolution (default {cfg.documents.dpi:g})")
    parser.add_argument("--ocr", default="auto", help="auto (a PDF page's text layer where it has one) or force")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N (default cpu)")
    parser.add_argument("--recognize-only", action="store_true", help="treat each image as one text line")
    parser.add_argument("--model", default=cfg.model.family, help=f"model family (default {cfg.model.family})")
    parser.add_argument("--precision", default=cfg.model.precision, help="auto, fp32 or a family's opt-in (README; default from config)")
    parser.add_argument("--pipeline", default=cfg.model.pipeline, choices=settings_mod.PIPELINES,
                        help=f"ppocr: parse's own pipeline or RapidOCR's exact one (default {cfg.model.pipeline})")
    parser.add_argument("--structure", action="store_true", help="add regions and tables (the API's ?structure=1)")
    parser.add_argument("--format", default="json", choices=("json", "markdown"),
                        help="what --out holds per file: <stem>.json or <stem>.md (Markdown implies --structure)")
    args = parser.parse_args(argv)
    args.structure = args.structure or args.format == "markdown"
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    model_cfg = dataclasses.replace(cfg.model, family=args.model, precision=args.precision,
                                    pipeline=args.pipeline)
    model = load_model(model_cfg, device=args.device, threads=args.threads)
    model.warmup()
    run = model.recognize if args.recognize_only else model.parse
    structure = StructureModel.load(cfg.structure, cfg.model.weights_dir, torch.device(args.device)) \
        if args.structure else None
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
            records = [read_page(doc, run, cfg, structure)
                       for doc in documents.read_pages([path.read_bytes()], limits, options)]
        except (ClientError, TooManyRegions) as err:
            print(f"{path.name}: refused: {getattr(err, 'message', err)}")
            failed = True
            continue
        if args.out and args.format == "markdown":
            (args.out / f"{path.stem}.md").write_bytes(formats.render(records, "markdown")[0])
            print(f"{path.name}: {len(records)} page(s) in {sum(r['seconds'] for r in records):.3f}s")
        elif args.out:
            record = {"lines": records[0]["lines"], "seconds": records[0]["seconds"]}
            if len(records) > 1 or records[0].get("dpi") is not None:
                record["pages"] = records
            (args.out / f"{path.stem}.json").write_text(json.dumps(record, ensure_ascii=False))
            lines = sum(len(r["lines"]) for r in records)
            print(f"{path.name}: {len(records)} page(s), {lines} lines in {sum(r['seconds'] for r in records):.3f}s")
        else:
            for r in records:
                print(f"== {path.name} page {r['page']} ({r['source']}, {r['seconds']:.3f}s)\n"
                      + "\n".join(line["text"] for line in r["lines"]))
    raise SystemExit(1 if failed else 0)


def read_page(doc: documents.PageImage, run, cfg: settings_mod.Settings, structure: StructureModel | None = None) -> dict:
    """One page's record: the model's reading of its pixels, or its text layer as it is; with
    structure, its regions and tables too."""
    start = time.perf_counter()
    if doc.lines is not None:
        lines = doc.lines
    else:
        lines = run([doc.rgb], [doc.grey])[0].lines
        allocator.release_above(cfg.limits.worker_memory_bytes)  # a worker's allowance (service/web/api.py)
    record = {"page": doc.page, "source": doc.source, "width": doc.width, "height": doc.height,
              "lines": [line.to_json() for line in lines]}
    if structure is not None:
        found = structure.analyse(doc.rgb, lines)
        record |= {"text": found.text(lines), **found.to_json()}
    record["seconds"] = round(time.perf_counter() - start, 4)
    if doc.dpi is not None:
        record["dpi"] = doc.dpi
    return record

if __name__ == "__main__":
    main()
