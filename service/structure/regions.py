"""Typed regions of a page from the layout model's detections and the page's own OCR lines.

The layout model (CDLA, trained on Chinese papers) finds tables, figures and titles well but
misses most text blocks outside papers and has no list class and no heading levels. So the
detections are only the start: every line goes to the detection that holds most of it; the
lines no detection holds, and those of each detected text block, are split into columns, grouped
into blocks by the reading-order code (service/layout), cut into paragraphs and typed from their
own shape (lists from bullets and numbering, headings from height and numbering, page numbers and
running heads from the margins); headings get levels, and every region is snapped to the lines it
holds. The result is in reading order: page headers first, then the body by an X-Y cut of the
regions (columns one after the other), each caption beside its figure or table, then page footers.
The design notes are in docs/design.md ("Document structure").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from statistics import median
from typing import Protocol, Sequence

import numpy as np

from ..layout import arrange
from ..ocr.types import Line, Quad

TYPES = ("title", "heading", "text", "list", "table", "figure", "caption", "header", "footer", "equation",
         "reference")
# The layout model's classes (CDLA) as region types.
FROM_LABEL = {"text": "text", "title": "heading", "figure": "figure", "figure_caption": "caption",
              "table": "table", "table_caption": "caption", "header": "header", "footer": "footer",
              "reference": "reference", "equation": "equation"}
# Regions that keep the detector's box (their content is pixels, not only lines).
PICTURES = ("table", "figure", "equation")
# Which detection keeps a line that two hold: the table's cells need every line inside it.
PRIORITY = {"table": 0, "figure": 1, "equation": 2, "caption": 3, "heading": 4, "header": 5, "footer": 5,
            "reference": 6, "list": 6, "text": 7}

# Shares of a line's area, of the body's line height (h) or of the page, as named.
HOLDS = 0.5  # a detection holds a line when it covers this share of the line's box
DUPLICATE_IOU = 0.7  # two detections this alike are one region: the higher score (then priority) wins
HEADING_HEIGHT = 1.25  # a block whose lines are this much taller than the body's is a heading
NUMBERED_HEIGHT = 1.15  # ...or this much taller when it starts with a section number ("2.1", "一、")
SHORT_HEADING = 0.7  # ...and, over a paragraph, narrower than this share of its widest row
PARAGRAPH_END = 3.0  # a row ending this many h short of the block's right edge ends a paragraph
PARAGRAPH_INDENT = 1.0  # ...and a row starting this many h right of the block's left edge starts one
HEADING_MAX_ROWS = 2
HEADING_MAX_CHARS = 80
TITLE_HEIGHT = 1.6  # ...and the tallest heading this tall, in the page's top third, is the title
SAME_LEVEL = 0.2  # heading heights within this share of each other are one size (the title's test)
VERTICAL = 2.0  # a line this many times taller than wide is set vertically
MARGIN = 0.06  # top and bottom bands of the page where running heads and page numbers sit
CAPTION_GAP = 2.5  # a "Figure 3"/"Table 2" block within this many h of a figure or table is its caption
GUTTER_H = 0.5  # free lines: a vertical band this many h wide that no narrow line crosses is a gutter
COLUMN_H = 8.0  # ...between sides at least this many h wide
MIN_COLUMN_LINES = 3  # ...each holding this many lines
CROSSING = 0.05  # ...that at most this share of the lines crosses (titles over both columns)
CUT_SLACK = 0.02  # the X-Y cut pulls each box's edges in by this share of its size
BUILT_SCORE = 0.5  # the score of regions built from lines, not detected

# A dash, star or ">" is a bullet only before a space: "-5%" is a number, "*p" a footnote mark.
BULLET = re.compile(r"^\s*([\u2022\u00b7\u25cf\u25cb\u25e6\u25aa\u25a0\u25a1\u27a2\u2713\u2714\u2023\u2043"
                    r"\u2219»]\s*\S|[*\-\u2013\u2014>]\s+\S)")
# "3." or "3)" numbers an item; "20.8%" and "3.14" are numbers in the text.
ENUMERATED = re.compile(r"^\s*(\(?\d{1,3}[.)](?!\d)|\(?[a-zA-Z][.)]|\(?[ivxIVX]{1,4}[.)]|\(\d{1,3}\)|\d{1,3}、|"
                        r"[\u2460-\u2473])\s*\S")
# "3", "3.1", "3.1.2" (a section number), or "一、", "第三章", "Part 2" (a named section), then the words.
SECTION = re.compile(r"^\s*(\d{1,2}(?:\.\d{1,2}){0,4})\.?\s+\S")
NAMED_SECTION = re.compile(r"^\s*(第[一二三四五六七八九十百0-9]+[章节部篇]|[一二三四五六七八九十]{1,3}[、.，．]|"
                           r"(?i:part|chapter|section|unit|lesson|appendix)\s+(?:\d{1,3}|[IVX]{1,4}|[A-Z])\b)")
CJK_SUBSECTION = re.compile(r"^\s*[(（][一二三四五六七八九十]{1,3}[)）]")
# Sub-points under a numbered point: "(1)", "（1）", "①", "a)".
SUBPOINT = re.compile(r"^\s*([(（]\d{1,2}[)）]|[\u2460-\u2473]|[a-z][.)])")
# A formula set on a line of its own ("T = 0") is not a heading, however tall.
FORMULA = re.compile(r"[=≡≈≤≥<>∑∫±×÷]")
# ...and a row that states a relation in symbols, with hardly a word, is a displayed formula.
RELATION = re.compile(r"[=≡≈≠≤≥∝]")
FORMULA_WORDS = 2
PAGE_NUMBER = re.compile(r"^\W{0,3}(?:page\s*)?\d{1,4}(?:\s*(?:/|of)\s*\d{1,4})?\W{0,3}$|^第\s*\d{1,4}\s*页", re.I)
CAPTION_START = re.compile(r"^\s*(fig(?:ure)?\.?|table|tab\.|chart|图|表)\s*[0-9一二三四五六七八九十IVX]", re.I)
WORD = re.compile(r"[^\W\d_]{3,}")
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
PROSE_WORDS, PROSE_CJK = 5, 10
PROSE_TABLE = 0.4  # a table this share of whose lines are prose is text
NESTED = 0.8  # a detection holding this share of a better one of its type, and twice its size, goes
PAGE_FIGURE = 0.5  # a figure over more than this share of the page holds no lines
SENTENCE_END = (".", "。", ",", "，", ";", "；", ":")


class DetectionLike(Protocol):
    """What the layout model returns per region (service.structure.layout.Detection)."""

    label: str
    box: tuple[float, float, float, float]
    score: float


@dataclass
class Region:
    type: str
    box: tuple[float, float, float, float]
    score: float
    lines: list[int] = field(default_factory=list)  # indices into the page's lines, in reading order
    level: int | None = None  # headings and the title

    @property
    def quad(self) -> Quad:
        x0, y0, x1, y1 = self.box
        return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]

    def to_json(self) -> dict:
        return {"type": self.type, "quad": [[round(x, 2), round(y, 2)] for x, y in self.quad],
                "score": round(float(self.score), 4), "lines": list(self.lines), "level": self.level}


Box = tuple[float, float, float, float]


def box_of(quad: Sequence[Sequence[float]]) -> Box:
    xs, ys = [p[0] for p in quad], [p[1] for p in quad]
    return min(xs), min(ys), max(xs), max(ys)


def _area(b: Box) -> float:
    return max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])


def _overlap(a: Box, b: Box) -> float:
    return _area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))


def _iou(a: Box, b: Box) -> float:
    inter = _overlap(a, b)
    return inter / (_area(a) + _area(b) - inter) if inter else 0.0


def _union(boxes: Sequence[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def _dedupe(detections: Sequence[DetectionLike]) -> list[Region]:
    """One region per place: of detections that nearly coincide, the best scored (then the more
    specific type) stays. The model's classes overlap (text and reference on one block)."""
    ranked = sorted((Region(FROM_LABEL.get(d.label, "text"), tuple(float(v) for v in d.box), float(d.score))
                     for d in detections),
                    key=lambda r: (-r.score, PRIORITY[r.type], r.box))
    kept: list[Region] = []
    for region in ranked:
        if _area(region.box) <= 0:
            continue
        # A box around a better-scored one of its own type (and twice its size) is the model
        # hedging between one table and a whole page of them.
        if any(k.type == region.type and _overlap(region.box, k.box) >= NESTED * _area(k.box)
               and _area(region.box) > 2 * _area(k.box) for k in kept):
            continue
        if all(_iou(region.box, k.box) < DUPLICATE_IOU for k in kept):
            kept.append(region)
    return kept


