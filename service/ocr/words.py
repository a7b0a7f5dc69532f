"""Word boxes from the recognizer's CTC steps, mapped back onto the page.

A recognizer reads a crop resized to a fixed height; its output step t looks at input columns
[t * stride, (t + 1) * stride). The steps at which a word's characters were emitted (ctc.runs)
therefore say where along the crop the word lies, as a share u of the crop's width. The crop is a
perspective warp of a quad on the page, so the same warp, inverted, takes (u, v) back to page
pixels: each word's quad is the part of its line's quad between its two u's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import cv2
import numpy as np

from . import ctc
from .types import Quad, Word, as_quad

# CTC emits a character at one step somewhere inside its glyph, not at its edges: half a step of
# slack on each side keeps the first and last glyph of a word inside the word's box.
SLACK_STEPS = 0.5
UNIT = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)


@dataclass
class Char:
    """One emitted character: where it lies along the crop (u0..u1 in [0, 1]) and the
    probabilities that its family's confidence formula takes for it."""

    text: str
    u0: float
    u1: float
    probs: np.ndarray


def chars(decoded: ctc.Greedy, row: int, alphabet: Sequence[str], stride: float, content: float,
          repeats: bool) -> list[Char]:
    """Characters of one decoded sequence. stride: input columns per output step; content: the
    input columns the crop itself fills (the rest is padding); repeats: whether the family's
    confidence counts a character's repeated steps (EasyOCR) or only its first (PP-OCR)."""
    out = []
    for start, end in ctc.runs(decoded, row):
        u0 = max(0.0, (start - SLACK_STEPS) * stride / content)
        u1 = min(1.0, (end + SLACK_STEPS) * stride / content)
        probs = decoded.prob[row, start:end] if repeats else decoded.prob[row, start:start + 1]
        out.append(Char(alphabet[decoded.index[row, start]], min(u0, 1.0), max(u1, 0.0), probs))
    return out


def _mapper(corners: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """(u, v) in the unit square -> page pixels, through the perspective map of the crop's corners.

    A degenerate quad (corners clipped onto one line at the page edge) has no inverse warp: its
    points are then interpolated along the edges, which is what the warp does for a rectangle.
    """
    corners = np.asarray(corners, np.float32)
    try:
        h = cv2.getPerspectiveTransform(UNIT, corners)
    except cv2.error:
        h = None
    if h is not None and np.all(np.isfinite(h)) and abs(np.linalg.det(h)) > 1e-9:
        return lambda uv: cv2.perspectiveTransform(uv[None].astype(np.float64), h)[0]
    tl, tr, br, bl = corners.astype(np.float64)
    return lambda uv: np.array([(1 - v) * ((1 - u) * tl + u * tr) + v * ((1 - u) * bl + u * br) for u, v in uv])


def words(line_chars: list[Char], corners: Quad | np.ndarray, score: Callable[[np.ndarray], float]) -> list[Word]:
    """Split a line's characters at whitespace into words placed on the page.

    corners: the crop's corners on the page in reading order (the crop's top-left first), so a
    word's quad starts at its own top-left as read; score: the family's confidence formula.
    """
    groups: list[list[Char]] = []
    fresh = True
    for char in line_chars:
        if char.text.isspace():
            fresh = True
            continue
        if fresh:
            groups.append([])
            fresh = False
        groups[-1].append(char)
    if not groups:
        return []
    to_page = _mapper(np.asarray(corners, np.float64))
    out = []
    for group in groups:
        u0, u1 = group[0].u0, max(group[-1].u1, group[0].u0)
        quad = to_page(np.array([[u0, 0.0], [u1, 0.0], [u1, 1.0], [u0, 1.0]]))
        out.append(Word("".join(c.text for c in group), score(np.concatenate([c.probs for c in group])),
                        as_quad(quad)))
    return out
