"""Line crops -> (text, confidence), with RapidOCR 3.10.0's classifier and recognizer batching.

The rec network attends over the whole padded width, so its output depends on which crops share a
batch and how wide the batch is padded. For identical text the batching is copied exactly: crops
sorted by aspect ratio with numpy's default argsort, batches of 6, padded to 48 * max(320/48,
widest ratio in the batch), zero (mid-grey) padding on the right.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import cv2
import numpy as np
from .. import ctc, words

BATCH = 6
HEIGHT = 48
CLS_WIDTH = 192
REC_MIN_RATIO = 320 / 48
CLS_THRESH = 0.9  # rotate a crop when "180" wins with more than this
# Width groups (the parse pipeline): see width_groups and docs/benchmarks.md.
GROUP_MIN_WIDTH = 160  # narrower crops are padded to this: less padding read better and faster (docs/benchmarks.md)
GROUP_SPREAD = 1.3
GROUP_PIXELS = 320 * 24  # padded width x batch size

Runner = Callable[[np.ndarray], np.ndarray]  # (N,3,48,W) float32 batch -> network output on the CPU


def _normalise(img: np.ndarray, width: int, padded: int) -> np.ndarray:
    """Resize to HEIGHT x width, scale to [-1, 1] in float32 as Paddle does, pad right with zeros."""
    out = np.zeros((3, HEIGHT, padded), np.float32)
    resized = cv2.resize(img, (width, HEIGHT)).astype(np.float32).transpose(2, 0, 1) / 255
    resized -= 0.5
    resized /= 0.5
    out[:, :, :width] = resized
    return out


def _batches(crops: Sequence[np.ndarray]) -> list[np.ndarray]:
    order = np.argsort(np.array([c.shape[1] / float(c.shape[0]) for c in crops]))
    return [order[i:i + BATCH] for i in range(0, len(order), BATCH)]


class Reading(NamedTuple):
    text: str
    confidence: float
    chars: list[words.Char]  # where each character lies along the crop, for word boxes


def cls_probs(crops: Sequence[np.ndarray], run: Runner) -> np.ndarray:
    """(N, 2) classifier probabilities [p0, p180] per crop, in input order."""
    out = np.zeros((len(crops), 2), np.float32)
    for idx in _batches(crops):
        ratios = [crops[i].shape[1] / crops[i].shape[0] for i in idx]
        batch = np.stack([_normalise(crops[i], min(CLS_WIDTH, math.ceil(HEIGHT * r)), CLS_WIDTH)
                          for i, r in zip(idx, ratios)])
        out[idx] = run(batch)
    return out


def classify(crops: list[np.ndarray], run: Runner) -> tuple[list[np.ndarray], list[bool]]:
    """Turn crops that the 0/180 classifier finds upside down (prob > 0.9); say which were turned,
    since their reading direction on the page is then reversed."""
    out = list(crops)
    turned = [False] * len(crops)
    if crops:
        for i, p in enumerate(cls_probs(crops, run)):
            if p.argmax() == 1 and p[1] > CLS_THRESH:
                out[i] = cv2.rotate(crops[i], cv2.ROTATE_180)
                turned[i] = True
    return out, turned


def confidence(probs: np.ndarray) -> float:
    """Mean of the kept steps' probabilities, each rounded to 5 decimals, rounded again (RapidOCR's score)."""
    return round(float(np.mean([round(float(p), 5) for p in probs])), 5) if len(probs) else 0.0


def width_groups(crops: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Crops sorted by aspect ratio, cut into batches whose widest crop is at most GROUP_SPREAD
    times the narrowest (so little is computed on padding) and whose padded pixels stay under
    GROUP_PIXELS (so batches of short words are large and those of long lines small)."""
    order = np.argsort(np.array([c.shape[1] / float(c.shape[0]) for c in crops]), kind="stable")
    groups: list[list[int]] = []
    first = 0
    for i in order:
        width = max(GROUP_MIN_WIDTH, math.ceil(HEIGHT * crops[i].shape[1] / crops[i].shape[0]))
        if groups and width <= GROUP_SPREAD * first and width * (len(groups[-1]) + 1) <= GROUP_PIXELS:
            groups[-1].append(int(i))
        else:
            groups.append([int(i)])
            first = width
    return [np.array(g) for g in groups]


def read(crops: Sequence[np.ndarray], run: Runner, alphabet: list[str],
         grouped: bool = False) -> list[Reading]:
    """Text, confidence and character positions per crop, in input order; RapidOCR's batches of
    6, or width groups."""
    out: list[Reading] = [Reading("", 0.0, [])] * len(crops)
    for idx in (width_groups(crops) if grouped else _batches(crops)):
        ratios = [crops[i].shape[1] / crops[i].shape[0] for i in idx]
        padded = int(HEIGHT * max(REC_MIN_RATIO, *ratios)) if not grouped else \
            max(GROUP_MIN_WIDTH, max(math.ceil(HEIGHT * r) for r in ratios))
        widths = [min(padded, math.ceil(HEIGHT * r)) for r in ratios]
        batch = np.stack([_normalise(crops[i], w, padded) for i, w in zip(idx, widths)])
        decoded = ctc.greedy(run(batch))
        stride = padded / decoded.index.shape[1]
        for row, (i, text) in enumerate(zip(idx, ctc.texts(decoded, alphabet))):
            out[i] = Reading(text, confidence(decoded.prob[row][decoded.keep[row]]),
                             words.chars(decoded, row, alphabet, stride, widths[row], repeats=False))
    return out

