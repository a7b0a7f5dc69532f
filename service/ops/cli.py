"""Command line: run the configured model on image files, for people and for benchmarks.

    .venv/bin/python -m service.cli IMAGE... [--out DIR] [--threads N] [--device D] [--recognize-only]
        [--pipeline parse|rapidocr]

With --out, each image gives DIR/<stem>.json = {"lines": [...], "seconds": <parse call alone>},
the format ../shared/tools/score.py reads; without it the text is printed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

from .. import settings as settings_mod
from ..documents.images import decode_page
from ..ocr import allocator
from ..ocr.model import load_model


def main(argv: list[str] | None = None) -> None:
    cfg = settings_mod.load()
    parser = argparse.ArgumentParser(prog="python -m service.cli", description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="write <stem>.json per image here")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N (default cpu)")
    parser.add_argument("--recognize-only", action="store_true", help="treat each image as one text line")
    parser.add_argument("--model", default=cfg.model.family, help=f"model family (default {cfg.model.family})")
    parser.add_argument("--precision", default=cfg.model.precision, help="auto, fp32 or a family's opt-in (README; default from config)")
    parser.add_argument("--pipeline", default=cfg.model.pipeline, choices=settings_mod.PIPELINES,
                        help=f"ppocr: parse's own pipeline or RapidOCR's exact one (default {cfg.model.pipeline})")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    model_cfg = dataclasses.replace(cfg.model, family=args.model, precision=args.precision,
                                    pipeline=args.pipeline)
    model = load_model(model_cfg, device=args.device, threads=args.threads)
    model.warmup()
    run = model.recognize if args.recognize_only else model.parse
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
    for path in args.images:
        image, grey = decode_page(path.read_bytes(), cfg.limits, grey=model.reads_grey)
        start = time.perf_counter()
        page = run([image], [grey])[0]
        seconds = time.perf_counter() - start
        allocator.release_above(cfg.limits.worker_memory_bytes)  # a worker's allowance (service/web/api.py)
        if args.out:
            record = {"lines": [line.to_json() for line in page.lines], "seconds": round(seconds, 4)}
            (args.out / f"{path.stem}.json").write_text(json.dumps(record, ensure_ascii=False))
            print(f"{path.name}: {len(page.lines)} lines in {seconds:.3f}s")
        else:
            print(f"== {path.name} ({seconds:.3f}s)\n{page.text}")


if __name__ == "__main__":
    main()
