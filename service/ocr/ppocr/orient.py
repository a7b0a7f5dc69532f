"""Page orientation, decided once per page from what detection and the 0/180 classifier already see.

RapidOCR's per-line classifier turns single lines, and on upright pages it mostly turns correct
ones; a page is either upright or not as a whole. So the decision is taken per page, in two steps:
1. Sideways or not, from the detected boxes' shapes: text lines are long, so a page whose long
   boxes mostly stand upright is turned by 90 or 270 degrees.
2. Upright or upside down (in the frame step 1 chose), by the classifier's votes over the page's
   longer lines: one line's vote is often wrong, the sum of many is not. A page with few lines
   can still be outvoted, so a "turned" verdict is checked by the recognizer's confidence on the
   widest lines read both ways (pipeline.PpOcr._upside_down).
"""

from __future__ import annotations

import math
from typing import Sequence

import cv2
import numpy as np

LONG = 1.5  # a box is a line across (or down) the page when one side is this much longer
VOTE_RATIO = 2.0  # only crops at least this wide for their height vote: short ones carry few letters
VOTERS = 24  # the widest crops vote; more change nothing on a page, and cost classifier time
CHECKERS = 8  # when the vote says "turned", the recognizer reads this many of them both ways


def rotate_points(points: np.ndarray, k: int, w: int, h: int) -> np.ndarray:
    """Points of a w x h image, in the image np.rot90(img, k) (k quarter turns counter-clockwise)."""
    p = points.astype(np.float32).copy()
    for _ in range(k % 4):
        p = np.stack([p[:, 1], w - p[:, 0]], axis=1)
        w, h = h, w
    return p


def unrotate_points(points: np.ndarray, k: int, w: int, h: int) -> np.ndarray:
    """The inverse of rotate_points: points of np.rot90(img, k) back in the w x h image."""
    rw, rh = (h, w) if k % 2 else (w, h)
    return rotate_points(points, (4 - k % 4) % 4, rw, rh)


def corner_order(quad: np.ndarray) -> np.ndarray:
    """TL, TR, BR, BL by RapidOCR's rule: the left pair (by x) sorted by y, then the right pair."""
    by_x = quad[np.argsort(quad[:, 0], kind="stable")]
    left, right = by_x[:2], by_x[2:]
    tl, bl = left[np.argsort(left[:, 1], kind="stable")]
    tr, br = right[np.argsort(right[:, 1], kind="stable")]
    return np.array([tl, tr, br, bl], np.float32)


def sideways(quads: Sequence[np.ndarray]) -> bool:
    """True when the long boxes' lengths add up to more standing than lying."""
    standing = lying = 0.0
    for q in quads:
        across = float(np.linalg.norm(q[0] - q[1]))
        down = float(np.linalg.norm(q[0] - q[3]))
        if down >= LONG * across:
            standing += down
        elif across >= LONG * down:
            lying += across
    return standing > lying


def voters(crops: Sequence[np.ndarray]) -> list[int]:
    """Indices of the crops that vote: the VOTERS widest of those at least VOTE_RATIO wide."""
    wide = [i for i, c in enumerate(crops) if c.shape[1] >= VOTE_RATIO * c.shape[0]]
    return sorted(wide, key=lambda i: -crops[i].shape[1])[:VOTERS]


def upside_down(probs: np.ndarray) -> bool:
    """Sum of the voters' (p180 - p0): each line's vote counts by how sure the classifier is."""
    return bool(len(probs)) and float(np.sum(probs[:, 1] - probs[:, 0])) > 0


def skew(quads: Sequence[np.ndarray]) -> float:
    """Median angle (radians) of the lying boxes' top edges; 0 with none. Used for reading order."""
    angles = []
    for q in quads:
        dx, dy = float(q[1][0] - q[0][0]), float(q[1][1] - q[0][1])
        if abs(dx) >= LONG * float(np.linalg.norm(q[0] - q[3])):
            angles.append(math.atan2(dy, dx))
    return float(np.median(angles)) if angles else 0.0


def turn(img: np.ndarray, k: int) -> np.ndarray:
    """The image turned k quarter turns counter-clockwise, contiguous for OpenCV."""
    return np.ascontiguousarray(np.rot90(img, k)) if k % 4 else img


def turn_crop(crop: np.ndarray) -> np.ndarray:
    return cv2.rotate(crop, cv2.ROTATE_180)
