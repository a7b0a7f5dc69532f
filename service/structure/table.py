"""Tables: SLANet_plus structure (slanet.py) decoded as RapidTable 0.3.0 decodes it, then cells filled.

`TableModel.structure` reproduces RapidTable's TableStructurer exactly: its resize/normalise/pad to
488, the greedy decode that stops at the end token, its token post-processing and its cell boxes
mapped back to crop pixels. The decoder is a plain loop over crops decoded together, each crop
leaving the batch at its own end token, and bounded by `table_max_steps`.

`TableModel.read` turns one table region of a page into a `Table`: cells with row/column spans,
page-pixel quads and text. Text comes either from RapidTable's own matching of OCR line boxes to
cells (`table = "rapidtable"`, exact) or, by default, from parse's word boxes: every word goes to the
cell that holds its centre, and a cell's words are joined in reading order (`table = "parse"`).
"""

from __future__ import annotations

import html as htmlmod
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..ocr.weights import WeightsError, load_state_dict, verify
from ..ocr.types import Line, as_quad
from ..settings import StructureSettings
from .slanet import INPUT_SIZE, NUM_CLASSES, SLANetPlus

NET_FILE = "slanet_plus.pt"
TOKENS_FILE = "slanet_plus_tokens.txt"
_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 1, 3)
_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 1, 3)
_SCALE = np.float32(1.0 / 255.0)
_TD_TOKENS = ("<td>", "<td", "<td></td>")
_WRAP_OPEN, _WRAP_CLOSE = ["<html>", "<body>", "<table>"], ["</table>", "</body>", "</html>"]


@dataclass
class Cell:
    row: int
    col: int
    rowspan: int
    colspan: int
    quad: list[list[float]]  # 4 points in page pixels
    text: str
    lines: list[int]  # indices into the page's lines that fill this cell

    def to_json(self) -> dict:
        return {"row": self.row, "col": self.col, "rowspan": self.rowspan, "colspan": self.colspan,
                "quad": as_quad(self.quad), "text": self.text}


@dataclass
class Table:
    quad: list[list[float]]  # the table's box in page pixels
    html: str  # <table>... with cell text, rowspan/colspan
    cells: list[Cell]
    # The structure was cut by table_max_steps or max_table_cells: only the rows read so far are here.
    truncated: bool = False

    def to_json(self) -> dict:
        return {"quad": as_quad(self.quad), "html": self.html, "cells": [c.to_json() for c in self.cells],
                "truncated": self.truncated}


@dataclass
class TableStructure:
    tokens: list[str]  # RapidTable's structure tokens, exactly (wrapped in <html><body><table>)
    boxes: np.ndarray  # (n_cells, 8) four corners per cell in crop pixels
    truncated: bool = False  # the decoder hit table_max_steps before its end token


@dataclass
class _Slot:
    """One cell as the tokens lay it out: grid position, span, and which box (td token) it is."""

    row: int
    col: int
    rowspan: int
    colspan: int
    box: int
    attrs: str = ""  # the span attributes as the tokens write them


def preprocess(crop_rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """RapidTable's input: BGR, longer side resized to 488, normalised (HWC, float32), zero-padded."""
    img = np.ascontiguousarray(crop_rgb[:, :, ::-1])
    h, w = img.shape[:2]
    ratio = INPUT_SIZE / (max(h, w) * 1.0)
    # cv2 cannot make a 0-px side: a 1000x1 sliver keeps one row.
    resized = cv2.resize(img, (max(1, int(w * ratio)), max(1, int(h * ratio))))
    norm = (resized.astype(np.float32) * _SCALE - _MEAN) / _STD
    out = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), dtype=np.float32)
    out[: norm.shape[0], : norm.shape[1]] = norm
    return out.transpose(2, 0, 1), (h, w)


