"""CRAFT's input canvas and the post-processing of its two score maps into word boxes.

Follows EasyOCR 1.7.2's defaults bit for bit: any change in the
canvas or the thresholds moves boxes, and boxes decide the crops the recognizer reads.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

CANVAS_SIZE = 2560  # longest side the detector sees; images are shrunk to it, never enlarged
TEXT_THRESHOLD = 0.7  # a component is kept only if its region score peaks above this
LOW_TEXT = 0.4  # region-score level that counts as text
LINK_THRESHOLD = 0.4  # affinity-score level that joins characters
MIN_AREA = 10  # components smaller than this (heat-map pixels) are noise
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def canvas(image: np.ndarray) -> tuple[np.ndarray, float]:
    """RGB uint8 page -> (zero-padded uint8 canvas with sides multiple of 32, scale applied to the page).

    Padding is bottom/right only, so heat-map coordinates map back by a single factor.
    """
    height, width = image.shape[:2]
    ratio = min(float(max(height, width)), CANVAS_SIZE) / max(height, width)
    th, tw = max(1, int(height * ratio)), max(1, int(width * ratio))  # a 1-px-thin strip stays 1 px
    resized = image if (th, tw) == (height, width) else cv2.resize(image, (tw, th), interpolation=cv2.INTER_LINEAR)
    out = np.zeros((-(-th // 32) * 32, -(-tw // 32) * 32, 3), dtype=np.uint8)
    out[:th, :tw] = resized
    return out, ratio


def normalize(batch: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float32 [B, 3, H, W], ImageNet mean/std on the 0-255 scale.

    Kept as subtract-then-divide in float32, the original's exact arithmetic. The result stays
    channels_last in memory, the layout the convolutions run fastest in.
    """
    mean = torch.tensor([m * 255.0 for m in MEAN], dtype=torch.float32, device=batch.device)
    std = torch.tensor([s * 255.0 for s in STD], dtype=torch.float32, device=batch.device)
    return ((batch.float() - mean) / std).permute(0, 3, 1, 2)


def boxes(text: np.ndarray, link: np.ndarray) -> np.ndarray:
    """Region and affinity maps (float32, heat-map pixels) -> boxes [N, 4, 2] float32, TL first, clockwise.

    One box per connected text component, in the component order of OpenCV's labelling (raster
    order of each component's first pixel), which the line grouping's stable sort relies on.
    Each component is handled inside its own dilation window only, which gives the same pixels as
    the original's whole-map passes at a fraction of the cost.
    """
    text_score = text > LOW_TEXT
    link_score = link > LINK_THRESHOLD
    link_only = link_score & ~text_score
    count, labels, stats, _ = cv2.connectedComponentsWithStats((text_score | link_score).view(np.uint8), connectivity=4)
    map_h, map_w = text.shape
    found = []
    for k in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[k])
        if area < MIN_AREA:
            continue
        member = labels[y:y + h, x:x + w] == k
        if text[y:y + h, x:x + w][member].max() < TEXT_THRESHOLD:
            continue
        niter = int(math.sqrt(area * min(w, h) / (w * h)) * 2)
        sx, sy = max(x - niter, 0), max(y - niter, 0)
        ex, ey = min(x + w + niter + 1, map_w), min(y + h + niter + 1, map_h)
        seg = np.zeros((ey - sy, ex - sx), dtype=np.uint8)
        seg[y - sy:y - sy + h, x - sx:x - sx + w][member] = 255
        seg[link_only[sy:ey, sx:ex]] = 0
        seg = cv2.dilate(seg, cv2.getStructuringElement(cv2.MORPH_RECT, (1 + niter, 1 + niter)))
        ys, xs = np.nonzero(seg)
        points = np.stack([xs + sx, ys + sy], axis=1).astype(np.int32)
        box = cv2.boxPoints(cv2.minAreaRect(points))
        side_a, side_b = np.linalg.norm(box[0] - box[1]), np.linalg.norm(box[1] - box[2])
        if abs(1 - max(side_a, side_b) / (min(side_a, side_b) + 1e-5)) <= 0.1:
            # Near-square rectangles turn into diamonds at any angle: use the upright bounds.
            left, top = points.min(axis=0)
            right, bottom = points.max(axis=0)
            box = np.array([[left, top], [right, top], [right, bottom], [left, bottom]], dtype=np.float32)
        found.append(np.roll(box, 4 - int(box.sum(axis=1).argmin()), axis=0))
    return np.array(found, dtype=np.float32).reshape(-1, 4, 2)


def to_image(found: np.ndarray, ratio: float) -> np.ndarray:
    """Heat-map boxes -> int32 [N, 8] in page pixels (x1, y1, ..., x4, y4), truncated, not clipped.

    The heat map has stride 2. The product is taken in float64 and stored in float32 before
    truncation, as the original's in-place multiply does, so boundary pixels round the same way.
    """
    scaled = (found.astype(np.float64) * (1.0 / ratio * 2)).astype(np.float32)
    return scaled.astype(np.int32).reshape(-1, 8)