def prose(text: str) -> bool:
    """Whether a line reads as running text (a sentence's worth of words), not a label or a formula."""
    return len(WORD.findall(text)) >= PROSE_WORDS or len(CJK.findall(text)) >= PROSE_CJK


def _assign(regions: list[Region], lines: Sequence[Line], boxes: list[Box], page_area: float) -> list[int | None]:
    """Each line's region (index), or None: the one covering most of it, above HOLDS. A figure or
    an equation holds no running text: a detector's box that swallows paragraphs around a chart or
    a formula leaves them to the text regions."""
    owner: list[int | None] = []
    for line, b in zip(lines, boxes):
        area = max(_area(b), 1e-6)
        best, best_key = None, None
        is_prose = prose(line.text)
        for k, region in enumerate(regions):
            share = _overlap(b, region.box) / area
            if share < HOLDS or is_prose and region.type in ("figure", "equation"):
                continue
            if region.type == "figure" and _area(region.box) > PAGE_FIGURE * page_area:
                continue  # a "figure" over most of the page is a photographed page: its text is read
            key = (PRIORITY[region.type] > PRIORITY["equation"], -share, PRIORITY[region.type], k)
            if best_key is None or key < best_key:
                best, best_key = k, key
        owner.append(best)
    return owner


def _body_height(lines: Sequence[Line], boxes: list[Box]) -> float:
    """The typical height of a running-text line: the median over lines with text."""
    heights = [b[3] - b[1] for line, b in zip(lines, boxes) if len(line.text.strip()) > 1]
    return median(heights) if heights else 1.0


