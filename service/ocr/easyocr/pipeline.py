"""EasyOcr: CRAFT + english_g2 behind the service's OcrModel interface (service/ocr/model.py).

Reproduces `easyocr.Reader(['en']).readtext(path)` with every default (fp32, no quantisation):
detect -> group into lines -> crop from the grey page -> recognise -> greedy CTC.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from typing import Iterator, Literal, NamedTuple, Sequence

import cv2
import numpy as np
import torch

from ...settings import ModelSettings
from .. import allocator, words
from ..types import Line, ModelInfo, Page, as_quad
from ..weights import load_state_dict
from . import detect, group, recognize, winograd
from .nets import Craft, Recognizer, fold_batchnorm

log = logging.getLogger(__name__)

DETECTOR_FILE = "craft_mlt_25k.pth"
RECOGNIZER_FILE = "english_g2.pth"
Net = Literal["detector", "recognizer"]


class NetDtypes(NamedTuple):
    """The autocast dtype of each network; None runs that network in fp32."""

    detector: torch.dtype | None
    recognizer: torch.dtype | None


PRECISIONS: dict[str, NetDtypes] = {
    "fp32": NetDtypes(None, None),
    "bf16-det": NetDtypes(torch.bfloat16, None),
    "bf16": NetDtypes(torch.bfloat16, torch.bfloat16),
    "fp16": NetDtypes(torch.float16, torch.float16),
}

# What "auto" means on every device: fp32 is the only precision that kept the parity goal on the
# dev set; each faster opt-in stays selectable by name, with its cost in docs/benchmarks.md.
AUTO_PRECISION = "fp32"


def winograd_applies(settings: ModelSettings, device: torch.device, precision: str) -> tuple[bool, str]:
    """Whether CRAFT's middle runs as Winograd convolutions (winograd.py), and why, for the log."""
    if not settings.winograd:
        return False, "winograd = false"
    if device.type != "cpu":
        return False, f"Winograd is for CPUs, this is {device}"
    if PRECISIONS[precision].detector is not None:
        return False, f"Winograd takes fp32, the detector runs in {precision}"
    if not winograd.available():
        return False, "NNPACK does not run on this CPU"
    return True, "winograd = true"


def grey_pages(images: Sequence[np.ndarray], greys: Sequence[np.ndarray | None] | None) -> list[np.ndarray]:
    """The caller's file-decoded grey page where it has one, else the RGB page converted."""
    greys = greys or [None] * len(images)
    return [g if g is not None else cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) for rgb, g in zip(images, greys)]


