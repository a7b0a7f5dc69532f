"""Run a model family over the dev set (DEV below) and compare it with the reference outputs.

    .venv/bin/python -m tests.devset --family easyocr [--subset sroie] [--threads 2] [--out DIR]
        [--device cuda:0] [--precision fp32] [--batch 8] [--direct]

Prints, per subset: parity with the family's reference (share of reference lines whose text we
reproduce exactly, aligned in order), the largest quad and confidence differences on those lines,
score.py's case-insensitive CER, and seconds per image (median, p90) beside the reference's. With
--batch N each image is charged an equal share of its batch's time, so p90 says little there.
The dev set has no redistribution licence: it is read in place and never copied into the project.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # compare_original imports this module where torch is not installed
    from service.ocr.types import Page

# The dev set and its references sit beside the checkout: they may not be redistributed, so they
# are read in place and never copied into the repository.
SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
DEV = SHARED / "ocr-dev"
REFERENCE = {"easyocr": SHARED / "ocr-dev-reference", "ppocr": SHARED / "ocr-dev-reference-rapidocr"}
SCORE = SHARED / "tools" / "score.py"


def dev_items(subsets: set[str] | None = None) -> list[tuple[Path, dict]]:
    """(image path, ground truth) for every dev image, optionally of some subsets only."""
    items = []
    for gt_path in sorted(DEV.glob("*.json")):
        gt = json.loads(gt_path.read_text())
        if subsets and gt["subset"] not in subsets:
            continue
        image = next(p for p in (gt_path.with_suffix(s) for s in (".jpg", ".png")) if p.exists())
        items.append((image, gt))
    return items


def compare(ours: list[dict], ref: list[dict]) -> tuple[int, float, float]:
    """(reference lines reproduced exactly, max quad diff px, max confidence diff) for one image."""
    matcher = difflib.SequenceMatcher(a=[l["text"] for l in ref], b=[l["text"] for l in ours], autojunk=False)
    same, quad_diff, conf_diff = 0, 0.0, 0.0
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            r, o = ref[block.a + k], ours[block.b + k]
            same += 1
            if "quad" in r:  # recognition references have none
                quad_diff = max(quad_diff, max(abs(a - b) for pr, po in zip(r["quad"], o["quad"])
                                               for a, b in zip(pr, po)))
            conf_diff = max(conf_diff, abs(r["confidence"] - o["confidence"]))
    return same, quad_diff, conf_diff


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def batches(items: list[tuple[Path, dict]], size: int) -> list[list[tuple[Path, dict]]]:
    """Consecutive runs of at most `size` items of one task (pages and crops take different calls)."""
    out: list[list[tuple[Path, dict]]] = []
    for item in items:
        if out and len(out[-1]) < size and out[-1][0][1]["task"] == item[1]["task"]:
            out[-1].append(item)
        else:
            out.append([item])
    return out


def run(family: str, subsets: set[str] | None, threads: int, out: Path, precision: str, device: str,
        batch: int, winograd: bool) -> dict:
    from service.ocr import allocator
    from service import settings as settings_mod
    from service.documents.images import decode_page
    from service.settings import Limits
    from service.ocr.model import load_model

    cfg = settings_mod.load()
    model = load_model(dataclasses.replace(cfg.model, family=family, precision=precision, winograd=winograd),
                       device, threads)
    model.warmup()
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, dict] = {}
    for chunk in batches(dev_items(subsets), batch):
        datas = [image_path.read_bytes() for image_path, _ in chunk]
        fn = model.recognize if chunk[0][1]["task"] == "recognition" else model.parse
        # Timed from the file's bytes, as the references were (EasyOCR's includes its decoding);
        # a batch's time is shared equally by its images.
        start = time.perf_counter()
        images, greys = zip(*(decode_page(data, Limits(), grey=model.reads_grey) for data in datas))
        pages = fn(images, greys)
        # As a worker does in each request (service/web/api.py), and timed with it.
        allocator.release_above(cfg.limits.worker_memory_bytes)
        seconds = (time.perf_counter() - start) / len(chunk)
        for (image_path, gt), page in zip(chunk, pages):
            record(report, out, family, image_path, gt, page, seconds)
    return report


def record(report: dict, out: Path, family: str, image_path: Path, gt: dict, page: Page, seconds: float) -> None:
    """Write one prediction file and add it to its subset's tally against the reference."""
    lines = [line.to_json() for line in page.lines]
    (out / f"{image_path.stem}.json").write_text(json.dumps({"lines": lines, "seconds": seconds}))
    ref = json.loads((REFERENCE[family] / f"{image_path.stem}.json").read_text())
    same, qd, cd = compare(lines, ref["lines"])
    s = report.setdefault(gt["subset"], {"ref_lines": 0, "same": 0, "quad": 0.0, "conf": 0.0,
                                         "seconds": [], "ref_seconds": []})
    s["ref_lines"] += len(ref["lines"])
    s["same"] += same
    s["quad"] = max(s["quad"], qd)
    s["conf"] = max(s["conf"], cd)
    s["seconds"].append(seconds)
    s["ref_seconds"].append(ref["seconds"])
    print(f"{image_path.name}: {len(lines)} lines, {same}/{len(ref['lines'])} as reference, {seconds:.2f}s",
          flush=True)