def formula(text: str) -> bool:
    """Whether a row is a displayed formula: a relation ("=", "≡", "≤") and at most
    FORMULA_WORDS words (a sentence that mentions "x = 0" is prose)."""
    return (bool(RELATION.search(text)) and any(c.isalnum() for c in text)  # "===" is a rule
            and len(WORD.findall(text)) + len(CJK.findall(text)) <= FORMULA_WORDS)


def _outline(text: str) -> bool:
    """A top-level numbered point in words with no sentence in it: "1. 天气及其影响", "2. Methods"."""
    m = SECTION.match(text)
    return bool(m) and "." not in m.group(1) and len(text) <= HEADING_MAX_CHARS // 2 and \
        bool(WORD.search(text) or len(CJK.findall(text)) >= 2) and not text.rstrip().endswith(SENTENCE_END)


def _kind(rows: list[list[int]], lines: Sequence[Line], boxes: list[Box], h: float, width: float,
          height: float) -> str:
    """The type of a block of lines no detection holds, from its own shape and place."""
    texts = [" ".join(lines[i].text.strip() for i in row) for row in rows]
    block = _union([boxes[i] for row in rows for i in row])
    top, bottom = block[3] <= MARGIN * height, block[1] >= (1 - MARGIN) * height
    if (top or bottom) and len(rows) <= 2:
        return "header" if top else "footer"
    # Text set vertically in a side margin (a report's running head) is a header too.
    if all(boxes[i][3] - boxes[i][1] > VERTICAL * (boxes[i][2] - boxes[i][0]) for row in rows for i in row) and \
            (block[2] <= MARGIN * width or block[0] >= (1 - MARGIN) * width):
        return "header"
    if len(rows) == 1 and PAGE_NUMBER.match(texts[0]) and (block[3] <= 2 * MARGIN * height
                                                          or block[1] >= (1 - 2 * MARGIN) * height):
        return "header" if block[1] < height / 2 else "footer"
    if all(map(formula, texts)):
        return "equation"
    if len(rows) <= HEADING_MAX_ROWS and sum(len(t) for t in texts) <= HEADING_MAX_CHARS:
        row_height = median(boxes[i][3] - boxes[i][1] for row in rows for i in row)
        # A section number makes a heading of a line a little taller than the body; without one
        # it takes a clearly larger type. "4. ..." in the body's size is a list item.
        numbered = bool(SECTION.match(texts[0]) or NAMED_SECTION.match(texts[0]))
        tall = row_height >= (NUMBERED_HEIGHT if numbered else HEADING_HEIGHT) * h
        # "一、", "第三章" or "Part 2" opens a section heading whatever its size.
        standalone = len(rows) == 1 and NAMED_SECTION.match(texts[0])
        if (tall or standalone) and not texts[-1].rstrip().endswith(SENTENCE_END) and not FORMULA.search(texts[0]):
            return "heading"
    if BULLET.match(texts[0]) or ENUMERATED.match(texts[0]):
        return "list"
    return "text"


