"""DB post-processing: text probability map -> ordered text quads, as RapidOCR 3.10.0 does it.

Every step is copied for identical boxes, quirks included: the 2x2 dilation, the "fast" box score
over the int32-cast polygon, pyclipper's round-join offset (which truncates the float corners to
integers), the size filters in both map and image pixels, and the reading order that chains lines
whose top-left y values differ by less than 10 px.
"""

from __future__ import annotations

import cv2
import numpy as np
import pyclipper

THRESH = 0.3  # pixel is text
BOX_THRESH = 0.5  # mean probability inside a candidate box
MAX_CANDIDATES = 1000
UNCLIP_RATIO = 1.6
MIN_SIZE = 3  # short side of a candidate, in map pixels
LINE_GAP = 10  # top-left y step (image pixels) that starts a new reading line

_DILATE = np.ones((2, 2), np.uint8)


def mini_box(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Minimum-area rectangle of `points` as TL, TR, BR, BL (float32), and its short side."""
    rect = cv2.minAreaRect(points)
    pts = sorted(cv2.boxPoints(rect), key=lambda p: p[0])  # stable, like RapidOCR
    tl, bl = (pts[0], pts[1]) if pts[1][1] > pts[0][1] else (pts[1], pts[0])
    tr, br = (pts[2], pts[3]) if pts[3][1] > pts[2][1] else (pts[3], pts[2])
    return np.array([tl, tr, br, bl], np.float32), min(rect[1])


def box_score(prob: np.ndarray, box: np.ndarray) -> float:
    """Mean probability inside the polygon, rasterised after an int32 cast ("fast" score mode)."""
    h, w = prob.shape
    x0 = int(np.clip(np.floor(box[:, 0].min()), 0, w - 1))
    x1 = int(np.clip(np.ceil(box[:, 0].max()), 0, w - 1))
    y0 = int(np.clip(np.floor(box[:, 1].min()), 0, h - 1))
    y1 = int(np.clip(np.ceil(box[:, 1].max()), 0, h - 1))
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    local = (box - np.array([x0, y0], np.float32)).astype(np.int32)
    cv2.fillPoly(mask, local[None], 1)
    return cv2.mean(prob[y0:y1 + 1, x0:x1 + 1], mask)[0]


def unclip(box: np.ndarray) -> np.ndarray:
    """Grow the box by area * ratio / perimeter with a round-join offset (pyclipper, integer output)."""
    x, y = box[:, 0].astype(np.float64), box[:, 1].astype(np.float64)
    area = abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2
    perimeter = np.hypot(x - np.roll(x, -1), y - np.roll(y, -1)).sum()
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(box.tolist(), pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    paths = offset.Execute(area * UNCLIP_RATIO / perimeter)
    return np.array([p for path in paths for p in path], np.int32).reshape(-1, 2)


def boxes_from_map(prob: np.ndarray, dest_w: int, dest_h: int) -> list[np.ndarray]:
    """Candidate quads (int32, TL TR BR BL) scaled from the map to a dest_w x dest_h image."""
    h, w = prob.shape
    mask = cv2.dilate((prob > THRESH).astype(np.uint8), _DILATE)
    contours, _ = cv2.findContours(mask * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for contour in contours[:MAX_CANDIDATES]:
        box, short = mini_box(contour)
        if short < MIN_SIZE or box_score(prob, box) < BOX_THRESH:
            continue
        grown = unclip(box)
        if len(grown) == 0:
            continue
        box, short = mini_box(grown)
        if short < MIN_SIZE + 2:
            continue
        box[:, 0] = np.clip(np.round(box[:, 0] / w * dest_w), 0, dest_w)
        box[:, 1] = np.clip(np.round(box[:, 1] / h * dest_h), 0, dest_h)
        out.append(box.astype(np.int32))
    return out


def order_and_clip(boxes: list[np.ndarray], img_w: int, img_h: int) -> list[np.ndarray]:
    """Reorder corners (left pair by y, right pair by y), clip into the image, drop boxes <= 3 px."""
    kept = []
    for box in boxes:
        by_x = box[np.argsort(box[:, 0])]
        left, right = by_x[:2], by_x[2:]
        tl, bl = left[np.argsort(left[:, 1])]
        tr, br = right[np.argsort(right[:, 1])]
        quad = np.array([tl, tr, br, bl], np.float32)
        quad[:, 0] = [int(min(max(v, 0), img_w - 1)) for v in quad[:, 0]]
        quad[:, 1] = [int(min(max(v, 0), img_h - 1)) for v in quad[:, 1]]
        if int(np.linalg.norm(quad[0] - quad[1])) <= 3 or int(np.linalg.norm(quad[0] - quad[3])) <= 3:
            continue
        kept.append(quad)
    return kept


def reading_order(quads: list[np.ndarray], skew: float = 0.0) -> list[np.ndarray]:
    """Top to bottom by top-left y; boxes chained by y steps < LINE_GAP form a line, read left to right.

    With a skew (radians, the page's text lines' slope), the top-left corners are first turned
    back by it, so that the boxes of one tilted line still chain together.
    """
    if not quads:
        return []
    cos, sin = np.float32(np.cos(skew)), np.float32(np.sin(skew))

    def level(q: np.ndarray) -> tuple[float, float]:
        return (q[0][0] * cos + q[0][1] * sin, q[0][1] * cos - q[0][0] * sin) if skew else (q[0][0], q[0][1])

    by_y = sorted(quads, key=lambda q: level(q)[1])
    ys = np.array([level(q)[1] for q in by_y])
    xs = np.array([level(q)[0] for q in by_y])
    line = np.concatenate(([0], np.cumsum(np.diff(ys) >= LINE_GAP)))
    return [by_y[i] for i in np.lexsort((xs, line))]


def detect_quads(prob: np.ndarray, img_w: int, img_h: int) -> list[np.ndarray]:
    """The whole post-processing: map -> float32 quads in the (resized, padded) image, reading order."""
    return reading_order(order_and_clip(boxes_from_map(prob, img_w, img_h), img_w, img_h))
