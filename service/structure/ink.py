"""How heavy each line's type is: the stroke width of its glyphs, from the page's pixels.

Bold type at the body's size is how many documents set their headings ("Results:", a report's
"事项："); neither the OCR lines nor the layout model say so. Each line's crop is scaled to one
height, so that type of any size is measured alike, binarised (Otsu), and its stroke width taken
as ink area over half the ink's boundary (a stroke of width w and length L has area w·L and a
boundary of 2·L), as a share of that height.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

SCALE = 40  # px: every line's crop is scaled to this height before it is measured
MIN_SIDE = 6  # px: a crop smaller than this on a side holds too few pixels to measure
MIN_INK = 0.02  # a crop with less ink than this share of its pixels is blank (or a rule)


def stroke_widths(image: np.ndarray, boxes: Sequence[tuple[float, float, float, float]]) -> list[float | None]:
    """Each box's stroke width as a share of its height (None where it cannot be measured).
    image: RGB (or grey) uint8; boxes: (x0, y0, x1, y1) in its pixels."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    height, width = grey.shape[:2]
    cross = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))
    out: list[float | None] = []
    for x0, y0, x1, y1 in boxes:
        x0, y0 = max(0, int(x0)), max(0, int(y0))
        x1, y1 = min(width, int(np.ceil(x1))), min(height, int(np.ceil(y1)))
        if x1 - x0 < MIN_SIDE or y1 - y0 < MIN_SIDE:
            out.append(None)
            continue
        crop = grey[y0:y1, x0:x1]
        scaled = cv2.resize(crop, (max(1, round((x1 - x0) * SCALE / (y1 - y0))), SCALE),
                            interpolation=cv2.INTER_LINEAR)
        _, ink = cv2.threshold(scaled, 0, 1, cv2.THRESH_BINARY_INV | cv2.THRESH_OTSU)
        if ink.mean() > 0.5:  # light type on a dark ground
            ink = 1 - ink
        area = int(ink.sum())
        if area < MIN_INK * ink.size:
            out.append(None)
            continue
        boundary = area - int(cv2.erode(ink, cross).sum())
        out.append(2.0 * area / max(boundary, 1) / SCALE)
    return out
