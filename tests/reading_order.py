"""The page text's reading order against the dev set's ground truth, with score.py --order given.

    .venv/bin/python -m tests.reading_order [PRED_DIR ...]

Each PRED_DIR holds one JSON of lines with quads per dev image (a `tests.devset --out` folder, or
a family's reference outputs, which its parity tests hold us to; these are the default). For each,
score.py reads two texts in the order given: the lines as the family found them (the page text
before service/layout) and the page text that service/layout orders. The ground truth keeps its
own file order too (the annotators'), so CER here measures order as much as reading.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from service.layout import arrange
from tests.devset import DEV, REFERENCE, SCORE

COLUMNS = [("CER-ci", "cer_ci_micro"), ("mCER-ci", "cer_ci_macro"), ("Wrec-ci", "word_recall_ci")]


def texts(pred_dir: Path, out: Path) -> None:
    """Write `found` and `layout` prediction folders: one line per line found, one per text line."""
    for name in ("found", "layout"):
        (out / name).mkdir()
    for path in sorted(pred_dir.glob("*.json")):
        if not (DEV / path.name).exists():
            continue
        lines = json.loads(path.read_text())["lines"]
        found = [{"text": l["text"]} for l in lines]
        if lines and all("quad" in l for l in lines):
            text = arrange([l["quad"] for l in lines]).text([l["text"] for l in lines])
            ordered = [{"text": t} for t in text.split("\n") if t.strip()]
        else:
            ordered = found
        (out / "found" / path.name).write_text(json.dumps({"lines": found}))
        (out / "layout" / path.name).write_text(json.dumps({"lines": ordered}))


def score(gt_dir: Path, pred_dir: Path) -> dict:
    out = pred_dir.with_suffix(".scores.json")
    subprocess.run([sys.executable, str(SCORE), str(gt_dir), str(pred_dir), "--order", "given",
                    "--json-out", str(out)], check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())["summary"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pred_dirs", nargs="*", type=Path, default=list(REFERENCE.values()))
    args = parser.parse_args()
    if not DEV.is_dir():
        sys.exit(f"skipped: the dev set {DEV} is absent")
    for pred_dir in args.pred_dirs:
        with tempfile.TemporaryDirectory() as tmp:
            texts(pred_dir, Path(tmp))
            # Only the images predicted are scored (a devset run may cover some subsets only).
            gt_dir = Path(tmp) / "gt"
            gt_dir.mkdir()
            for path in (Path(tmp) / "found").glob("*.json"):
                (gt_dir / path.name).write_text((DEV / path.name).read_text())
            found, ordered = score(gt_dir, Path(tmp) / "found"), score(gt_dir, Path(tmp) / "layout")
        print(f"\n{pred_dir} (score.py --order given)")
        print(f"{'subset':<12}" + "".join(f"{c + ' ' + v:>18}" for c, _ in COLUMNS for v in ("found", "layout")))
        for subset in found:
            print(f"{subset:<12}" + "".join(f"{found[subset].get(k, float('nan')):>18.4f}"
                                            f"{ordered[subset].get(k, float('nan')):>18.4f}"
                                            for _, k in COLUMNS))


if __name__ == "__main__":
    main()
