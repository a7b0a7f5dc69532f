"""Run a model family over the dev set (DEV below) and compare it with the reference outputs.

    .venv/bin/python -m tests.devset --family easyocr [--subset sroie] [--threads 2] [--out DIR]
        [--device cuda:0] [--precision fp32] [--batch 8] [--direct] [--pipeline rapidocr]
        [--turn 90] [--skew -10] [--pages 10]

Prints, per subset: parity with the family's reference (share of reference lines whose text we
reproduce exactly, aligned in order), the largest quad and confidence differences on those lines,
score.py's case-insensitive CER and word recall, and seconds per image (median, p90) beside the
reference's. With --batch N each image is charged an equal share of its batch's time, so p90 says
little there. --turn (quarter turns, degrees counter-clockwise) and --skew (degrees, counter-
clockwise, on a canvas grown to hold the whole page, white around it) read turned copies of the
pages, made in memory, and score them against ground truth whose quads are moved alike; the page
count whose reported angle undoes the turn is printed too. Parity with the reference means
nothing there.
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


def turned(image, turn: int, skew: float):
    """(the RGB image turned `turn` and then skewed `skew` degrees counter-clockwise, the 2x3
    affine matrix that moves its points alike)."""
    import cv2
    import numpy as np

    h, w = image.shape[:2]
    if turn % 360:
        k = (turn // 90) % 4
        image = np.ascontiguousarray(np.rot90(image, k))
        # np.rot90 k times, as one affine map of continuous pixel coordinates
        m = np.eye(3)
        for _ in range(k):
            m = np.array([[0, 1, 0], [-1, 0, w], [0, 0, 1]]) @ m
            w, h = h, w
    else:
        m = np.eye(3)
    if skew:
        rot = cv2.getRotationMatrix2D((w / 2, h / 2), skew, 1.0)
        cos, sin = abs(rot[0, 0]), abs(rot[0, 1])
        nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
        rot[0, 2] += nw / 2 - w / 2
        rot[1, 2] += nh / 2 - h / 2
        image = cv2.warpAffine(image, rot, (nw, nh), flags=cv2.INTER_LINEAR, borderValue=(255, 255, 255))
        m = np.vstack([rot, [0, 0, 1]]) @ m
    return image, m[:2]


def moved_gt(gt: dict, matrix) -> dict:
    """The ground truth with its quads moved by a 2x3 affine matrix."""
    import numpy as np

    lines = []
    for line in gt["lines"]:
        line = dict(line)
        if "quad" in line:
            pts = np.hstack([np.array(line["quad"], float), np.ones((4, 1))]) @ np.asarray(matrix).T
            line["quad"] = pts.tolist()
        lines.append(line)
    return {**gt, "lines": lines}


def run(family: str, subsets: set[str] | None, threads: int, out: Path, precision: str, device: str,
        batch: int, winograd: bool, pipeline: str = "parse", turn: int = 0, skew: float = 0.0,
        pages: int | None = None) -> dict:
    from service.ocr import allocator
    from service import settings as settings_mod
    from service.documents.images import decode_page
    from service.settings import Limits
    from service.ocr.model import load_model

    cfg = settings_mod.load()
    model = load_model(dataclasses.replace(cfg.model, family=family, precision=precision, winograd=winograd,
                                           pipeline=pipeline), device, threads)
    model.warmup()
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, dict] = {}
    moved = turn % 360 or skew
    for chunk in batches(dev_items(subsets)[:pages], batch):
        datas = [image_path.read_bytes() for image_path, _ in chunk]
        fn = model.recognize if chunk[0][1]["task"] == "recognition" else model.parse
        # Timed from the file's bytes, as the references were (EasyOCR's includes its decoding);
        # a batch's time is shared equally by its images.
        start = time.perf_counter()
        images, greys = zip(*(decode_page(data, Limits(), grey=model.reads_grey) for data in datas))
        if moved:  # turning is the test's setup, not the model's work: off the clock
            setup = time.perf_counter()
            images = tuple(turned(image, turn, skew)[0] for image in images)
            greys = tuple(None if g is None else turned(g, turn, skew)[0] for g in greys)
            start += time.perf_counter() - setup
        pages = fn(images, greys)
        # As a worker does in each request (service/web/api.py), and timed with it.
        allocator.release_above(cfg.limits.worker_memory_bytes)
        seconds = (time.perf_counter() - start) / len(chunk)
        for (image_path, gt), page in zip(chunk, pages):
            record(report, out, family, image_path, gt, page, seconds)
            s = report[gt["subset"]]
            s["upright"] = s.get("upright", 0) + (page.angle == (-turn) % 360)
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


def cer(pred_dir: Path, subsets: set[str] | None, turn: int = 0, skew: float = 0.0,
        pages: int | None = None) -> dict[str, dict]:
    """score.py's summary per subset, on a GT folder holding only the images run (their quads
    moved as the images were, see `turned`)."""
    import numpy as np

    with tempfile.TemporaryDirectory() as gt_dir:
        for image_path, gt in dev_items(subsets)[:pages]:
            if turn % 360 or skew:
                h, w = gt.get("height"), gt.get("width")
                if h is None:
                    from PIL import Image
                    with Image.open(image_path) as im:
                        w, h = im.size
                gt = moved_gt(gt, turned(np.zeros((h, w, 3), np.uint8), turn, skew)[1])
            (Path(gt_dir) / f"{image_path.stem}.json").write_text(json.dumps(gt))
        scores_path = Path(gt_dir) / "scores.json"
        subprocess.run([sys.executable, str(SCORE), gt_dir, str(pred_dir), "--json-out", str(scores_path)],
                       check=True, stdout=subprocess.DEVNULL)
        scores = json.loads(scores_path.read_text())
    return {name: s for name, s in scores["summary"].items() if "cer_ci_micro" in s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", required=True, choices=sorted(REFERENCE))
    parser.add_argument("--subset", action="append", help="limit to these subsets (repeatable)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="cpu", help="cpu or cuda:N")
    parser.add_argument("--batch", type=int, default=1, help="images per call (pages of one canvas share a GPU pass)")
    parser.add_argument("--direct", action="store_true", help="easyocr: direct convolutions (winograd = false)")
    parser.add_argument("--pipeline", default="parse", choices=("parse", "rapidocr"), help="ppocr only")
    parser.add_argument("--turn", type=int, default=0, choices=(0, 90, 180, 270),
                        help="read the pages turned this far counter-clockwise")
    parser.add_argument("--skew", type=float, default=0.0, help="and then skewed this far (degrees, CCW)")
    parser.add_argument("--pages", type=int, help="only the first N images of the chosen subsets")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if not DEV.is_dir():
        sys.exit(f"skipped: the dev set {DEV} is absent")
    subsets = set(args.subset) if args.subset else None
    out = args.out or Path(tempfile.mkdtemp(prefix=f"dev-{args.family}-"))
    report = run(args.family, subsets, args.threads, out, args.precision, args.device, args.batch, not args.direct,
                 args.pipeline, args.turn, args.skew, args.pages)
    cers = cer(out, subsets, args.turn, args.skew, args.pages)
    ref_cers = json.loads((REFERENCE[args.family] / "scores.json").read_text())["summary"]
    print(f"\n{args.family} ({args.precision}{', direct' if args.direct else ''}, {args.device}, {args.threads} threads,"
          f" batch {args.batch}, pipeline {args.pipeline}, turn {args.turn}, skew {args.skew:g}),"
          f" predictions in {out}")
    print(f"{'subset':<12} {'parity':>14} {'max quad':>9} {'max conf':>9} {'CER-ci':>7} {'ref':>7} "
          f"{'Wrec-ci':>7} {'angle ok':>8} {'median s':>9} {'p90 s':>7} {'ref med':>8}")
    for name, s in sorted(report.items()):
        print(f"{name:<12} {s['same']:>5}/{s['ref_lines']:<5} {s['same'] / max(1, s['ref_lines']):>6.1%}"
              f" {s['quad']:>6.1f}px {s['conf']:>9.2e} {cers.get(name, {}).get('cer_ci_micro', float('nan')):>7.4f}"
              f" {ref_cers.get(name, {}).get('cer_ci_micro', float('nan')):>7.4f}"
              f" {cers.get(name, {}).get('word_recall_ci', float('nan')):>7.4f}"
              f" {s.get('upright', 0):>3}/{len(s['seconds']):<4}"
              f" {statistics.median(s['seconds']):>9.3f} {percentile(s['seconds'], 0.9):>7.3f}"
              f" {statistics.median(s['ref_seconds']):>8.3f}")


if __name__ == "__main__":
    main()
