"""make bench-documents: scanned pages as a PDF against the same pages as images, and the dpi sweep.

    python -m tests.bench_documents compare [--pages 20]   seconds per page and peak RSS, PDF vs images
    python -m tests.bench_documents dpi [--pages 10] [--dpi 100,150,200,250,300]

`compare` posts one 20-page scanned PDF (SROIE receipts, each page the receipt's size at the dpi
the PDF is rendered at) to the in-process app, then the same receipts as images, each in a fresh
process, so that each process's peak RSS (ru_maxrss) is its own.

`dpi` puts each receipt in a PDF at its native size (a receipt roll is 80 mm wide: the scan's
width over 3.15 inches is its dpi), renders it back at each dpi, reads it with the model and
scores it with ../shared/tools/score.py: CER against seconds per page.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from service import documents, settings
from tests import pdfs

DEV = settings.ROOT.parent / "shared" / "ocr-dev"
SCORE = settings.ROOT.parent / "shared" / "tools" / "score.py"
RECEIPT_INCHES = 80 / 25.4


def receipts(count: int) -> list[Path]:
    paths = sorted(DEV.glob("sroie_[0-9]*.jpg"))[:count]
    if not paths:
        sys.exit(f"no SROIE pages in {DEV}")
    return paths


def receipt_pdf(paths: list[Path], resolution: float) -> bytes:
    """The receipts' own JPEG bytes as PDF pages at `resolution` (Pillow embeds a JPEG as it is)."""
    return pdfs.scanned_pdf([Image.open(p) for p in paths], resolution=resolution)


def one_run(kind: str, count: int, dpi: float) -> None:
    """In this process: the app, one warm-up page, then the request; prints one JSON line."""
    from tests.support import loaded_app, multipart

    cfg = settings.load()
    cfg = dataclasses.replace(cfg, limits=dataclasses.replace(cfg.limits, max_pages=count, max_images=count,
                                                              max_body_bytes=1 << 30, deadline_seconds=3600))
    client = loaded_app(cfg).test_client()
    paths = receipts(count)
    warm, ctype = multipart([("image", paths[0].name, paths[0].read_bytes(), "image/jpeg")])
    client.post("/v1/parse", data=warm, content_type=ctype)
    if kind == "pdf":
        body, ctype = multipart([("image", "receipts.pdf", receipt_pdf(paths, dpi), "application/pdf")])
    else:
        body, ctype = multipart([("image", p.name, p.read_bytes(), "image/jpeg") for p in paths])
    start = time.perf_counter()
    resp = client.post(f"/v1/parse?dpi={dpi:g}", data=body, content_type=ctype)
    seconds = time.perf_counter() - start
    out = resp.get_json()
    assert resp.status_code == 200, out
    print(json.dumps({"kind": kind, "pages": len(out["images"]), "seconds_per_page": seconds / len(out["images"]),
                      "decode_ms": out["timing_ms"]["decode"],
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def compare(count: int, dpi: float) -> None:
    for kind in ("pdf", "images"):
        proc = subprocess.run([sys.executable, "-m", "tests.bench_documents", "_run", kind, str(count), str(dpi)],
                              capture_output=True, text=True, cwd=settings.ROOT)
        if proc.returncode:
            sys.exit(proc.stderr[-3000:])
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{kind:>6}: {r['pages']} pages, {r['seconds_per_page']:.3f} s/page "
              f"(decode {r['decode_ms'] / r['pages']:.1f} ms/page), peak worker RSS {r['peak_rss_mib']:.0f} MiB")


def sweep(count: int, dpis: list[float]) -> None:
    from service.ocr.model import load_model

    cfg = settings.load()
    model = load_model(cfg.model, "cpu", 2)
    model.warmup()
    limits = dataclasses.replace(cfg.limits, max_pages=1)
    paths = receipts(count)
    gt = Path(tempfile.mkdtemp(prefix="bench-docs-gt-"))
    for p in paths:
        shutil.copy(p.with_suffix(".json"), gt)
    for dpi in dpis:
        pred = Path(tempfile.mkdtemp(prefix=f"bench-docs-{dpi:g}-"))
        seconds = 0.0
        for p in paths:
            native = Image.open(p).width / RECEIPT_INCHES
            data = receipt_pdf([p], native)
            start = time.perf_counter()
            (page,) = documents.read_pages([data], limits, documents.ReadOptions(dpi=dpi, documents=cfg.documents))
            lines = model.parse([page.rgb], [None])[0].lines
            seconds += time.perf_counter() - start
            # Back to the scan's pixels, where the ground truth's quads are.
            k = native / page.dpi
            json.dump({"lines": [{"text": l.text, "quad": [[x * k, y * k] for x, y in l.quad]} for l in lines]},
                      open(pred / f"{p.stem}.json", "w"))
        score = subprocess.run([sys.executable, str(SCORE), str(gt), str(pred), "--json-out", str(pred / "s.json")],
                               capture_output=True, text=True)
        overall = json.load(open(pred / "s.json"))
        cer = _find(overall, "cer_ci_micro") if overall else None
        print(f"dpi {dpi:>5g}: CER(ci, micro) {cer}, {seconds / len(paths):.3f} s/page")
        if score.returncode:
            print(score.stderr[-500:])


def _find(tree, key):
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        for v in tree.values():
            found = _find(v, key)
            if found is not None:
                return found
    return None


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_run":
        one_run(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(prog="python -m tests.bench_documents")
    parser.add_argument("what", choices=["compare", "dpi"])
    parser.add_argument("--pages", type=int)
    parser.add_argument("--dpi", default=None)
    args = parser.parse_args()
    if args.what == "compare":
        compare(args.pages or 20, float(args.dpi or settings.load().documents.dpi))
    else:
        sweep(args.pages or 10, [float(d) for d in (args.dpi or "100,150,200,250,300").split(",")])


if __name__ == "__main__":
    main()
