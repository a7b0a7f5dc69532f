"""Tables on the structure dev set: TEDS of ours (both settings) and of RapidTable 0.3.0, and time per table.

    python -m tests.bench_table [--threads 2] [--out build/bench-table]
        [--original-python build/structure-ref-venv/bin/python] [--limit N --engines parse,RapidTable]

On every PubTabNet crop of ../shared/structure-dev, three engines take turns, crop by crop, each in
its own process state, from the decoded image to the table's HTML:
- parse: parse's OCR (pipeline "parse") + TableModel.read with table = "parse" (words into cells);
- exact: parse's OCR with pipeline "rapidocr" (RapidOCR 3.10.0 exactly) + table = "rapidtable";
- RapidTable: RapidOCR 3.10.0 + RapidTable 0.3.0 in the original's own venv
  (tests/rapidtable_reference.py --serve), timed as ../shared/structure-dev-reference timed it.
Writes each engine's predictions to OUT/<engine>/<stem>.json, scores them with
../shared/tools/score_structure.py (run by the original's interpreter, which has apted), and prints
TEDS and TEDS-Struct per engine, how many tables' HTML the exact setting reproduces character for
character (against RapidTable now and against the stored reference), and the median seconds per table.
--limit N times the first N crops only, and scores nothing (TEDS needs every crop); --engines
picks which of the three take turns.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
DEV = SHARED / "structure-dev"
REFERENCE = SHARED / "structure-dev-reference"
SCORER = SHARED / "tools" / "score_structure.py"
ROOT = Path(__file__).resolve().parent.parent
ORIGINAL_PYTHON = ROOT / "build" / "structure-ref-venv" / "bin" / "python"


def crops() -> list[tuple[str, Path]]:
    """(stem, image) of every table crop in the dev set."""
    out = []
    for gt_path in sorted(DEV.glob("*.json")):
        if json.loads(gt_path.read_text()).get("task") == "table":
            image = next(p for p in (gt_path.with_suffix(s) for s in (".png", ".jpg")) if p.exists())
            out.append((gt_path.stem, image))
    return out


def engines(threads: int, names: list[str]):
    """Our two settings: name -> image path -> (html, seconds from decoded image to Table)."""
    import torch

    from service import settings as settings_mod
    from service.documents.images import decode_page
    from service.ocr.model import load_model
    from service.settings import Limits
    from service.structure.table import TableModel

    cfg = settings_mod.load()
    out = {}
    for name, pipeline, table in (("parse", "parse", "parse"), ("exact", "rapidocr", "rapidtable")):
        if name not in names:
            continue
        ocr = load_model(dataclasses.replace(cfg.model, pipeline=pipeline), "cpu", threads)
        ocr.warmup()
        model = TableModel.load(dataclasses.replace(cfg.structure, table=table), ROOT / "weights", torch.device("cpu"))

        def run(path: Path, ocr=ocr, model=model) -> tuple[str, float]:
            image, grey = decode_page(path.read_bytes(), Limits(), grey=ocr.reads_grey)
            t0 = time.perf_counter()
            page = ocr.parse([image], [grey])[0]
            html = model.read(image, None, page.lines).html
            return html, time.perf_counter() - t0

        out[name] = run
    return out


def write(folder: Path, stem: str, html: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{stem}.json").write_text(json.dumps({"images": [{"regions": [], "tables": [{"html": html}]}]}))


def score(python: Path, folder: Path) -> dict:
    out = folder.with_suffix(".scores.json")
    subprocess.run([str(python), str(SCORER), str(DEV), str(folder), "--json-out", str(out), "--quiet"],
                   check=True, capture_output=True)
    return json.loads(out.read_text())["summary"]["pubtabnet"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "bench-table")
    ap.add_argument("--original-python", type=Path, default=ORIGINAL_PYTHON)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--engines", default="parse,exact,RapidTable")
    args = ap.parse_args()
    items = crops()[: args.limit or None]
    chosen = args.engines.split(",")
    ours = engines(args.threads, [n for n in chosen if n != "RapidTable"])
    original = subprocess.Popen([str(args.original_python), str(ROOT / "tests" / "rapidtable_reference.py"),
                                 "--serve", "--threads", str(args.threads)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def rapidtable(path: Path) -> tuple[str, float]:
        original.stdin.write(json.dumps({"image": str(path), "ocr": True}) + "\n")
        original.stdin.flush()
        answer = json.loads(original.stdout.readline())
        return answer["html"], answer["seconds"]

    runs = {name: ours.get(name, rapidtable) for name in chosen}
    for run in runs.values():  # warm-up, not timed
        run(items[0][1])
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    htmls: dict[str, dict[str, str]] = {name: {} for name in runs}
    try:
        for stem, path in items:
            for name, run in runs.items():  # taking turns, crop by crop
                html, dt = run(path)
                seconds[name].append(dt)
                htmls[name][stem] = html
                write(args.out / name, stem, html)
            print(f"{stem:24s} " + "  ".join(f"{n} {seconds[n][-1]:.2f}s" for n in runs), flush=True)
    finally:
        original.stdin.close()
        original.wait(timeout=60)
    base = statistics.median(seconds["RapidTable"]) if "RapidTable" in seconds else float("nan")
    if args.limit or set(chosen) != {"parse", "exact", "RapidTable"}:
        for name in runs:
            med = statistics.median(seconds[name])
            ratios = [a / b for a, b in zip(seconds[name], seconds.get("RapidTable", seconds[name]))]
            print(f"{name:12s} median {med:.3f} s/table, {med / base:.2f}x RapidTable's median "
                  f"(median of per-crop ratios {statistics.median(ratios):.2f})")
        return
    stored = {stem: json.loads((REFERENCE / "gtbox" / f"{stem}.json").read_text())["images"][0]["tables"][0]["html"]
              for stem, _ in items}
    same_now = sum(htmls["exact"][s] == htmls["RapidTable"][s] for s, _ in items)
    same_stored = sum(htmls["exact"][s] == stored[s] for s, _ in items)
    print(f"\nexact setting: HTML identical to RapidTable's on {same_now}/{len(items)} crops "
          f"(to the stored reference on {same_stored}/{len(items)})")
    write_ref = args.out / "reference"
    for stem, _ in items:
        write(write_ref, stem, stored[stem])
    print(f"\n{'engine':12s} {'TEDS':>7s} {'TEDS-S':>7s} {'median s/table':>15s} {'vs RapidTable':>14s}")
    for name in (*runs, "reference"):
        s = score(args.original_python, args.out / name)
        med = statistics.median(seconds[name]) if name in seconds else float("nan")
        print(f"{name:12s} {s['teds']:7.4f} {s['teds_struct']:7.4f} {med:15.3f} {med / base:14.2f}")
    print(f"({len(items)} crops, {args.threads} threads; load average {' '.join(f'{x:.1f}' for x in __import__('os').getloadavg())})")


if __name__ == "__main__":
    main()