def _built(lines: Sequence[Line], boxes: list[Box], free: list[int], h: float, width: float,
           height: float) -> list[Region]:
    """Regions for the lines no detection holds: service/layout's blocks, each typed."""
    if not free:
        return []
    out = []
    blocks = [[[group[i] for i in row] for row in block]
              for group in _column_groups(free, lines, boxes, h)
              for block in arrange([lines[i].quad for i in group]).blocks]

    def text(row: list[int]) -> str:
        return " ".join(lines[i].text.strip() for i in row)

    for block in blocks:
        parts = _parts(block, lines, boxes, h)
        for k, part in enumerate(parts):
            kind = _kind(part, lines, boxes, h, width, height)
            # "1. Weather" over "(1) ...", "(2) ...": an outline's point is a heading over its sub-points.
            if len(part) == 1 and _outline(text(part[0])) and k + 1 < len(parts) and \
                    SUBPOINT.match(text(parts[k + 1][0])):
                kind = "heading"
            members = [i for row in part for i in row]
            out.append(Region(kind, _union([boxes[i] for i in members]), BUILT_SCORE, members))
    return out


def _column_groups(free: list[int], lines: Sequence[Line], boxes: list[Box], h: float) -> list[list[int]]:
    """Lines in columns, split at a gutter before service/layout reads each group.

    service/layout keeps two sides whose lines share rows together (a table's cells do), which
    also keeps an exam's or a form's two columns of short lines together. Here a gutter that only
    lines spanning both columns (titles) cross splits the lines when each side is wide enough for
    prose and holds a few lines: bands between the crossing lines, each band's left side then its
    right side (each split again the same way)."""
    if len(free) < 2 * MIN_COLUMN_LINES:
        return [free]
    x0, x1 = int(min(boxes[i][0] for i in free)), int(max(boxes[i][2] for i in free)) + 1
    cover = np.zeros(x1 - x0 + 1, np.int32)  # lines over each pixel column
    for i in free:
        cover[int(boxes[i][0]) - x0:int(boxes[i][2]) - x0 + 1] += 1
    # A gutter: columns crossed by at most a few lines (titles over both columns), GUTTER_H wide.
    open_ = cover <= max(1, int(CROSSING * len(free)))
    best, run = None, 0
    for x in range(len(cover)):
        run = run + 1 if open_[x] else 0
        if run >= GUTTER_H * h:
            gutter = x0 + x - run // 2
            left = sum(boxes[j][2] <= gutter for j in free)
            right = sum(boxes[j][0] >= gutter for j in free)
            if min(left, right) >= MIN_COLUMN_LINES and gutter - x0 >= COLUMN_H * h and x1 - gutter >= COLUMN_H * h:
                best = gutter
                break
    if best is None:
        return [free]
    crossing = sorted((i for i in free if boxes[i][0] < best < boxes[i][2]), key=lambda i: boxes[i][1])
    groups: list[list[int]] = []
    top = float("-inf")
    for cut in [*crossing, None]:
        bottom = boxes[cut][1] if cut is not None else float("inf")
        band = [i for i in free if i not in crossing and top <= (boxes[i][1] + boxes[i][3]) / 2 < bottom]
        for side in ([i for i in band if boxes[i][2] <= best], [i for i in band if boxes[i][2] > best]):
            if side:
                groups.extend(_column_groups(side, lines, boxes, h) if len(side) < len(free) else [side])
        if cut is not None:
            groups.append([cut])
            top = boxes[cut][3]
    return [g for g in groups if g]


