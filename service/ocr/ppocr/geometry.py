"""Image geometry before and around detection, as RapidOCR 3.10.0 does it (BGR uint8 in and out).

The page is first brought within 30..2000 px per side, then letterboxed when it is very flat; all
detection, cropping and recognition work on that image, and quads are mapped back at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MAX_SIDE = 2000
MIN_SIDE = 30
FLAT_RATIO = 8  # w/h above this gets black bands top and bottom
MIN_HEIGHT = 30
DET_MIN_SIDE = 736  # detection input: short side brought up to this (never down)
# ...but the enlargement stops where the long side reaches this. RapidOCR has no such cap, so a
# 30x2000 strip of a few hundred bytes would become a 736x49056 (36 MP) detector input. Pages up
# to 1:5.4 (every receipt of the dev set, and RapidOCR's output on them) are unaffected.
DET_MAX_SIDE = 4000
# The parse pipeline enlarges a small image at most this much for detection: every dev page
# needs less (the narrowest receipt 1.68x), and a one-line image brought to a 736 px short side
# costs a detector pass on a 4000 px strip for text that is already legible at its own size.
DET_MAX_UPSCALE = 2.0


def _round32(side: int, ratio: float) -> int:
    return int(round(int(side * ratio) / 32) * 32)


@dataclass
class Frame:
    """How the working image relates to the original: scale factors and top padding."""

    ratio_w: float = 1.0
    ratio_h: float = 1.0
    top: int = 0


def within_bounds(img: np.ndarray) -> tuple[np.ndarray, Frame]:
    """Shrink pages over MAX_SIDE, enlarge images under MIN_SIDE (sides rounded to multiples of 32)."""
    h0, w0 = h, w = img.shape[:2]
    for shrink in (True, False):  # first shrink big pages, then enlarge tiny images
        side = max(h, w) if shrink else min(h, w)
        if (side > MAX_SIDE) if shrink else (side < MIN_SIDE):
            ratio = (MAX_SIDE if shrink else MIN_SIDE) / side
            h, w = _round32(h, ratio), _round32(w, ratio)
            img = cv2.resize(img, (w, h))
    frame = Frame(ratio_w=w0 / w, ratio_h=h0 / h) if (h, w) != (h0, w0) else Frame()
    return img, frame


def letterbox(img: np.ndarray, frame: Frame) -> np.ndarray:
    """Pad very flat or very low images with black bands top and bottom, recording the top band."""
    h, w = img.shape[:2]
    if h > MIN_HEIGHT and w / h <= FLAT_RATIO:
        return img
    pad = int(abs(max(int(w / FLAT_RATIO), MIN_HEIGHT) * 2 - h) / 2)
    frame.top = pad
    return cv2.copyMakeBorder(img, pad, pad, 0, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))


def det_size(h: int, w: int, max_upscale: float | None = None) -> tuple[int, int]:
    """Detection input (h, w): short side up to DET_MIN_SIDE (long side at most DET_MAX_SIDE, and
    at most max_upscale times the image where given), both sides rounded to multiples of 32."""
    ratio = max(1.0, min(DET_MIN_SIDE / min(h, w), DET_MAX_SIDE / max(h, w))) if min(h, w) < DET_MIN_SIDE else 1.0
    if max_upscale is not None:
        ratio = min(ratio, max(1.0, max_upscale))
    return max(_round32(h, ratio), 32), max(_round32(w, ratio), 32)


def _crop_size(quad: np.ndarray) -> tuple[int, int]:
    w = int(max(np.linalg.norm(quad[0] - quad[1]), np.linalg.norm(quad[2] - quad[3])))
    h = int(max(np.linalg.norm(quad[0] - quad[3]), np.linalg.norm(quad[1] - quad[2])))
    return w, h


def _is_tall(w: int, h: int) -> bool:
    return h / w >= 1.5


def crop(img: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """Perspective-rectify a quad (TL TR BR BL) to an upright crop; tall crops are turned 90° CCW."""
    w, h = _crop_size(quad)
    target = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    m = cv2.getPerspectiveTransform(quad.astype(np.float32), target)
    out = cv2.warpPerspective(img, m, (w, h), borderMode=cv2.BORDER_REPLICATE, flags=cv2.INTER_CUBIC)
    return np.rot90(out) if _is_tall(*out.shape[1::-1]) else out


def reading_corners(quad: np.ndarray, flipped: bool) -> np.ndarray:
    """The quad's corners starting at the corner that became the read crop's top-left.

    crop() turns tall crops 90° CCW (the quad's TR becomes the crop's TL) and the classifier may
    turn a crop 180° more (two corners on): word boxes follow the text as it was read.
    """
    w, h = _crop_size(quad)
    turns = (1 if w > 0 and _is_tall(w, h) else 0) + (2 if flipped else 0)
    return np.roll(quad, -turns, axis=0)


def to_original(quad: np.ndarray, frame: Frame, orig_w: int, orig_h: int) -> np.ndarray:
    """Undo padding and scaling, then clip into the original image (as RapidOCR's get_origin_points)."""
    q = quad.astype(np.float32).copy()
    q[:, 1] -= frame.top
    q[:, 0] *= frame.ratio_w
    q[:, 1] *= frame.ratio_h
    q = np.where(q < 0, 0, q)
    q[:, 0] = np.minimum(q[:, 0], orig_w)
    q[:, 1] = np.minimum(q[:, 1], orig_h)
    return q
