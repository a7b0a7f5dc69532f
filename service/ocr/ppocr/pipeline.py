"""PpOcr: PP-OCRv6 small det + mobile cls + PP-OCRv6 small rec behind the OcrModel interface.

Two pipelines share the networks ([model] pipeline). "parse", the default: detection, then the
page's orientation decided once (orient.py) and every line read in that frame, each padded to a
width bucket of its own, so that the lines of every page of a call (and of several requests,
service/ocr/batching.py) share recognizer batches, and decoded with a prior on the space class
(recognize.SPACE_PRIOR); small images are enlarged only as far as detection needs. "rapidocr"
reproduces RapidOCR 3.10.0's default pipeline (tests/test_ppocr_parity.py
compares it with RapidOCR's own outputs): bounds/letterbox -> det (short side 736) -> DB boxes ->
perspective crops -> 0/180 classifier -> rec in ratio-sorted batches of 6 -> CTC -> drop empty and
low-confidence lines -> quads mapped back to the original image. RapidOCR works on BGR, so the RGB
input is flipped once per page.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, NamedTuple, Sequence

import cv2
import numpy as np
import torch

from ...settings import ModelSettings
from ..types import Line, ModelInfo, Page, as_quad
from .. import ctc, rules, words
from ..weights import load_state_dict, verify
from . import db, geometry, orient, recognize, streams
from .files import CLS_FILE, DET_FILE, DICT_FILE, REC_FILE
from .nets import ClsNet, DetNet, RecNet, fuse_gelu

log = logging.getLogger(__name__)

TEXT_SCORE = 0.5  # lines below this confidence are dropped (pages only, as RapidOCR does)
# Pages of one input shape detected in one forward pass: on a CPU one at a time gains as much;
# the GPU figure is not yet measured (`make bench-gpu`).
DET_BATCH = {"cpu": 1, "cuda": 16}
# Padded pixels of a recognizer batch (recognize.width_buckets): a CPU gains nothing past a small
# batch; on a GPU larger batches are the point of batching, bounded so that the (rows x steps x
# 18,385 classes) output stays a few hundred MiB. Not yet measured on a GPU (`make bench-gpu`).
REC_PIXELS = {"cpu": recognize.GROUP_PIXELS, "cuda": 320 * 128}


Net = Literal["det", "cls", "rec"]


class NetDtypes(NamedTuple):
    """The autocast dtype of each network; None runs that network in fp32."""

    det: torch.dtype | None
    cls: torch.dtype | None
    rec: torch.dtype | None


PRECISIONS: dict[str, NetDtypes] = {
    "fp32": NetDtypes(None, None, None),
    "bf16-rec": NetDtypes(None, None, torch.bfloat16),
    # The classifier stays fp32: it is a small share of the time, and its votes turn whole pages.
    "bf16": NetDtypes(torch.bfloat16, None, torch.bfloat16),
    "fp16": NetDtypes(torch.float16, torch.float16, torch.float16),
}

# What "auto" means: bf16 (detector and recognizer) for the parse pipeline on CPUs that compute
# bf16 natively (AVX512-BF16 or AMX), where it is the fastest setting and keeps every accuracy goal
# (docs/benchmarks.md, "Summary"); fp32 everywhere else. Elsewhere oneDNN emulates bf16, far slower;
# on CUDA fp16 reads worse and is no faster; the rapidocr pipeline stays fp32 for exact parity.
NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}
CPUINFO = Path("/proc/cpuinfo")


def native_bf16() -> bool:
    """Whether this CPU computes bf16 itself: the kernel's flags name AVX512-BF16 or AMX-BF16."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return bool(NATIVE_BF16_FLAGS & set(flags))


def auto_precision(device: torch.device, pipeline: str) -> str:
    """The precision "auto" resolves to on this device, for this pipeline (see above)."""
    return "bf16" if device.type == "cpu" and pipeline == "parse" and native_bf16() else "fp32"


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CPUs, where oneDNN runs these convolutions faster so; NCHW on GPUs, where
    PyTorch's own kernels (see without_cudnn) were faster in it (docs/benchmarks.md, GPU)."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