def _parts(rows: list[list[int]], lines: Sequence[Line], boxes: list[Box], h: float) -> list[list[list[int]]]:
    """A block cut where its kind changes without a gap: displayed formulas in running text, a
    heading over its first paragraph or a named section's row further down, and a run of bulleted
    or numbered rows (with their indented continuations) inside running text."""
    texts = [" ".join(lines[i].text.strip() for i in row) for row in rows]
    height = lambda row: median(boxes[i][3] - boxes[i][1] for i in row)
    shown = list(map(formula, texts))
    if any(shown) and not all(shown):  # displayed formulas apart from the prose around them
        out, start = [], 0
        for end in range(1, len(rows) + 1):
            if end == len(rows) or shown[end] != shown[start]:
                out.extend([rows[start:end]] if shown[start] else _parts(rows[start:end], lines, boxes, h))
                start = end
        return out
    if len(rows) > 1 and len(texts[0]) <= HEADING_MAX_CHARS and not texts[0].rstrip().endswith(SENTENCE_END):
        numbered = SECTION.match(texts[0]) or NAMED_SECTION.match(texts[0])
        width = lambda row: boxes[row[-1]][2] - boxes[row[0]][0]
        short = width(rows[0]) < SHORT_HEADING * max(width(r) for r in rows[1:])
        if (height(rows[0]) >= (NUMBERED_HEIGHT if numbered else HEADING_HEIGHT) * max(h, height(rows[1]))
                or NAMED_SECTION.match(texts[0]) and short) and not FORMULA.search(texts[0]):
            return [rows[:1], *_parts(rows[1:], lines, boxes, h)]
    # "1. Weather" over "(1) ...", "(2) ...": the point apart from its sub-points (see _built).
    if len(rows) > 1 and _outline(texts[0]) and SUBPOINT.match(texts[1]):
        return [rows[:1], *_parts(rows[1:], lines, boxes, h)]
    # "二、" or "Part 2" opening a short row further down starts a section there (a worksheet's parts).
    widest = max(boxes[row[-1]][2] - boxes[row[0]][0] for row in rows)
    inner = next((k for k in range(1, len(rows)) if NAMED_SECTION.match(texts[k])
                  and len(texts[k]) <= HEADING_MAX_CHARS and not texts[k].rstrip().endswith(SENTENCE_END)
                  and boxes[rows[k][-1]][2] - boxes[rows[k][0]][0] < SHORT_HEADING * widest), None)
    if inner is not None:
        return [*_parts(rows[:inner], lines, boxes, h), *_parts(rows[inner:], lines, boxes, h)]
    marked = [k for k, t in enumerate(texts) if BULLET.match(t) or ENUMERATED.match(t)]
    if len(marked) < 2 or len(rows) == len(marked):
        return _paragraphs(rows, boxes, h) if not marked else [rows]
    first, last = marked[0], marked[-1]
    left = min(boxes[i][0] for k in marked for i in rows[k][:1])
    while last + 1 < len(rows) and boxes[rows[last + 1][0]][0] > left + 0.5 * h:
        last += 1  # an item's second row, indented under its text
    if first == 0 and last == len(rows) - 1:
        return [rows]
    before = _parts(rows[:first], lines, boxes, h) if first else []
    after = _parts(rows[last + 1:], lines, boxes, h) if last + 1 < len(rows) else []
    return [*before, *_parts(rows[first:last + 1], lines, boxes, h), *after]


def _paragraphs(rows: list[list[int]], boxes: list[Box], h: float) -> list[list[list[int]]]:
    """Running text cut into paragraphs where nothing but the type says so: after a row that stops
    well short of the block's right edge, and before a row whose first line is indented."""
    if len(rows) < 3:
        return [rows]
    left = median(boxes[row[0]][0] for row in rows)
    right = max(boxes[row[-1]][2] for row in rows)
    out = [[rows[0]]]
    for prev, row in zip(rows, rows[1:]):
        short = boxes[prev[-1]][2] < right - PARAGRAPH_END * h
        indented = boxes[row[0]][0] > left + PARAGRAPH_INDENT * h and boxes[prev[0]][0] <= left + 0.3 * h
        if short or indented:
            out.append([])
        out[-1].append(row)
    return out


def _row_height(region: Region, boxes: list[Box]) -> float:
    return median(boxes[i][3] - boxes[i][1] for i in region.lines) if region.lines else 0.0