def _decode_boxes(loc: np.ndarray, h: int, w: int) -> np.ndarray:
    """RapidTable's box arithmetic, dtype for dtype: x, y in [0, 1] -> crop pixels."""
    loc = loc.astype(np.float32).copy()
    shape = np.array([h, w, 1.0, 1.0, INPUT_SIZE, INPUT_SIZE])
    loc[:, 0::2] *= shape[1]
    loc[:, 1::2] *= shape[0]
    ratio = min(INPUT_SIZE / h, INPUT_SIZE / w)  # adapt_slanet_plus: undo the padding's squeeze
    loc[:, 0::2] *= INPUT_SIZE / (w * ratio)
    loc[:, 1::2] *= INPUT_SIZE / (h * ratio)
    return loc


class TableModel:
    """SLANet_plus loaded once per worker; `structure` for crops, `read` for a table on a page."""

    def __init__(self, settings: StructureSettings, net: SLANetPlus, vocab: list[str],
                 device: torch.device, sums: dict[str, str]):
        self.settings = settings
        self.net = net
        self.device = device
        self.weights_sha256 = sums
        # TableLabelDecode's vocabulary: "<td></td>" present, bare "<td>" dropped, sos first, eos last.
        vocab = list(vocab)
        if "<td></td>" not in vocab:
            vocab.append("<td></td>")
        if "<td>" in vocab:
            vocab.remove("<td>")
        self.vocab = ["sos"] + vocab + ["eos"]
        if len(self.vocab) != NUM_CLASSES:
            raise WeightsError(f"{TOKENS_FILE} gives {len(self.vocab)} classes, the network has {NUM_CLASSES}")
        self.eos = len(self.vocab) - 1
        self.td_ids = torch.tensor([i for i, t in enumerate(self.vocab) if t in _TD_TOKENS], device=device)

    @classmethod
    def load(cls, settings: StructureSettings, weights_dir: Path, device: torch.device) -> "TableModel":
        state, net_sum = load_state_dict(Path(weights_dir) / NET_FILE)
        net = SLANetPlus()
        net.load_state_dict(state, strict=True)
        # Folded batch norms and channels-last maps: a quarter less time per crop on CPUs, and the
        # same structure tokens and cell boxes (tests/test_table.py holds them to RapidTable's).
        net = net.eval().fold().to(device, memory_format=torch.channels_last)
        tokens_path = Path(weights_dir) / TOKENS_FILE
        tok_sum = verify(tokens_path)
        vocab = tokens_path.read_text(encoding="utf-8").splitlines()
        return cls(settings, net, vocab, device, {NET_FILE: net_sum, TOKENS_FILE: tok_sum})

    # ------------------------------------------------------------------ structure

    @torch.inference_mode()
    def structure(self, crops: list[np.ndarray]) -> list[TableStructure]:
        """RGB uint8 crops -> RapidTable's structure tokens and cell boxes (crop pixels), decoded together."""
        if not crops:
            return []
        inputs, shapes = zip(*(preprocess(c) for c in crops))
        x = torch.from_numpy(np.stack(inputs)).to(self.device).contiguous(memory_format=torch.channels_last)
        fea = self.net.encode(x)
        # The decoder's steps are a few hundred small ops each: a second CPU thread only adds a
        # barrier per op (15x slower at 2 threads on a busy 2-core host, docs/benchmarks.md).
        threads = torch.get_num_threads()
        if self.device.type == "cpu":
            torch.set_num_threads(1)
        try:
            ids, hiddens, truncated = self._decode(fea)
        finally:
            torch.set_num_threads(threads)
        out = []
        for k, (h, w) in enumerate(shapes):
            tokens, keep = [], []
            for step, idx in enumerate(ids[k]):
                if step > 0 and idx == self.eos:
                    break
                if idx in (0, self.eos):
                    continue
                tok = self.vocab[idx]
                if tok in _TD_TOKENS:
                    keep.append(step)
                tokens.append(tok)
            if keep:
                loc = self.net.head.locations(hiddens[k][keep]).float().cpu().numpy()
                boxes = _decode_boxes(loc, h, w)
            else:
                boxes = np.zeros((0, 8), dtype=np.float32)
            out.append(TableStructure(_WRAP_OPEN + tokens + _WRAP_CLOSE, boxes, truncated[k]))
        return out

    def _decode(self, fea: torch.Tensor) -> tuple[list[list[int]], list[torch.Tensor], list[bool]]:
        """Greedy decode; a crop leaves the batch at its first end token (RapidTable's Loop stops there)."""
        head = self.net.head
        n = fea.shape[0]
        fea_proj = head.i2h(fea)
        hidden = fea.new_zeros(n, head.h2h.in_features)
        prev = torch.zeros(n, dtype=torch.long, device=fea.device)
        active = list(range(n))
        ids: list[list[int]] = [[] for _ in range(n)]
        states: list[list[torch.Tensor]] = [[] for _ in range(n)]
        for _ in range(self.settings.table_max_steps):
            hidden, logits = head.step(hidden, F.one_hot(prev, NUM_CLASSES).to(fea.dtype), fea, fea_proj)
            prev = logits.argmax(1)
            step_ids = prev.tolist()
            for j, (k, idx) in enumerate(zip(active, step_ids)):
                ids[k].append(idx)
                states[k].append(hidden[j])
            if self.eos in step_ids:  # those crops are done: the rest go on without them
                keep = [j for j, idx in enumerate(step_ids) if idx != self.eos]
                if not keep:
                    active = []
                    break
                rows = torch.tensor(keep, device=fea.device)
                hidden, prev, fea, fea_proj = hidden[rows], prev[rows], fea[rows], fea_proj[rows]
                active = [active[j] for j in keep]
        live = set(active)
        return ids, [torch.stack(s) for s in states], [k in live for k in range(n)]

    # ------------------------------------------------------------------ read

    def read(self, image: np.ndarray, box: tuple[float, float, float, float] | None,
             lines: list[Line]) -> Table:
        """One table of a page (box in page pixels; None: the whole image), its cells filled from `lines`."""
        x0, y0, crop = crop_table(image, box)
        st = self.structure([crop])[0]
        table = self.fill(st, crop, (x0, y0), lines)
        if box is not None:  # the margin is the model's context; the table stands where it was found
            table.quad = [[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]]]
        return table

    def fill(self, st: TableStructure, crop: np.ndarray, offset: tuple[int, int], lines: list[Line]) -> Table:
        """A decoded structure plus the page's lines -> the Table (cells in page pixels)."""
        x0, y0 = offset
        h, w = crop.shape[:2]
        tokens, slots, cut = layout_cells(st.tokens, self.settings.max_table_cells, st.truncated)
        quad = [[x0, y0], [x0 + w, y0], [x0 + w, y0 + h], [x0, y0 + h]]
        boxes = st.boxes[[s.box for s in slots]] if slots else np.zeros((0, 8), np.float32)
        if self.settings.table == "rapidtable":
            html, texts, matched = rapidtable_fill(tokens, st.boxes, crop.shape, lines, offset)
            cell_lines = [matched.get(s.box, []) for s in slots]
            cell_texts = [texts.get(s.box, "") for s in slots]
        else:
            cell_texts, cell_lines = word_fill(slots, boxes, lines, offset, (w, h))
            html = cells_html(tokens, slots, cell_texts)
        cells = [Cell(s.row, s.col, s.rowspan, s.colspan,
                      [[float(b[i]) + x0, float(b[i + 1]) + y0] for i in (0, 2, 4, 6)], text, ls)
                 for s, b, text, ls in zip(slots, boxes, cell_texts, cell_lines)]
        return Table(quad, html, cells, truncated=st.truncated or cut)


