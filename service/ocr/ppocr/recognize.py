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


def classify(crops: list[np.ndarray], run: Runner) -> tuple[list[np.ndarray], list[bool]]:
    """Turn crops that the 0/180 classifier finds upside down (prob > 0.9); say which were turned,
    since their reading direction on the page is then reversed."""
    out = list(crops)
    turned = [False] * len(crops)
    for idx in _batches(crops):
        ratios = [crops[i].shape[1] / crops[i].shape[0] for i in idx]
        batch = np.stack([_normalise(crops[i], min(CLS_WIDTH, math.ceil(HEIGHT * r)), CLS_WIDTH)
                          for i, r in zip(idx, ratios)])
        probs = run(batch)
        for i, p in zip(idx, probs):
            if p.argmax() == 1 and p[1] > CLS_THRESH:
                out[i] = cv2.rotate(crops[i], cv2.ROTATE_180)
                turned[i] = True
    return out, turned


def confidence(probs: np.ndarray) -> float:
    """Mean of the kept steps' probabilities, each rounded to 5 decimals, rounded again (RapidOCR's score)."""
    return round(float(np.mean([round(float(p), 5) for p in probs])), 5) if len(probs) else 0.0


def read(crops: Sequence[np.ndarray], run: Runner, alphabet: list[str]) -> list[Reading]:
    """Text, confidence and character positions per crop, in input order."""
    out: list[Reading] = [Reading("", 0.0, [])] * len(crops)
    for idx in _batches(crops):
        ratios = [crops[i].shape[1] / crops[i].shape[0] for i in idx]
        padded = int(HEIGHT * max(REC_MIN_RATIO, *ratios))
        widths = [min(padded, math.ceil(HEIGHT * r)) for r in ratios]
        batch = np.stack([_normalise(crops[i], w, padded) for i, w in zip(idx, widths)])
        decoded = ctc.greedy(run(batch))
        stride = padded / decoded.index.shape[1]
        for row, (i, text) in enumerate(zip(idx, ctc.texts(decoded, alphabet))):
            out[i] = Reading(text, confidence(decoded.prob[row][decoded.keep[row]]),
                             words.chars(decoded, row, alphabet, stride, widths[row], repeats=False))
    return out