@contextlib.contextmanager
def without_cudnn() -> Iterator[None]:
    """PyTorch's own CUDA kernels instead of cuDNN, for one inference.

    Without shape buckets every page and every rec batch has a new input shape, and cuDNN plans
    each new shape of these depthwise networks from scratch, which costs many times the page's own
    inference time (docs/benchmarks.md, GPU); `[model] cudnn` turns it back on for the bucketed
    shapes. The flag is process-global: safe because a worker's model runs on one thread only (the
    request thread, or the inference thread of service/ocr/batching.py).
    """
    previous = torch.backends.cudnn.enabled
    torch.backends.cudnn.enabled = False
    try:
        yield
    finally:
        torch.backends.cudnn.enabled = previous


@dataclass
class PagePlan:
    """One page of the parse pipeline, ready to read: quarter turns applied (CCW), the working
    page's size, its quads in the upright frame and their crops, both in reading order."""

    turns: int
    width: int
    height: int
    quads: list[np.ndarray]
    crops: list[np.ndarray]
    seconds: float  # post-processing and orientation


class PpOcr:
    """The three networks, resident on one device for the life of the process."""

    reads_grey = False

    def __init__(self, det: DetNet, cls_net: ClsNet, rec: RecNet, alphabet: list[str], device: torch.device,
                 precision: str, sums: dict[str, str], pipeline: str = "parse", cudnn: bool = False,
                 det_bucket: int = 0, rec_streams: int = 1) -> None:
        self.det, self.cls_net, self.rec = det, cls_net, rec
        self.alphabet = alphabet
        self.device = device
        self.precision = precision
        self.pipeline = pipeline
        self.memory_format = memory_format(device)
        self.rec_pixels = REC_PIXELS.get(device.type, recognize.GROUP_PIXELS)
        # The parse pipeline's recognizer and classifier batches on a CPU: one per thread at once
        # (streams.py). The rapidocr pipeline keeps one stream, as its reference ran.
        self.rec_pool = streams.single_threaded_pool(rec_streams) \
            if device.type == "cpu" and pipeline == "parse" else None
        if self.rec_pool is not None:  # its threads go with the model (tests and benches load several)
            weakref.finalize(self, self.rec_pool.shutdown, wait=False)
        # [model] det_bucket: detector inputs padded (with zeros, as the network's own convolutions
        # pad a page's edges; the map is cut back to the page) so that pages share a few shapes.
        self.det_bucket = det_bucket if pipeline == "parse" else 0
        # cuDNN on a GPU only where shapes repeat (the parse pipeline's buckets) and when asked.
        self.cudnn = cudnn and pipeline == "parse"
        # Recognizer batches padded to a power of two (_rec_runner): repeating shapes are what
        # cuDNN's plans are worth; without cuDNN the padding would only be computed for nothing.
        self.pad_rows = device.type == "cuda" and self.cudnn
        # The parse pipeline decodes with the space prior (RapidOCR appends the space class last,
        # load); the RapidOCR one with the plain argmax.
        self.space_prior = (len(alphabet) - 1, recognize.SPACE_PRIOR) if pipeline == "parse" else None
        version = "rapidocr-3.10.0-defaults" if pipeline == "rapidocr" else "parse-oriented"
        self.info = ModelInfo(name="ppocrv6-small", version=version, weights_sha256=sums)

    @classmethod
    def load(cls, settings: ModelSettings, device: torch.device) -> PpOcr:
        precision = auto_precision(device, settings.pipeline) if settings.precision == "auto" else settings.precision
        allowed = ("fp32", "fp16") if device.type == "cuda" else ("fp32", "bf16-rec", "bf16")
        if precision not in allowed:
            raise ValueError(f"precision {settings.precision!r} is not available on {device.type}: "
                             f"use auto or one of {allowed}")
        sums = {}
        nets = []
        for net, name in ((DetNet(), DET_FILE), (ClsNet(), CLS_FILE), (RecNet(), REC_FILE)):
            state, sums[name] = load_state_dict(settings.weights_dir / name)
            net.load_state_dict(state, strict=True)
            nets.append(net.eval().to(device, memory_format=memory_format(device)))
        if settings.pipeline == "parse" and precision == "fp32":
            # GELU inside the 1x1 convolution: 9% off the recognizer's fp32 time, outputs within
            # 3e-7; in bf16 it gained within noise and moves last bits (docs/benchmarks.md, "CPU speed").
            for net in nets:
                fuse_gelu(net)
        dict_path = settings.weights_dir / DICT_FILE
        sums[DICT_FILE] = verify(dict_path)
        chars = dict_path.read_text(encoding="utf-8").split("\n")[:-1]
        alphabet = ["blank", *chars, " "]  # CTC blank first; RapidOCR appends the space class last
        if device.type == "cuda" and settings.cudnn:
            # Plan each input shape once and keep the fastest; the buckets keep the shapes few.
            torch.backends.cudnn.benchmark = True
            if not settings.det_bucket:
                log.warning("[model] cudnn is on but det_bucket is 0: every page size is a new detector "
                            "shape for cuDNN to plan; set det_bucket too")
        # load_model has set the worker's intra-op threads: the recognizer's streams follow it.
        return cls(*nets, alphabet, device, precision, sums, settings.pipeline, settings.cudnn, settings.det_bucket,
                   torch.get_num_threads())

    @contextlib.contextmanager
    def _mode(self, net: Net) -> Iterator[None]:
        """Inference mode, with autocast where the precision asks for it on that network."""
        dtype = getattr(PRECISIONS[self.precision], net)
        with (torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None),
              without_cudnn() if self.device.type == "cuda" and not self.cudnn else contextlib.nullcontext()):
            yield

    def _runner(self, net: torch.nn.Module, which: Net) -> recognize.Runner:
        def run(batch: np.ndarray) -> np.ndarray:
            with self._mode(which):
                x = torch.from_numpy(batch).to(self.device).contiguous(memory_format=self.memory_format)
                return net(x).float().cpu().numpy()
        return run

    def _rec_runner(self) -> recognize.RecRunner:
        """The recognizer, with the CTC argmax taken on its device: only the path comes back. On
        a GPU a batch is padded with blank rows to a power of two, so that its shapes repeat."""
        def run(batch: np.ndarray) -> ctc.Greedy:
            rows = len(batch)
            with self._mode("rec"):
                x = torch.from_numpy(batch).to(self.device)
                if self.pad_rows and rows & (rows - 1):
                    x = torch.cat([x, x.new_zeros((1 << rows.bit_length()) - rows, *x.shape[1:])])
                probs = self.rec(x.contiguous(memory_format=self.memory_format))[:rows]
                return ctc.greedy_tensor(probs, self.space_prior)
        return run

    def _det_input(self, img: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """BGR uint8 page -> normalised (1,3,H,W) float32, padded to `det_bucket` where set, and
        the page's own (h, w) in it; 2x-1 in float32 rounds like Paddle's float64 path."""
        upscale = geometry.DET_MAX_UPSCALE if self.pipeline == "parse" else None
        h, w = geometry.det_size(*img.shape[:2], max_upscale=upscale)
        resized = cv2.resize(img, (w, h))
        x = torch.from_numpy(resized).to(self.device).permute(2, 0, 1)[None].float()
        x = x.mul_(np.float32(1 / 255)).mul_(2).sub_(1)
        if self.det_bucket:
            x = torch.nn.functional.pad(x, (0, -w % self.det_bucket, 0, -h % self.det_bucket))
        return x, (h, w)

    def _detect(self, pages: list[np.ndarray]) -> list[np.ndarray]:
        """Probability maps, one per page; pages of one input shape share forward passes where
        the device gains from it (DET_BATCH)."""
        inputs = [self._det_input(p) for p in pages]
        maps: list[np.ndarray | None] = [None] * len(pages)
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, (x, _) in enumerate(inputs):
            groups[tuple(x.shape)].append(i)
        step = DET_BATCH.get(self.device.type, 1)
        for idx in groups.values():
            for k in range(0, len(idx), step):
                chunk = idx[k:k + step]
                with self._mode("det"):
                    x = torch.cat([inputs[i][0] for i in chunk]).contiguous(memory_format=self.memory_format)
                    out = self.det(x)[:, 0].float().cpu().numpy()
                for i, m in zip(chunk, out):
                    h, w = inputs[i][1]
                    maps[i] = m[:h, :w]
        return maps

    def parse(self, images: Sequence[np.ndarray], greys: Sequence[np.ndarray | None] | None = None) -> list[Page]:
        """PP-OCR reads colour (BGR, as RapidOCR): `greys` is part of the interface, unused here."""
        start = time.perf_counter()
        pages, frames = [], []
        for rgb in images:
            page, frame = geometry.within_bounds(np.ascontiguousarray(rgb[..., ::-1]))
            pages.append(geometry.letterbox(page, frame))
            frames.append(frame)
        maps = self._detect(pages)
        per_page = (time.perf_counter() - start) / max(1, len(images))
        if self.pipeline == "parse":
            plans = [self._plan_page(page, prob) for page, prob in zip(pages, maps)]
            # Every page's lines through the recognizer together: a line's reading does not depend
            # on what shares its batch (recognize.width_buckets), so pages of several requests can.
            t0 = time.perf_counter()
            read = recognize.read([c for plan in plans for c in plan.crops], self._rec_runner(), self.alphabet,
                                  grouped=True, max_pixels=self.rec_pixels, pool=self.rec_pool)
            rec_per_page = (time.perf_counter() - t0) / max(1, len(plans))
            results, at = [], 0
            for rgb, frame, plan in zip(images, frames, plans):
                results.append(self._finish_page(rgb, frame, plan, read[at:at + len(plan.crops)],
                                                 per_page, rec_per_page))
                at += len(plan.crops)
            return results
        results = []
        for rgb, page, frame, prob in zip(images, pages, frames, maps):
            t0 = time.perf_counter()
            quads = db.detect_quads(prob, page.shape[1], page.shape[0])
            crops = [geometry.crop(page, q) for q in quads]
            t1 = time.perf_counter()
            upright, flipped = recognize.classify(crops, self._runner(self.cls_net, "cls")) if crops else ([], [])
            read = recognize.read(upright, self._rec_runner(), self.alphabet)
            t2 = time.perf_counter()
            h, w = rgb.shape[:2]
            lines = []
            for q, turned, reading in zip(quads, flipped, read):
                if not reading.text.strip() or reading.confidence < TEXT_SCORE:
                    continue
                corners = geometry.to_original(geometry.reading_corners(q, turned), frame, w, h)
                lines.append(Line(reading.text, reading.confidence, as_quad(geometry.to_original(q, frame, w, h)),
                                  words.words(reading.chars, corners, recognize.confidence)))
            results.append(Page(w, h, lines, {"detect": per_page + t1 - t0, "recognize": t2 - t1}))
        return results

    def _upside_down(self, crops: list[np.ndarray], classify: recognize.Runner) -> bool:
        """The classifier's vote over the page's longest lines (orient.voters), confirmed by the
        recognizer: a page is turned only when the voters read with more confidence turned. One
        scene-text page with two words was turned by the vote alone, wrongly."""
        voters = orient.voters(crops)
        if not voters:
            return False
        if not orient.upside_down(recognize.cls_probs([crops[i] for i in voters], classify, self.rec_pool)):
            return False
        sample = [crops[i] for i in voters[:orient.CHECKERS]]
        run = self._rec_runner()
        as_is = recognize.read(sample, run, self.alphabet, grouped=True, pool=self.rec_pool)
        turned = recognize.read([orient.turn_crop(c) for c in sample], run, self.alphabet, grouped=True,
                                pool=self.rec_pool)
        return sum(r.confidence for r in turned) > sum(r.confidence for r in as_is)

    def _plan_page(self, page: np.ndarray, prob: np.ndarray) -> PagePlan:
        """The parse pipeline between detection and reading: boxes, the page's orientation, and
        its line crops in reading order, cut upright."""
        t0 = time.perf_counter()
        h, w = page.shape[:2]
        quads = db.detect_quads(prob, w, h)
        classify = self._runner(self.cls_net, "cls")
        k = 0
        view, turned = page, quads
        if orient.sideways(quads):
            # The detector finds fewer lines on standing text than on the same text lying (see
            # docs/benchmarks.md): the vote picks the quarter turn (CCW or CW) from the
            # standing boxes, and the page is detected again, turned upright.
            k = 1
            first = orient.turn(page, k)
            standing = [orient.corner_order(orient.rotate_points(q, k, w, h)) for q in quads]
            if self._upside_down([geometry.crop(first, q) for q in standing], classify):
                k = 3
            view = orient.turn(page, k)
            turned = db.detect_quads(self._detect([view])[0], h, w)
        crops = [geometry.crop(view, q) for q in turned]
        if k == 0 and self._upside_down(crops, classify):
            k = 2
            turned = [orient.corner_order(orient.rotate_points(q, 2, w, h)) for q in turned]
            crops = [orient.turn_crop(c) for c in crops]
        # Reading order in the upright frame, with tilted lines levelled.
        index = {id(q): i for i, q in enumerate(turned)}  # reading_order returns the same arrays, reordered
        ranks = [index[id(q)] for q in db.reading_order(turned, orient.skew(turned))]
        return PagePlan(k, w, h, [turned[i] for i in ranks], [crops[i] for i in ranks], time.perf_counter() - t0)

    def _finish_page(self, rgb: np.ndarray, frame: geometry.Frame, plan: PagePlan, read: list[recognize.Reading],
                     detect_seconds: float, recognize_seconds: float) -> Page:
        """The page's lines from its readings, with quads back in the uploaded image's pixels."""
        k, w, h = plan.turns, plan.width, plan.height
        oh, ow = rgb.shape[:2]
        lines = []
        for quad, reading in zip(plan.quads, read):
            if reading.text.strip() and reading.confidence >= TEXT_SCORE:
                back = orient.unrotate_points(quad, k, w, h)
                # The crop was cut from the upright view: its reading corners there, mapped back
                # point by point, keep the word order of the text as read whatever the page angle.
                reading_back = orient.unrotate_points(geometry.reading_corners(quad, False), k, w, h)
                corners = geometry.to_original(reading_back, frame, ow, oh)
                lines.append(Line(reading.text, reading.confidence, as_quad(geometry.to_original(back, frame, ow, oh)),
                                  words.words(reading.chars, corners, recognize.confidence)))
        return Page(ow, oh, rules.drop(lines), {"detect": detect_seconds + plan.seconds, "recognize": recognize_seconds},
                    angle=90 * (k % 4))

    def recognize(self, images: Sequence[np.ndarray], greys: Sequence[np.ndarray | None] | None = None) -> list[Page]:
        """Each image is one line: bounds only (no letterbox, no classifier), as RapidOCR's rec-only call."""
        start = time.perf_counter()
        crops = [geometry.within_bounds(np.ascontiguousarray(rgb[..., ::-1]))[0] for rgb in images]
        results = []
        for rgb, crop in zip(images, crops):
            # One call per image, as the reference did: batch composition changes the output.
            reading = recognize.read([crop], self._rec_runner(), self.alphabet)[0]
            h, w = rgb.shape[:2]
            quad = [[0.0, 0.0], [float(w), 0.0], [float(w), float(h)], [0.0, float(h)]]
            line = Line(reading.text, reading.confidence, quad, words.words(reading.chars, quad, recognize.confidence))
            results.append(Page(w, h, [line], {"detect": 0.0, "recognize": 0.0}))
        per_image = (time.perf_counter() - start) / max(1, len(images))
        for page in results:
            page.timing["recognize"] = per_image
        return results

    def warmup(self) -> None:
        """A rendered two-line page through det, cls and rec, plus one rec-only call."""
        page = np.full((120, 400, 3), 255, np.uint8)
        cv2.putText(page, "PARSE 123", (10, 50), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 2)
        cv2.putText(page, "warm up", (10, 100), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 2)
        self.parse([page])
        self.recognize([page[20:70, :250]])