def crop_table(image: np.ndarray, box: tuple[float, float, float, float] | None) -> tuple[int, int, np.ndarray]:
    """The table's crop and its top-left in the page: the box padded by 1% of the page's longer side
    (at least 4 px), clipped, as the reference run crops; None is the whole image."""
    h, w = image.shape[:2]
    if box is None:
        return 0, 0, image
    pad = max(4, int(0.01 * max(h, w)))
    x0, y0 = min(w - 1, max(0, int(box[0]) - pad)), min(h - 1, max(0, int(box[1]) - pad))
    x1, y1 = min(w, int(np.ceil(box[2])) + pad), min(h, int(np.ceil(box[3])) + pad)
    x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)  # a box off the page still gives a 1-px crop
    return x0, y0, np.ascontiguousarray(image[y0:y1, x0:x1])


def layout_cells(tokens: list[str], max_cells: int, truncated: bool) -> tuple[list[str], list[_Slot], bool]:
    """Grid positions of the cells the tokens describe (RapidTable's decode_logic_points rule).

    A structure the decoder did not finish (`truncated`) keeps its closed rows only; one with more than
    `max_cells` cells keeps the whole rows that fit. Returns the tokens that remain (closed again),
    the cells, and whether anything was cut."""
    body = tokens[3:-3] if tokens[:3] == _WRAP_OPEN else list(tokens)
    slots: list[_Slot] = []
    occupied: set[tuple[int, int]] = set()
    row = col = box = 0
    end_tok = end_slot = 0  # what a cut keeps: everything up to the last closed row
    over = False
    i = 0
    while i < len(body):
        tok = body[i]
        if tok == "<tr>":
            col = 0
        elif tok == "</tr>":
            row += 1
            if len(slots) <= max_cells:
                end_tok, end_slot = i + 1, len(slots)
        elif tok.startswith("<td"):
            rowspan = colspan = 1
            attrs = ""
            j = i
            if tok != "<td></td>":
                j = i + 1
                while j < len(body) and not body[j].startswith(">"):
                    if "colspan=" in body[j]:
                        colspan = int(body[j].split("=")[1].strip("\"'"))
                    elif "rowspan=" in body[j]:
                        rowspan = int(body[j].split("=")[1].strip("\"'"))
                    attrs += body[j]
                    j += 1
            while (row, col) in occupied:
                col += 1
            slots.append(_Slot(row, col, rowspan, colspan, box, attrs))
            occupied.update((r, c) for r in range(row, row + rowspan) for c in range(col, col + colspan))
            box += 1
            col += colspan
            i = j
            if len(slots) > max_cells:
                over = True
        i += 1
    if not (truncated or over):
        return _WRAP_OPEN + body + _WRAP_CLOSE, slots, False
    kept = body[:end_tok]
    # Close what the cut left open (<thead>/<tbody>) so that the tokens stay a table.
    for open_tag, close_tag in (("<thead>", "</thead>"), ("<tbody>", "</tbody>")):
        if kept.count(open_tag) > kept.count(close_tag):
            kept.append(close_tag)
    return _WRAP_OPEN + kept + _WRAP_CLOSE, slots[:end_slot], True


