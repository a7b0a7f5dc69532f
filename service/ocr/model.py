"""The OCR model interface shared by both families, and the loader that picks one.

A family (service/ocr/easyocr, service/ocr/ppocr) provides a class with `load` (classmethod: weights to a
ready model on a device), `parse` (pages: detect + recognise) and `recognize` (each image is one
text line). The app, the CLI and the benchmarks only ever see this interface.
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import Protocol, Sequence

import numpy as np
import torch

from ..settings import ModelSettings
from . import allocator
from .types import ModelInfo, Page

log = logging.getLogger(__name__)

# family name -> "module:Class"; the module is imported only when the family is chosen.
FAMILIES = {
    "easyocr": "service.ocr.easyocr.pipeline:EasyOcr",
    "ppocr": "service.ocr.ppocr.pipeline:PpOcr",
}


class OcrModel(Protocol):
    info: ModelInfo
    device: torch.device
    precision: str
    # True when the family reads grey pages and wants them decoded straight from the file
    # (images.decode_grey), as its reference did; callers then pass `greys`.
    reads_grey: bool

    def parse(self, images: Sequence[np.ndarray], greys: Sequence[np.ndarray | None] | None = None) -> list[Page]:
        """Detect and read every text line of each RGB uint8 HxWx3 image."""

    def recognize(self, images: Sequence[np.ndarray], greys: Sequence[np.ndarray | None] | None = None) -> list[Page]:
        """Read each RGB image as one text line, without detection; the quad is the whole image."""

    def warmup(self) -> None:
        """Run a small real image through every network so the first request pays no first-call costs."""


def select_device(requested: str) -> torch.device:
    """`cuda:N` when asked for and present; otherwise the CPU, with the reason in the log."""
    if requested.startswith("cuda"):
        index = int(requested.partition(":")[2] or 0)
        if torch.cuda.is_available() and index < torch.cuda.device_count():
            log.info("device %s (%s)", requested, torch.cuda.get_device_name(index))
            return torch.device("cuda", index)
        log.warning("device %s was asked for but is not available (cuda available: %s, devices: %d): using cpu",
                    requested, torch.cuda.is_available(), torch.cuda.device_count() if torch.cuda.is_available() else 0)
        return torch.device("cpu")
    if requested != "cpu":
        raise ValueError(f"unknown device {requested!r}: use 'cpu' or 'cuda:N'")
    log.info("device cpu")
    return torch.device("cpu")


def load_model(settings: ModelSettings, device: str = "cpu", threads: int = 1) -> OcrModel:
    """Build the configured family on the configured device; the one entry point for every caller."""
    if settings.family not in FAMILIES:
        raise ValueError(f"unknown model family {settings.family!r}: choose one of {sorted(FAMILIES)}")
    allocator.keep_freed_memory()
    torch.set_num_threads(threads)
    dev = select_device(device)
    module_name, _, cls_name = FAMILIES[settings.family].partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    start = time.perf_counter()
    model = cls.load(settings, dev)
    if dev.type == "cuda":
        # PyTorch lets cuDNN round fp32 convolutions to TF32 by default. Whatever runs in fp32 here
        # is meant to be fp32 (autocast's fp16/bf16 convolutions don't use TF32 anyway).
        torch.backends.cudnn.allow_tf32 = False
    log.info("model %s %s loaded on %s (%s, %d threads) in %.2fs", model.info.name, model.info.version, dev,
             model.precision, threads, time.perf_counter() - start)
    return model