def _levels(regions: list[Region], lines: Sequence[Line], boxes: list[Box], h: float, height: float) -> None:
    """Title and heading levels, relative to the page (a page cannot know its document's outline):
    the tallest heading near the top, well above the body's height and alone in its size, is the
    title; it and the page's top headings are level 1. Deeper levels come from section numbers
    only ("2.1" under "2", "(一)" under "一、"): type size tells a heading from the body,
    but a bold run-in heading at the body's size is as often a top-level one as a deep one."""
    heads = [r for r in regions if r.type in ("heading", "title") and r.lines]
    if not heads:
        return
    heights = {id(r): _row_height(r, boxes) for r in heads}
    top = max(heads, key=lambda r: (heights[id(r)], -r.box[1]))
    if heights[id(top)] >= TITLE_HEIGHT * h and top.box[1] < height / 3 and \
            sum(heights[id(r)] >= (1 - SAME_LEVEL) * heights[id(top)] for r in heads) == 1:
        top.type = "title"
    depths = {id(r): _depth(lines[r.lines[0]].text) for r in heads if r.type == "heading"}
    numbered = [d for d in depths.values() if d]
    shallowest = min(numbered) if numbered else 1
    for r in heads:
        depth = depths.get(id(r))
        r.level = min(6, 1 + depth - shallowest) if depth else 1


def _depth(text: str) -> int | None:
    """A section number's depth: "3" and "一、" 1, "3.2" and "(一)" 2, "3.2.1" 3; None unnumbered."""
    m = SECTION.match(text)
    if m:
        return m.group(1).count(".") + 1
    if NAMED_SECTION.match(text):
        return 1
    return 2 if CJK_SUBSECTION.match(text) else None


def _captions(regions: list[Region], lines: Sequence[Line], h: float, height: float) -> None:
    """Text blocks that start "Figure 3" or "Table 2" right above or below a figure or table
    are its caption (the detector misses many); a "caption" in the page's top or bottom margin
    with no figure or table beside it is the running head or foot the detector mistook."""
    owners = [r for r in regions if r.type in ("figure", "table")]
    near = lambda r, o: min(r.box[2], o.box[2]) - max(r.box[0], o.box[0]) > 0 and \
        max(o.box[1] - r.box[3], r.box[1] - o.box[3]) <= CAPTION_GAP * h
    for r in regions:
        margin = r.box[3] <= MARGIN * height or r.box[1] >= (1 - MARGIN) * height
        if r.type == "caption" and margin and not any(near(r, o) for o in owners):
            r.type = "header" if r.box[1] < height / 2 else "footer"
    for r in regions:
        if r.type != "text" or not r.lines or not CAPTION_START.match(lines[r.lines[0]].text):
            continue
        if any(near(r, o) for o in owners):
            r.type = "caption"


def _spans(items: list[Region], lo: int, hi: int) -> list[list[Region]]:
    """Runs of regions separated along one axis (lo/hi: 0/2 across, 1/3 down) by an empty band;
    a box's edges are pulled in by CUT_SLACK of its size, so that sloppy boxes that touch still part."""
    def edges(r: Region) -> tuple[float, float]:
        slack = CUT_SLACK * (r.box[hi] - r.box[lo])
        return r.box[lo] + slack, r.box[hi] - slack
    ordered = sorted(items, key=lambda r: (edges(r)[0], r.box))
    runs, reach = [[ordered[0]]], edges(ordered[0])[1]
    for r in ordered[1:]:
        start, end = edges(r)
        if start > reach:
            runs.append([])
        runs[-1].append(r)
        reach = max(reach, end)
    return runs


def _xy_cut(items: list[Region]) -> list[Region]:
    """Regions in reading order by a recursive X-Y cut: columns first (a gutter no region crosses),
    left to right, then bands top to bottom; what neither cut parts is read top to bottom."""
    if len(items) <= 1:
        return list(items)
    for lo, hi in ((0, 2), (1, 3)):
        runs = _spans(items, lo, hi)
        if len(runs) > 1:
            return [r for run in runs for r in _xy_cut(run)]
    return sorted(items, key=lambda r: (r.box[1], r.box[0]))