def cer(pred_dir: Path, subsets: set[str] | None) -> dict[str, float]:
    """score.py's micro case-insensitive CER per subset, on a GT folder holding only the subsets run."""
    with tempfile.TemporaryDirectory() as gt_dir:
        for image_path, gt in dev_items(subsets):
            (Path(gt_dir) / f"{image_path.stem}.json").write_text(json.dumps(gt))
        scores_path = Path(gt_dir) / "scores.json"
        subprocess.run([sys.executable, str(SCORE), gt_dir, str(pred_dir), "--json-out", str(scores_path)],
                       check=True, stdout=subprocess.DEVNULL)
        scores = json.loads(scores_path.read_text())
    return {name: s["cer_ci_micro"] for name, s in scores["summary"].items() if "cer_ci_micro" in s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", required=True, choices=sorted(REFERENCE))
    parser.add_argument("--subset", action="append", help="limit to these subsets (repeatable)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N")
    parser.add_argument("--batch", type=int, default=1, help="images per call (pages of one canvas share a GPU pass)")
    parser.add_argument("--direct", action="store_true", help="easyocr: direct convolutions (winograd = false)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not DEV.is_dir():
        sys.exit(f"skipped: the dev set {DEV} is absent")
    subsets = set(args.subset) if args.subset else None
    out = args.out or Path(tempfile.mkdtemp(prefix=f"dev-{args.family}-"))
    report = run(args.family, subsets, args.threads, out, args.precision, args.device, args.batch, not args.direct)
    cers = cer(out, subsets)
    ref_cers = json.loads((REFERENCE[args.family] / "scores.json").read_text())["summary"]
    print(f"\n{args.family} ({args.precision}{', direct' if args.direct else ''}, {args.device}, {args.threads} threads,"
          f" batch {args.batch}),"
          f" predictions in {out}")
    print(f"{'subset':<12} {'parity':>14} {'max quad':>9} {'max conf':>9} {'CER-ci':>7} {'ref':>7} "
          f"{'median s':>9} {'p90 s':>7} {'ref med':>8}")
    for name, s in sorted(report.items()):
        print(f"{name:<12} {s['same']:>5}/{s['ref_lines']:<5} {s['same'] / max(1, s['ref_lines']):>6.1%}"
              f" {s['quad']:>6.1f}px {s['conf']:>9.2e} {cers.get(name, float('nan')):>7.4f}"
              f" {ref_cers.get(name, {}).get('cer_ci_micro', float('nan')):>7.4f}"
              f" {statistics.median(s['seconds']):>9.3f} {percentile(s['seconds'], 0.9):>7.3f}"
              f" {statistics.median(s['ref_seconds']):>8.3f}")


if __name__ == "__main__":
    main()
