"""Reading order: lines grouped into rows and blocks, from their quads alone (no model, no web).

A page is cut recursively at empty bands (an X-Y cut): across at a vertical gap wider than a line,
down at a gutter no line crosses, but only where the two sides are columns of prose; a receipt's
or a table's cells are separated by gutters too, and there the sides share rows, so they stay one
block and each row reads left to right. Each leaf is a block; its lines form rows by vertical
centre. Everything is measured in a frame turned by the page's median text angle, so that a
slightly rotated photo still keeps a row's parts together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import median
from typing import Sequence

# Shares of the median line height (h) unless said otherwise.
BLOCK_GAP = 0.8  # an empty band taller than this between lines starts a new block
GUTTER = 1.0  # an empty band wider than this may separate columns
SAME_ROW = 0.5  # a line joins a row when its centre is within this share of the smaller height
ALIGNED = 0.5  # ...sides whose lines share rows more often than this are one table, not columns
PROSE_WIDTH = 8.0  # lines this many heights wide, typically, are running text that wraps
PROSE_GUTTER = 0.3  # prose columns: the gutter is under this share of the narrower column
MAX_SKEW_DEG = 30.0  # edges steeper than this are vertical text, not a page's tilt


@dataclass
class Layout:
    """Blocks in reading order; each block is its rows top to bottom; each row, line indices left to right."""

    blocks: list[list[list[int]]]

    def block_lines(self) -> list[list[int]]:
        """Each block as one list of line indices in reading order (the JSON's `blocks`)."""
        return [[i for row in block for i in row] for block in self.blocks]

    def text(self, texts: Sequence[str]) -> str:
        """A row's parts joined by spaces, rows by newlines, blocks by a blank line."""
        return "\n\n".join("\n".join(" ".join(texts[i].strip() for i in row if texts[i].strip()) for row in block)
                           for block in self.blocks)


@dataclass
class _Box:
    index: int
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def height(self) -> float:
        return max(1.0, self.y1 - self.y0)

    @property
    def yc(self) -> float:
        return (self.y0 + self.y1) / 2


def skew(quads: Sequence[Sequence[Sequence[float]]]) -> float:
    """The median angle (radians) of the lines' top edges, ignoring near-vertical ones."""
    angles = []
    for q in quads:
        dx, dy = q[1][0] - q[0][0], q[1][1] - q[0][1]
        if dx > 0 and abs(math.degrees(math.atan2(dy, dx))) < MAX_SKEW_DEG:
            angles.append(math.atan2(dy, dx))
    return median(angles) if angles else 0.0


def _boxes(quads: Sequence[Sequence[Sequence[float]]]) -> list[_Box]:
    theta = skew(quads)
    cos, sin = math.cos(-theta), math.sin(-theta)
    out = []
    for i, q in enumerate(quads):
        xs = [x * cos - y * sin for x, y in q]
        ys = [x * sin + y * cos for x, y in q]
        out.append(_Box(i, min(xs), min(ys), max(xs), max(ys)))
    return out


def _bands(boxes: list[_Box], lo: str, hi: str, gap: float) -> list[tuple[list[_Box], float]]:
    """Runs of boxes separated along one axis by empty bands wider than gap; with each band's width
    before the next run (0 after the last)."""
    ordered = sorted(boxes, key=lambda b: getattr(b, lo))
    runs: list[list[_Box]] = [[ordered[0]]]
    widths: list[float] = []
    reach = getattr(ordered[0], hi)
    for box in ordered[1:]:
        start = getattr(box, lo)
        if start - reach > gap:
            widths.append(start - reach)
            runs.append([])
        runs[-1].append(box)
        reach = max(reach, getattr(box, hi))
    return list(zip(runs, [*widths, 0.0]))


def _share_rows(a: list[_Box], b: list[_Box]) -> float:
    """The share of the smaller side's lines that have a line of the other side on their row."""
    small, other = (a, b) if len(a) <= len(b) else (b, a)
    aligned = sum(any(abs(s.yc - o.yc) < SAME_ROW * min(s.height, o.height) for o in other) for s in small)
    return aligned / len(small)


def _columns(left: list[_Box], right: list[_Box], gutter: float, h: float) -> bool:
    """Whether a gutter separates columns (read one after the other) rather than a table's cells."""
    if _share_rows(left, right) < ALIGNED:
        return True
    # Prose in columns may share baselines (the same leading): its lines are long, its gutter narrow.
    widths = [max(b.x1 for b in side) - min(b.x0 for b in side) for side in (left, right)]
    prose = all(median(b.x1 - b.x0 for b in side) >= PROSE_WIDTH * h for side in (left, right))
    return prose and gutter < PROSE_GUTTER * min(widths)


def _cut(boxes: list[_Box], h: float) -> list[list[_Box]]:
    across = _bands(boxes, "y0", "y1", BLOCK_GAP * h)
    if len(across) > 1:
        return [leaf for run, _ in across for leaf in _cut(run, h)]
    down = _bands(boxes, "x0", "x1", GUTTER * h)
    if len(down) > 1:
        pieces: list[list[_Box]] = [down[0][0]]
        for (run, _), (_, gutter) in zip(down[1:], down[:-1]):
            if _columns(pieces[-1], run, gutter, h):
                pieces.append(list(run))
            else:
                pieces[-1] = pieces[-1] + run
        if len(pieces) > 1:
            return [leaf for piece in pieces for leaf in _cut(piece, h)]
    return [boxes]


def _rows(block: list[_Box]) -> list[list[int]]:
    rows: list[list[_Box]] = []
    for box in sorted(block, key=lambda b: (b.yc, b.x0)):
        if rows:
            row = rows[-1]
            yc = sum(b.yc for b in row) / len(row)
            height = sum(b.height for b in row) / len(row)
            # A line under another (overlapping it across) starts a row even when close.
            stacked = any(min(b.x1, box.x1) - max(b.x0, box.x0) > 0.5 * min(b.x1 - b.x0, box.x1 - box.x0)
                          for b in row)
            if abs(box.yc - yc) < SAME_ROW * min(height, box.height) and not stacked:
                row.append(box)
                continue
        rows.append([box])
    return [[b.index for b in sorted(row, key=lambda b: b.x0)] for row in rows]


def arrange(quads: Sequence[Sequence[Sequence[float]]]) -> Layout:
    """The reading order of lines given by their quads (4 [x, y] points, clockwise from top-left)."""
    if not quads:
        return Layout([])
    boxes = _boxes(quads)
    h = median(b.height for b in boxes)
    return Layout([_rows(block) for block in _cut(boxes, h)])
