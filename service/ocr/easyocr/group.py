"""From word boxes to text lines and their grey crops (EasyOCR's group_text_box and get_image_list).

Nearly horizontal boxes are merged into lines and cut out upright; tilted boxes stay single and
are warped upright. The order produced here is the reading order of the result.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..types import Quad

SLOPE_THS = 0.1  # |dy/dx| of both long edges below this: the box is horizontal
YCENTER_THS = 0.5  # same row if the centre is within this share of the row's mean height
HEIGHT_THS = 0.5  # merge neighbours whose heights differ by less than this share
WIDTH_THS = 0.5  # ... and whose gap is less than this share of the box height
ADD_MARGIN = 0.1  # margin added around each line, as a share of its smaller side
MIN_SIZE = 20  # lines whose longer side is not above this (pixels) are dropped

@dataclass
class Crop:
    """One line to read: its quad in page pixels and its grey pixels, upright."""

    quad: Quad
    pixels: np.ndarray


def group(polys: np.ndarray) -> tuple[list[list[int]], list[np.ndarray]]:
    """int32 [N, 8] boxes -> (horizontal lines [x_min, x_max, y_min, y_max], tilted quads [4, 2] float).

    Lines come top to bottom, left to right within a row; tilted quads keep detection order.
    Both are filtered by MIN_SIZE.
    """
    horizontal, free = [], []
    for p in polys.astype(np.int64):
        slope_up = (p[3] - p[1]) / max(10, p[2] - p[0])
        slope_down = (p[5] - p[7]) / max(10, p[4] - p[6])
        if max(abs(slope_up), abs(slope_down)) < SLOPE_THS:
            xs, ys = p[0::2], p[1::2]
            y_min, y_max = int(ys.min()), int(ys.max())
            horizontal.append([int(xs.min()), int(xs.max()), y_min, y_max, 0.5 * (y_min + y_max), y_max - y_min])
        else:
            free.append(_pushed_out(p))
    horizontal.sort(key=lambda b: b[4])  # stable: ties keep detection order

    rows: list[list[list]] = []
    for box in horizontal:
        if rows and abs(np.mean([b[4] for b in rows[-1]]) - box[4]) < YCENTER_THS * np.mean([b[5] for b in rows[-1]]):
            rows[-1].append(box)
        else:
            rows.append([box])

    lines = []
    for row in rows:
        runs: list[list[list]] = []
        for box in sorted(row, key=lambda b: b[0]) if len(row) > 1 else row:
            if runs:
                run = runs[-1]
                heights = np.mean([b[5] for b in run])
                # The gap is measured from the previous box's right edge, against this box's height.
                if abs(heights - box[5]) < HEIGHT_THS * heights and box[0] - run[-1][1] < WIDTH_THS * (box[3] - box[2]):
                    run.append(box)
                    continue
            runs.append([box])
        for run in runs:
            x_min, x_max = min(b[0] for b in run), max(b[1] for b in run)
            y_min, y_max = min(b[2] for b in run), max(b[3] for b in run)
            margin = int(ADD_MARGIN * min(x_max - x_min, y_max - y_min))
            lines.append([x_min - margin, x_max + margin, y_min - margin, y_max + margin])

    lines = [b for b in lines if max(b[1] - b[0], b[3] - b[2]) > MIN_SIZE]
    free = [q for q in free if max(np.ptp(q[:, 0]), np.ptp(q[:, 1])) > MIN_SIZE]
    return lines, free


def _pushed_out(p: np.ndarray) -> np.ndarray:
    """A tilted box with its corners moved outward along the diagonals by the margin."""
    height = np.linalg.norm([p[6] - p[0], p[7] - p[1]])
    width = np.linalg.norm([p[2] - p[0], p[3] - p[1]])
    margin = int(1.44 * ADD_MARGIN * min(width, height))
    theta13 = abs(np.arctan((p[1] - p[5]) / max(10, p[0] - p[4])))
    theta24 = abs(np.arctan((p[3] - p[7]) / max(10, p[2] - p[6])))
    c13, s13 = np.cos(theta13) * margin, np.sin(theta13) * margin
    c24, s24 = np.cos(theta24) * margin, np.sin(theta24) * margin
    return np.array([[p[0] - c13, p[1] - s13], [p[2] + c24, p[3] - s24],
                     [p[4] + c13, p[5] + s13], [p[6] - c24, p[7] + s24]], dtype=np.float64)


def crops(grey: np.ndarray, lines: list[list[int]], free: list[np.ndarray]) -> list[Crop]:
    """Cut each line out of the grey page: lines clipped to the page, tilted quads warped upright."""
    page_h, page_w = grey.shape
    out = []
    for x_min, x_max, y_min, y_max in lines:
        x_min, y_min, x_max, y_max = max(0, x_min), max(0, y_min), min(x_max, page_w), min(y_max, page_h)
        if x_max > x_min and y_max > y_min:
            out.append(Crop([[x_min, y_min], [x_max, y_min], [x_max, y_max], [x_min, y_max]],
                            grey[y_min:y_max, x_min:x_max]))
    for quad in free:
        pixels = _warp(grey, quad.astype(np.float32))
        if pixels.size:
            out.append(Crop(quad.tolist(), pixels))
    return out


def _warp(grey: np.ndarray, rect: np.ndarray) -> np.ndarray:
    """Perspective-warp the quad (TL, TR, BR, BL) to an upright rectangle of its longer edges' size."""
    tl, tr, br, bl = rect
    width = max(int(np.sqrt(((br[0] - bl[0]) ** 2) + ((br[1] - bl[1]) ** 2))),
                int(np.sqrt(((tr[0] - tl[0]) ** 2) + ((tr[1] - tl[1]) ** 2))))
    height = max(int(np.sqrt(((tr[0] - br[0]) ** 2) + ((tr[1] - br[1]) ** 2))),
                 int(np.sqrt(((tl[0] - bl[0]) ** 2) + ((tl[1] - bl[1]) ** 2))))
    if width <= 0 or height <= 0:
        return np.zeros((0, 0), dtype=np.uint8)
    dst = np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], dtype=np.float32)
    return cv2.warpPerspective(grey, cv2.getPerspectiveTransform(rect, dst), (width, height))