def cells_html(tokens: list[str], slots: list[_Slot], texts: list[str]) -> str:
    """<table> with <thead>/<tbody> as decoded, each cell's text escaped, spans kept."""
    body = tokens[3:-3]
    out = ["<table>"]
    k = i = 0
    while i < len(body):
        tok = body[i]
        if tok.startswith("<td"):
            if tok != "<td></td>":  # the cell's own tokens: attributes, ">" and "</td>"
                while i < len(body) and body[i] != "</td>":
                    i += 1
            if k < len(slots):
                out.append(f"<td{slots[k].attrs}>{htmlmod.escape(texts[k], quote=False)}</td>")
            k += 1
        elif tok in ("<thead>", "</thead>", "<tbody>", "</tbody>", "<tr>", "</tr>"):
            out.append(tok)
        i += 1
    out.append("</table>")
    return "".join(out)


def _word_boxes(lines: list[Line]):
    """(line, word, x0, y0, x1, y1) for every word (a line without words counts as one word)."""
    for li, line in enumerate(lines):
        words = line.words or [line]
        for wi, word in enumerate(words):
            q = np.asarray(word.quad, dtype=np.float64)
            yield li, wi, q[:, 0].min(), q[:, 1].min(), q[:, 0].max(), q[:, 1].max()