def _order(regions: list[Region], lines: Sequence[Line]) -> list[Region]:
    """Headers, the body by an X-Y cut of its regions (columns one after the other), each caption
    beside its figure or table, then footers. A region's lines are in service/layout's order."""
    for r in regions:
        if r.lines:
            order = arrange([lines[i].quad for i in r.lines]).block_lines()
            r.lines = [r.lines[j] for block in order for j in block]
    captions = [r for r in regions if r.type == "caption"]
    owners = [r for r in regions if r.type in ("figure", "table")]
    partner: dict[int, Region] = {}
    for c in captions:
        near = sorted((max(o.box[1] - c.box[3], c.box[1] - o.box[3]), k) for k, o in enumerate(owners)
                      if min(c.box[2], o.box[2]) - max(c.box[0], o.box[0]) > 0 and id(o) not in partner)
        if near:
            partner[id(owners[near[0][1]])] = c
            partner[id(c)] = owners[near[0][1]]
    margins = ("header", "footer")
    body = [r for r in regions if r.type not in margins and not (r.type == "caption" and id(r) in partner)]
    top_down = lambda r: (r.box[1], r.box[0])
    out: list[Region] = sorted((r for r in regions if r.type == "header"), key=top_down)
    for r in _xy_cut(body):
        c = partner.get(id(r))
        if c is not None:
            # A caption above its figure or table is read first, one below it after.
            out.extend([c, r] if c.box[3] <= (r.box[1] + r.box[3]) / 2 else [r, c])
        else:
            out.append(r)
    out.extend(sorted((r for r in regions if r.type == "footer"), key=top_down))
    return out


def build(detections: Sequence[DetectionLike], lines: Sequence[Line], width: int, height: int) -> list[Region]:
    """The page's regions, in reading order, each line in at most one of them."""
    boxes = [box_of(line.quad) for line in lines]
    h = _body_height(lines, boxes)
    regions = _dedupe(detections)
    owner = _assign(regions, lines, boxes, float(width) * height)
    # A table whose lines read mostly as sentences is running text the detector boxed.
    for k, region in enumerate(regions):
        held = [i for i, o in enumerate(owner) if o == k]
        if region.type == "table" and sum(map(prose, (lines[i].text for i in held))) > PROSE_TABLE * max(1, len(held)):
            region.type = "text"
    for i, k in enumerate(owner):
        if k is not None and lines[i].text.strip():
            regions[k].lines.append(i)
    # A detected text block or title with no line in it is a false find (or text the OCR did not see).
    regions = [r for r in regions if r.lines or r.type in PICTURES]
    # The detector's text blocks often hold several paragraphs, headings and lists (it was trained
    # on papers): each is cut into its own parts as free lines are, keeping the detector's score.
    cut = []
    for r in regions:
        if r.type not in ("text", "reference"):
            cut.append(r)
            continue
        for part in _built(lines, boxes, r.lines, h, width, height):
            part.score = r.score
            part.type = r.type if part.type == "text" else part.type
            cut.append(part)
    regions = cut
    for r in regions:  # snapped to what they hold
        held = [boxes[i] for i in r.lines]
        if held:
            r.box = _union([r.box, *held]) if r.type in PICTURES else _union(held)
    free = [i for i, k in enumerate(owner) if k is None and lines[i].text.strip()]
    regions += _built(lines, boxes, free, h, width, height)
    for r in regions:  # a detected title of many rows is running text the detector mistook
        if r.type == "heading" and r.score != BUILT_SCORE and len(r.lines) > 3 * HEADING_MAX_ROWS:
            r.type = "text"
    _captions(regions, lines, h, height)
    _levels(regions, lines, boxes, h, height)
    return _order(regions, lines)


def region_text(region: Region, lines: Sequence[Line]) -> str:
    """The region's lines as rows (a row's parts joined by a space), rows apart by a newline."""
    if not region.lines:
        return ""
    layout = arrange([lines[i].quad for i in region.lines])
    texts = [lines[i].text.strip() for i in region.lines]
    rows = (" ".join(texts[i] for i in row if texts[i]) for block in layout.blocks for row in block)
    return "\n".join(row for row in rows if row)


def page_text(regions: Sequence[Region], lines: Sequence[Line]) -> str:
    """The page's text in the regions' order, regions apart by a blank line."""
    return "\n\n".join(t for t in (region_text(r, lines) for r in regions) if t)
