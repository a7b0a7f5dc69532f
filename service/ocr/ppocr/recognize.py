"""Line crops -> (text, confidence), with RapidOCR 3.10.0's classifier and recognizer batching.

The rec network attends over the whole padded width, so its output depends on how wide a crop is
padded. RapidOCR pads a batch to its widest crop, so a crop's reading depends on which crops share
its batch. For identical text that batching is copied exactly: crops sorted by aspect ratio with
numpy's default argsort, batches of 6, padded to 48 * max(320/48, widest ratio in the batch),
zero (mid-grey) padding on the right. The parse pipeline pads each crop to a width bucket of its
own instead (`width_buckets`), so that its reading is the same whatever shares its batch: pages
of several requests can be read together (service/ocr/batching.py), and the network sees few
distinct shapes.
"""

from __future__ import annotations

import math
from concurrent.futures import Executor
from typing import Callable, NamedTuple, Sequence

import cv2
import numpy as np
from .. import ctc, words

BATCH = 6
HEIGHT = 48
CLS_WIDTH = 192
REC_MIN_RATIO = 320 / 48
CLS_THRESH = 0.9  # rotate a crop when "180" wins with more than this
# Width buckets (the parse pipeline): see width_buckets and docs/benchmarks.md.
GROUP_MIN_WIDTH = 160  # narrower crops are padded to this: less padding read better and faster (docs/benchmarks.md)
GROUP_SPREAD = 1.15  # each bucket is this much wider than the one below, then rounded up to 16 px
GROUP_PIXELS = 320 * 24  # padded width x batch size, on a CPU: bigger batches gain nothing there
# The parse pipeline's prior on the space class (ctc.greedy_tensor): a space takes a step wherever
# its probability is within this factor (e^1.5) of the best class's. The recognizer drops spaces
# between Latin words, the largest kind of error on receipts; the factor was swept against ground
# truth (docs/benchmarks.md, "A prior on the space class").
SPACE_PRIOR = math.exp(1.5)

Runner = Callable[[np.ndarray], np.ndarray]  # (N,3,48,W) float32 batch -> network output on the CPU
# (N,3,48,W) float32 batch -> the greedy CTC path, taken where the network ran (see ctc.Greedy).
RecRunner = Callable[[np.ndarray], ctc.Greedy]


def _normalise(img: np.ndarray, width: int, padded: int) -> np.ndarray:
    """Resize to HEIGHT x width, scale to [-1, 1] in float32 as Paddle does, pad right with zeros."""
    out = np.zeros((3, HEIGHT, padded), np.float32)
    resized = cv2.resize(img, (width, HEIGHT)).astype(np.float32).transpose(2, 0, 1) / 255
    resized -= 0.5
    resized /= 0.5
    out[:, :, :width] = resized
    return out


def _ratio(crop: np.ndarray) -> float:
    """Width over height, as RapidOCR computes it: widths at HEIGHT are ceil(HEIGHT * ratio)."""
    return crop.shape[1] / float(crop.shape[0])


def _width(crop: np.ndarray) -> int:
    """The crop's width once resized to HEIGHT."""
    return math.ceil(HEIGHT * _ratio(crop))


def _batches(crops: Sequence[np.ndarray]) -> list[np.ndarray]:
    order = np.argsort(np.array([_ratio(c) for c in crops]))
    return [order[i:i + BATCH] for i in range(0, len(order), BATCH)]


class Reading(NamedTuple):
    text: str
    confidence: float
    chars: list[words.Char]  # where each character lies along the crop, for word boxes


def cls_probs(crops: Sequence[np.ndarray], run: Runner, pool: Executor | None = None) -> np.ndarray:
    """(N, 2) classifier probabilities [p0, p180] per crop, in input order; batches on `pool`'s
    threads at once where given (as `read`)."""
    out = np.zeros((len(crops), 2), np.float32)
    batches = _batches(crops)

    def probs(idx: np.ndarray) -> np.ndarray:
        return run(np.stack([_normalise(crops[i], min(CLS_WIDTH, _width(crops[i])), CLS_WIDTH) for i in idx]))

    for idx, p in zip(batches, (pool.map if pool else map)(probs, batches)):
        out[idx] = p
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


def bucket_width(width: int) -> int:
    """The padded width of a crop `width` px wide at HEIGHT: GROUP_MIN_WIDTH, then each bucket
    GROUP_SPREAD times the last, rounded up to 16 px."""
    bucket = GROUP_MIN_WIDTH
    while bucket < width:
        bucket = 16 * math.ceil(bucket * GROUP_SPREAD / 16)
    return bucket


def width_buckets(crops: Sequence[np.ndarray], max_pixels: int = GROUP_PIXELS) -> list[tuple[int, np.ndarray]]:
    """(padded width, crop indices) batches: crops of one width bucket, so each is padded by at
    most GROUP_SPREAD times its width plus 16 px, cut so that width x batch size stays within
    `max_pixels` (large batches of short words, small ones of long lines)."""
    by_bucket: dict[int, list[int]] = {}
    for i, c in enumerate(crops):
        by_bucket.setdefault(bucket_width(_width(c)), []).append(i)
    out = []
    for width in sorted(by_bucket):
        members = by_bucket[width]
        step = max(1, max_pixels // width)
        out += [(width, np.array(members[k:k + step])) for k in range(0, len(members), step)]
    return out


def read(crops: Sequence[np.ndarray], run: RecRunner, alphabet: list[str],
         grouped: bool = False, max_pixels: int = GROUP_PIXELS, pool: Executor | None = None) -> list[Reading]:
    """Text, confidence and character positions per crop, in input order; RapidOCR's batches of
    6, or width buckets (`grouped`, of at most `max_pixels` padded pixels per row). With `pool`,
    batches run on its threads at once (streams.py); each batch's reading is the same."""
    out: list[Reading] = [Reading("", 0.0, [])] * len(crops)
    batches = width_buckets(crops, max_pixels) if grouped else \
        [(int(HEIGHT * max(REC_MIN_RATIO, *(_ratio(crops[i]) for i in idx))), idx)
         for idx in _batches(crops)]
    widths = [[min(padded, _width(crops[i])) for i in idx] for padded, idx in batches]

    def decode(k: int) -> ctc.Greedy:
        padded, idx = batches[k]
        return run(np.stack([_normalise(crops[i], w, padded) for i, w in zip(idx, widths[k])]))

    for k, decoded in enumerate((pool.map if pool else map)(decode, range(len(batches)))):
        padded, idx = batches[k]
        stride = padded / decoded.index.shape[1]
        for row, (i, text) in enumerate(zip(idx, ctc.texts(decoded, alphabet))):
            out[i] = Reading(text, confidence(decoded.prob[row][decoded.keep[row]]),
                             words.chars(decoded, row, alphabet, stride, widths[k][row], repeats=False))
    return out
