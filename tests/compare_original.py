"""Time our rebuild against the original package on the same SROIE dev pages, threads and machine.

    python -m tests.compare_original --family ppocr [--pages 10] [--threads 2] [--precision fp32]
        [--original-python build/bench-venv/bin/python]

For ppocr five engines take turns: ours with pipeline "parse" (at --precision, and at fp32 beside
it unless that is fp32) and with "rapidocr", and RapidOCR with its defaults and with use_cls off
(its fastest setting, and as accurate as it gets).

The original is RapidOCR 3.10.0 (ppocr) or EasyOCR 1.7.2 (easyocr), run as its reference outputs
were made (the README beside each reference folder, tests/devset.py: REFERENCE), but timed as ours is: one call per page, from
the file to the result, after a warm-up. Each engine runs in its own process; they take turns on
each page (see `interleaved`). The original is not a dependency of parse
(EasyOCR needs torchvision, RapidOCR onnxruntime): it runs under --original-python, a venv of its
own (`make bench-rapidocr` makes build/bench-venv, `make bench-easyocr` build/easyocr-venv; each is
its family's default). EasyOCR reads its weights from
weights/, RapidOCR from its wheel. Prints per engine the median and p90 seconds per page and its
parity with the reference.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from tests.devset import DEV, REFERENCE, compare, dev_items, percentile

ROOT = Path(__file__).resolve().parent.parent
# family -> (the original's interpreter, the make target that installs it)
ORIGINAL_PYTHON = {"ppocr": (ROOT / "build" / "bench-venv" / "bin" / "python", "bench-rapidocr"),
                   "easyocr": (ROOT / "build" / "easyocr-venv" / "bin" / "python", "bench-easyocr")}


def pages(count: int) -> list[Path]:
    return [path for path, _ in dev_items({"sroie"})][:count]


Engine = Callable[[Path], list[dict]]  # image file -> its lines as {text, confidence, quad}


def ours(family: str, precision: str, threads: int, pipeline: str = "parse") -> Engine:
    from service.ocr import allocator
    from service import settings as settings_mod
    from service.documents.images import decode_page
    from service.settings import Limits
    from service.ocr.model import load_model

    cfg = settings_mod.load()
    model = load_model(dataclasses.replace(cfg.model, family=family, precision=precision, pipeline=pipeline),
                       "cpu", threads)
    model.warmup()

    def run(path: Path) -> list[dict]:
        image, grey = decode_page(path.read_bytes(), Limits(), grey=model.reads_grey)
        page = model.parse([image], [grey])[0]
        allocator.release_above(cfg.limits.worker_memory_bytes)  # as a worker does after each request
        return [line.to_json() for line in page.lines]

    return run


def original(family: str, threads: int, use_cls: bool = True) -> Engine:
    if family == "easyocr":
        import easyocr
        import torch

        from service import settings as settings_mod

        torch.set_num_threads(threads)
        reader = easyocr.Reader(["en"], gpu=False, quantize=False, download_enabled=False,
                                model_storage_directory=str(settings_mod.load().model.weights_dir), verbose=False)

        def run(path: Path) -> list[dict]:
            return [{"text": text, "confidence": float(conf), "quad": [[float(v) for v in p] for p in box]}
                    for box, text, conf in reader.readtext(str(path))]
        return run

    from rapidocr import RapidOCR

    engine = RapidOCR(params={"EngineConfig.onnxruntime.intra_op_num_threads": threads,
                              "EngineConfig.onnxruntime.inter_op_num_threads": 1, "Global.use_cls": use_cls})

    def run(path: Path) -> list[dict]:
        out = engine(str(path))
        if out.txts is None:
            return []
        return [{"text": t, "confidence": float(s), "quad": b.tolist()} for b, t, s in zip(out.boxes, out.txts, out.scores)]
    return run


def serve(args: argparse.Namespace) -> None:
    """One engine in this process: reads page paths from stdin, answers a JSON line per page."""
    run = (ours(args.family, args.precision, args.threads, args.pipeline) if args.engine == "ours"
           else original(args.family, args.threads, not args.no_cls))
    run(pages(1)[0])  # warm-up, as the references had
    print("ready", flush=True)
    for line in sys.stdin:
        path = Path(line.strip())
        start = time.perf_counter()
        lines = run(path)
        seconds = time.perf_counter() - start
        ref = json.loads((REFERENCE[args.family] / f"{path.stem}.json").read_text())["lines"]
        print(json.dumps({"seconds": seconds, "same": compare(lines, ref)[0], "ref_lines": len(ref)}), flush=True)


def engines(args: argparse.Namespace) -> dict[str, list[str]]:
    """Each engine's name and the flags of its serving process."""
    if args.family == "easyocr":
        return {"ours": ["--engine", "ours"], "original": ["--engine", "original"]}
    # fp32 beside the default: what CPUs without native bf16 get, with a speed goal of its own.
    fp32 = {"parse-fp32": ["--engine", "ours", "--pipeline", "parse", "--precision", "fp32"]} \
        if args.precision != "fp32" else {}
    return {"parse": ["--engine", "ours", "--pipeline", "parse"], **fp32,
            "rapidocr": ["--engine", "ours", "--pipeline", "rapidocr"],
            "RapidOCR": ["--engine", "original"],
            "RapidOCR-nocls": ["--engine", "original", "--no-cls"]}


