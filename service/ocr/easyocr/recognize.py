"""english_g2 over grey crops: input preparation, width-grouped batches, decoding, confidence, contrast retry.

EasyOCR on the CPU reads each crop alone, padded to its own width `imgW = ceil(aspect) * 64` by
repeating its last column; the BiLSTM sees that padding, so a crop's result depends on its imgW.
Crops are therefore batched only with crops of the same imgW: the same numbers, far fewer calls.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Callable, NamedTuple, Sequence

import cv2
import numpy as np
import torch
from PIL import Image

from .. import ctc, words

HEIGHT = 64
# Class i (1..96) is CHARACTERS[i - 1]; class 0 is the CTC blank.
CHARACTERS = "0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ €ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ALPHABET = ["[blank]", *CHARACTERS]
CONTRAST_THS = 0.1  # crops read with less confidence are read again with stretched contrast
ADJUST_CONTRAST = 0.5  # ... when their contrast is below this
MAX_BATCH_COLUMNS = 64 * 256  # sum of input widths per forward pass: bounds activation memory



class Reading(NamedTuple):
    text: str
    confidence: float
    chars: list[words.Char]  # where each character lies along the crop, for word boxes


Forward = Callable[[torch.Tensor], torch.Tensor]  # [B, 1, 64, W] float32 -> probabilities [B, T, 97]


def resize(crop: np.ndarray) -> tuple[np.ndarray, int]:
    """Grey crop -> (crop scaled to the model's height or, if taller than wide, its width; imgW).

    cv2's INTER_LINEAR: the original passed PIL's LANCZOS constant (1) to cv2, which reads it so.
    """
    h, w = crop.shape
    ratio = w / h
    if ratio < 1.0:
        ratio = 1.0 / ratio
        scaled = cv2.resize(crop, (HEIGHT, int(HEIGHT * ratio)), interpolation=cv2.INTER_LINEAR)
    else:
        scaled = cv2.resize(crop, (int(HEIGHT * ratio), HEIGHT), interpolation=cv2.INTER_LINEAR)
    return scaled, math.ceil(ratio) * HEIGHT


def adjust_contrast(img: np.ndarray) -> np.ndarray:
    """Stretch a low-contrast grey image around its 10th-90th percentile range (EasyOCR's retry)."""
    high, low = np.percentile(img, 90), np.percentile(img, 10)
    if (high - low) / max(10, high + low) >= ADJUST_CONTRAST:
        return img
    stretched = (img.astype(np.int64) - low + 25) * (200.0 / max(10, high - low))
    return np.clip(stretched, 0, 255).astype(np.uint8)


def to_input(img: np.ndarray, width: int) -> np.ndarray:
    """Resized grey crop -> float32 [64, width] in [-1, 1], right-padded by repeating its last column.

    A crop taller than wide (after `resize`) is squashed to height 64 with PIL's bicubic, as
    EasyOCR's AlignCollate does; a 64-high crop passes unchanged.
    """
    h, w = img.shape
    resized_w = min(math.ceil(HEIGHT * (w / float(h))), width)
    if (resized_w, HEIGHT) != (w, h):
        img = np.asarray(Image.fromarray(img, "L").resize((resized_w, HEIGHT), Image.BICUBIC))
    out = np.empty((HEIGHT, width), dtype=np.float32)
    out[:, :resized_w] = (img.astype(np.float32) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)
    out[:, resized_w:] = out[:, resized_w - 1:resized_w]
    return out


def confidence(index: np.ndarray, prob: np.ndarray) -> float:
    """EasyOCR's custom_mean: prod(p) ** (2 / sqrt(n)) over every non-blank step (repeats included)."""
    return custom_mean(prob[index != 0])


def custom_mean(p: np.ndarray) -> float:
    """prod(p) ** (2 / sqrt(n)): a line's confidence over its non-blank steps, a word's over its own."""
    if p.size == 0:
        return 0.0
    return float(p.prod() ** (2.0 / np.sqrt(p.size)))


def read(forward: Forward, crops: Sequence[np.ndarray]) -> list[Reading]:
    """Grey crops -> (text, confidence, characters) each, with EasyOCR's contrast retry for unsure reads."""
    prepared = [resize(c) for c in crops]
    results = _read_batched(forward, prepared)
    retry = [i for i, r in enumerate(results) if r.confidence < CONTRAST_THS]
    if retry:
        second = _read_batched(forward, [(adjust_contrast(prepared[i][0]), prepared[i][1]) for i in retry])
        for i, again in zip(retry, second):
            if again.confidence >= results[i].confidence:
                results[i] = again
    return results


def _read_batched(forward: Forward, prepared: Sequence[tuple[np.ndarray, int]]) -> list[Reading]:
    by_width: dict[int, list[int]] = defaultdict(list)
    for i, (_, width) in enumerate(prepared):
        by_width[width].append(i)
    results: list[Reading] = [Reading("", 0.0, [])] * len(prepared)
    for width, members in by_width.items():
        step = max(1, MAX_BATCH_COLUMNS // width)
        for start in range(0, len(members), step):
            chunk = members[start:start + step]
            batch = np.stack([to_input(prepared[i][0], width) for i in chunk])[:, None]
            probs = forward(torch.from_numpy(batch)).float().cpu().numpy()
            # The original renormalises each step after (optionally) masking classes; with nothing
            # masked this divides by a sum that is 1 up to rounding, kept for identical confidences.
            probs /= probs.sum(axis=2, keepdims=True)
            decoded = ctc.greedy(probs)
            stride = width / decoded.index.shape[1]
            for row, (i, text) in enumerate(zip(chunk, ctc.texts(decoded, ALPHABET))):
                h, w = prepared[i][0].shape
                content = min(math.ceil(HEIGHT * (w / float(h))), width)  # as to_input fills it
                results[i] = Reading(text, confidence(decoded.index[row], decoded.prob[row]),
                                     words.chars(decoded, row, ALPHABET, stride, content, repeats=True))
    return results