def word_fill(slots: list[_Slot], boxes: np.ndarray, lines: list[Line], offset: tuple[int, int],
              size: tuple[int, int]) -> tuple[list[str], list[list[int]]]:
    """parse's filling: each word to the cell holding its centre (else the nearest cell, if it is less
    than a word's height away), a cell's words joined line by line in reading order.

    A text line sits on one row of the table, while the network's cell boxes are loose by a few
    pixels vertically: so a line's words all go to the row that most of the line's width fell in,
    each to that row's cell under it (a line the OCR ran across two columns is still split)."""
    x0, y0 = offset
    w, h = size
    if not slots:
        return [], []
    rect = np.stack([boxes[:, 0::2].min(1), boxes[:, 1::2].min(1), boxes[:, 0::2].max(1), boxes[:, 1::2].max(1)], 1)
    rect = rect.astype(np.float64) + np.array([x0, y0, x0, y0])
    area = (rect[:, 2] - rect[:, 0]) * (rect[:, 3] - rect[:, 1])
    first = np.array([s.row for s in slots])
    last = first + np.array([s.rowspan for s in slots]) - 1
    placed: dict[int, list[tuple[int, int, float, float, float]]] = {}  # line -> (word, cell, x0, x1, top)
    for li, wi, a, b, c, d in _word_boxes(lines):
        cx, cy = (a + c) / 2, (b + d) / 2
        if not (x0 <= cx <= x0 + w and y0 <= cy <= y0 + h):
            continue  # outside the table
        inside = (rect[:, 0] <= cx) & (cx <= rect[:, 2]) & (rect[:, 1] <= cy) & (cy <= rect[:, 3])
        if inside.any():
            k = int(np.flatnonzero(inside)[np.argmin(area[inside])])
        else:
            dx = np.maximum(0, np.maximum(rect[:, 0] - cx, cx - rect[:, 2]))
            dy = np.maximum(0, np.maximum(rect[:, 1] - cy, cy - rect[:, 3]))
            dist = np.hypot(dx, dy)
            k = int(np.argmin(dist))
            if dist[k] > max(d - b, 1.0):
                continue
        placed.setdefault(li, []).append((wi, k, a, c, b))
    members: list[list[tuple[int, int, float, float]]] = [[] for _ in slots]
    for li, words in placed.items():
        votes: dict[int, float] = {}
        for _, k, a, c, _ in words:
            votes[slots[k].row] = votes.get(slots[k].row, 0.0) + (c - a)
        row = max(votes, key=lambda r: (votes[r], -r))
        on_row = np.flatnonzero((first <= row) & (row <= last))
        for wi, k, a, c, top in words:
            if not first[k] <= row <= last[k]:
                cx = (a + c) / 2
                gap = np.maximum(0, np.maximum(rect[on_row, 0] - cx, cx - rect[on_row, 2]))
                k = int(on_row[np.argmin(gap)])
            members[k].append((li, wi, top, a))
    texts, cell_lines = [], []
    for group in members:
        by_line: dict[int, list[tuple[int, float, float]]] = {}
        for li, wi, top, left in group:
            by_line.setdefault(li, []).append((wi, top, left))
        # A cell's lines top to bottom, then left to right; each line's words in their own order.
        order = sorted(by_line, key=lambda li: (min(t for _, t, _ in by_line[li]), min(x for _, _, x in by_line[li])))
        parts = []
        for li in order:
            words = lines[li].words
            parts.extend((words[wi].text if words else lines[li].text) for wi, _, _ in sorted(by_line[li]))
        texts.append(" ".join(p for p in parts if p))
        cell_lines.append(order)
    return texts, cell_lines