def interleaved(args: argparse.Namespace) -> dict[str, dict]:
    """The engines loaded side by side, each page timed by one after the other, the order turning.

    Only one engine computes at a time (the other waits on its stdin), so neither's threads compete
    with the other's; and a shared machine's speed drifting over the run (it does: docs/benchmarks.md, Machines)
    slows both alike instead of whichever engine happened to run second.
    """
    children = {}
    for engine, flags in engines(args).items():
        python = sys.executable if flags[1] == "ours" else str(args.original_python)
        cmd = [python, "-m", "tests.compare_original", "--family", args.family, "--threads", str(args.threads),
               "--precision", args.precision, *flags]  # a --precision in flags overrides the first
        # stdout carries the answers; stderr (logs, a traceback) goes straight to the terminal.
        children[engine] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    results = {engine: {"seconds": [], "same": 0, "ref_lines": 0} for engine in children}
    try:
        for engine, child in children.items():
            if child.stdout.readline().strip() != "ready":
                sys.exit(f"{engine} failed to start (its error is above)")
        names = list(children)
        for i, path in enumerate(pages(args.pages)):
            for engine in names[i % len(names):] + names[:i % len(names)]:
                child = children[engine]
                child.stdin.write(f"{path}\n")
                child.stdin.flush()
                answer = child.stdout.readline()
                if not answer:
                    sys.exit(f"{engine} died on {path.name} (its error is above)")
                reply = json.loads(answer)
                r = results[engine]
                r["seconds"].append(reply["seconds"])
                r["same"] += reply["same"]
                r["ref_lines"] += reply["ref_lines"]
    finally:
        for child in children.values():
            child.stdin.close()
            child.wait(timeout=60)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", required=True, choices=sorted(REFERENCE))
    parser.add_argument("--pages", type=int, default=10, help="the first N SROIE dev pages")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto", help="ours only")
    parser.add_argument("--original-python", type=Path,
                        help="interpreter that has the original package (default: the family's bench venv)")
    parser.add_argument("--engine", choices=("ours", "original"), help=argparse.SUPPRESS)
    parser.add_argument("--pipeline", default="parse", help=argparse.SUPPRESS)
    parser.add_argument("--no-cls", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not DEV.is_dir():
        sys.exit(f"skipped: the dev set {DEV} is absent")
    if args.pages < 1:
        parser.error("--pages must be at least 1")
    if args.engine:
        return serve(args)
    default_python, target = ORIGINAL_PYTHON[args.family]
    args.original_python = args.original_python or default_python
    if not args.original_python.exists():
        sys.exit(f"{args.original_python} is missing: `make {target}` makes it, or pass --original-python")
    results = interleaved(args)
    print(f"{args.family}, {args.pages} SROIE pages, {args.threads} threads, ours at precision {args.precision}")
    for engine, r in results.items():
        s = r["seconds"]
        print(f"  {engine:<15} median {statistics.median(s):6.3f} s  p90 {percentile(s, 0.9):6.3f} s"
              f"  parity {r['same']}/{r['ref_lines']}")
    pairs = ([("ours", "original")] if args.family == "easyocr" else
             [("parse", "RapidOCR-nocls"), ("parse-fp32", "RapidOCR-nocls"), ("parse", "RapidOCR"),
              ("rapidocr", "RapidOCR")])
    for mine, theirs in pairs:
        if mine not in results:
            continue
        a, b = results[mine]["seconds"], results[theirs]["seconds"]
        per_page = [x / y for x, y in zip(a, b)]
        print(f"  {mine}/{theirs}: {statistics.median(a) / statistics.median(b):.2f}x on medians,"
              f" {statistics.median(per_page):.2f}x median per page, {sum(a) / sum(b):.2f}x on total time")


if __name__ == "__main__":
    main()