class EasyOcr:
    """One loaded detector and recognizer, resident on one device for the life of the process."""

    # The recognizer was measured on pages decoded straight to grey: callers pass them (images.decode_grey).
    reads_grey = True

    def __init__(self, craft: Craft, recognizer: Recognizer, device: torch.device, precision: str,
                 sums: dict[str, str], uses_winograd: bool) -> None:
        self.craft = craft
        self.recognizer = recognizer
        self.device = device
        self.precision = precision
        self.uses_winograd = uses_winograd
        # Pages whose canvases have the same size go through CRAFT together on a GPU; on the CPU a
        # batch gains nothing and holds more memory, so each page goes alone.
        self.batch_detector = device.type == "cuda"
        self.info = ModelInfo(name="easyocr-craft-english_g2", version="easyocr-1.7.2-defaults", weights_sha256=sums)

    @classmethod
    def load(cls, settings: ModelSettings, device: torch.device) -> EasyOcr:
        precision = AUTO_PRECISION if settings.precision == "auto" else settings.precision
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {settings.precision!r}: use auto, {', '.join(PRECISIONS)}")
        # Pages and crops of new sizes: cached kernels would only hold memory (allocator.py).
        allocator.limit_kernel_caches()
        sums = {}
        nets = []
        for net, name in ((Craft(), DETECTOR_FILE), (Recognizer(), RECOGNIZER_FILE)):
            state, sums[name] = load_state_dict(settings.weights_dir / name, strip_prefix="module.")
            net.load_state_dict(state, strict=True)
            # Folded BN and channels_last: about 10 % and 15 % less CPU time, outputs equal up to rounding.
            nets.append(fold_batchnorm(net.eval().requires_grad_(False)).to(device, memory_format=torch.channels_last))
        craft, recognizer = nets
        uses_winograd, why = winograd_applies(settings, device, precision)
        if uses_winograd:
            winograd.use_winograd(craft)
        log.info("easyocr precision %s (setting %r); CRAFT's convolutions %s (%s)", precision, settings.precision,
                 "Winograd in slices 2-4, through NNPACK" if uses_winograd else "direct", why)
        return cls(craft, recognizer, device, precision, sums, uses_winograd)

    @contextlib.contextmanager
    def _inference(self, net: Net) -> Iterator[None]:
        """Inference mode, with autocast where the precision asks for it on that network."""
        dtype = getattr(PRECISIONS[self.precision], net)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            yield

    def _recognize_probs(self, batch: torch.Tensor) -> torch.Tensor:
        with self._inference("recognizer"):
            logits = self.recognizer(batch.to(self.device).contiguous(memory_format=torch.channels_last))
            return torch.softmax(logits.float(), dim=2)

    def _detect(self, images: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
        """Pages -> (int32 [N, 8] boxes per page, seconds per page); a batch's time is shared by its pages."""
        prepared = [detect.canvas(image) for image in images]
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, (canvas, _) in enumerate(prepared):
            groups[canvas.shape if self.batch_detector else (i,)].append(i)
        boxes: list[np.ndarray] = [np.zeros((0, 8), np.int32)] * len(images)
        seconds = [0.0] * len(images)
        for members in groups.values():
            start = time.perf_counter()
            batch = torch.from_numpy(np.stack([prepared[i][0] for i in members])).to(self.device)
            with self._inference("detector"):
                maps = self.craft(detect.normalize(batch))
            maps = maps.float().cpu().numpy()
            for row, i in enumerate(members):
                found = detect.boxes(np.ascontiguousarray(maps[row, 0]), np.ascontiguousarray(maps[row, 1]))
                boxes[i] = detect.to_image(found, prepared[i][1])
            for i in members:
                seconds[i] = (time.perf_counter() - start) / len(members)
        return boxes, seconds

    def parse(self, images: Sequence[np.ndarray], greys: Sequence[np.ndarray | None] | None = None) -> list[Page]:
        """`greys`, optional: the pages as grey uint8 for the recognizer, if the caller has them.

        The reference read JPEG files straight to grey (their luma). Grey computed from decoded RGB
        differs from it by up to ~10 levels on some pixels (RGB rounding and clipping), which
        changes a few reads. Pages without a grey (None) are converted from RGB here.
        """
        boxes, detect_seconds = self._detect(images)
        start = time.perf_counter()
        greys = grey_pages(images, greys)
        page_crops = [group.crops(grey, *group.group(polys)) for grey, polys in zip(greys, boxes)]
        # All pages' crops share the width-grouped batches.
        flat = [crop for crops in page_crops for crop in crops]
        reads = iter(recognize.read(self._recognize_probs, [c.pixels for c in flat]))
        recognize_seconds = time.perf_counter() - start
        pages = []
        for image, crops, det_s in zip(images, page_crops, detect_seconds):
            lines = [Line(r.text, r.confidence, as_quad(crop.quad), words.words(r.chars, crop.quad, recognize.custom_mean))
                     for crop, r in zip(crops, reads)]
            share = len(crops) / len(flat) if flat else 1 / len(images)
            pages.append(Page(image.shape[1], image.shape[0], lines,
                              {"detect": det_s, "recognize": recognize_seconds * share}))
        return pages

    def recognize(self, images: Sequence[np.ndarray], greys: Sequence[np.ndarray | None] | None = None) -> list[Page]:
        """`greys`, optional: as for `parse`, the images as grey uint8 if the caller decoded them so."""
        start = time.perf_counter()
        greys = grey_pages(images, greys)
        reads = recognize.read(self._recognize_probs, greys)
        seconds = (time.perf_counter() - start) / max(1, len(images))
        pages = []
        for grey, r in zip(greys, reads):
            h, w = grey.shape
            quad = as_quad([[0, 0], [w, 0], [w, h], [0, h]])
            line = Line(r.text, r.confidence, quad, words.words(r.chars, quad, recognize.custom_mean))
            pages.append(Page(w, h, [line], {"detect": 0.0, "recognize": seconds}))
        return pages

    def warmup(self) -> None:
        image = np.full((96, 320, 3), 255, dtype=np.uint8)
        cv2.putText(image, "Warm up 123", (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 2)
        self.parse([image])
        self.recognize([image[20:80]])