# ---------------------------------------------------------------------- RapidTable's matching


def _distance(b1, b2) -> float:
    x1, y1, x2, y2 = b1
    x3, y3, x4, y4 = b2
    dis = abs(x3 - x1) + abs(y3 - y1) + abs(x4 - x2) + abs(y4 - y2)
    return dis + min(abs(x3 - x1) + abs(y3 - y1), abs(x4 - x2) + abs(y4 - y2))


def _iou(r1, r2) -> float:
    s1 = (r1[2] - r1[0]) * (r1[3] - r1[1])
    s2 = (r2[2] - r2[0]) * (r2[3] - r2[1])
    left, right = max(r1[1], r2[1]), min(r1[3], r2[3])
    top, bottom = max(r1[0], r2[0]), min(r1[2], r2[2])
    if left >= right or top >= bottom:
        return 0.0
    inter = (right - left) * (bottom - top)
    return inter / (s1 + s2 - inter)


def rapidtable_fill(tokens: list[str], boxes: np.ndarray, shape: tuple[int, ...], lines: list[Line],
                    offset: tuple[int, int]) -> tuple[str, dict[int, str], dict[int, list[int]]]:
    """RapidTable 0.3.0's TableMatch on the lines that fall in the crop: (its HTML's <table> part,
    the text per cell (by box index), the lines matched per cell)."""
    x0, y0 = offset
    h, w = shape[:2]
    ocr = []  # RapidTable's get_boxes_recs: each line's box widened by 1 px, clipped to the crop
    for li, line in enumerate(lines):
        q = np.asarray(line.quad, dtype=np.float64) - np.array([x0, y0])
        cx, cy = q[:, 0].mean(), q[:, 1].mean()
        if not (0 <= cx <= w and 0 <= cy <= h):
            continue
        ocr.append((li, [max(0, q[:, 0].min() - 1), max(0, q[:, 1].min() - 1),
                         min(w, q[:, 0].max() + 1), min(h, q[:, 1].max() + 1)], line.text))
    matched: dict[int, list[int]] = {}
    if len(boxes):
        top = boxes[:, 1::2].min()
        ocr = [o for o in ocr if max(o[1][1], o[1][3]) >= top]  # _filter_ocr_result
        cells = [[np.min(b[0::2]), np.min(b[1::2]), np.max(b[0::2]), np.max(b[1::2])] for b in boxes]
        for i, (_, dt, _) in enumerate(ocr):
            keys = [(1.0 - _iou(dt, c), _distance(dt, c)) for c in cells]
            matched.setdefault(min(range(len(keys)), key=lambda j: keys[j]), []).append(i)
    out: list[str] = []
    texts: dict[int, str] = {}
    td = 0
    for tag in tokens:
        if "</td>" not in tag:
            out.append(tag)
            continue
        if tag == "<td></td>":
            out.extend("<td>")
        start = len(out)
        if td in matched:
            idx = matched[td]
            bold = "<b>" in ocr[idx[0]][2] and len(idx) > 1
            if bold:
                out.extend("<b>")
            for n, k in enumerate(idx):
                content = ocr[k][2]
                if len(idx) > 1:
                    if not content:
                        continue
                    if content[0] == " ":
                        content = content[1:]
                    if "<b>" in content:
                        content = content[3:]
                    if "</b>" in content:
                        content = content[:-4]
                    if not content:
                        continue
                    if n != len(idx) - 1 and content[-1] != " ":
                        content += " "
                out.extend(content)
            if bold:
                out.extend("</b>")
        texts[td] = "".join(out[start:])
        out.append("</td>" if tag == "<td></td>" else tag)
        td += 1
    html = "".join(t for t in out if t not in ("<thead>", "</thead>", "<tbody>", "</tbody>"))
    i, j = html.find("<table"), html.rfind("</table>")
    lines_per_cell = {td: [ocr[k][0] for k in idx] for td, idx in matched.items()}
    return html[i:j + 8], texts, lines_per_cell
