"""The one shape every output format reads: pages of lines and words with boxes, and their layout.

It is built either from the model's Page objects or from the JSON entries a response (or a stored
job result) carries, so that a format renders the same whichever it is given, and pages from a
multi-page upload simply follow one another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, Union

from ..layout import Layout, arrange
from ..ocr.types import Page

PageLike = Union[Page, Mapping[str, Any]]


@dataclass
class Word:
    text: str
    confidence: float
    quad: list[list[float]]

    @property
    def box(self) -> tuple[int, int, int, int]:
        return bbox(self.quad)


@dataclass
class Line:
    text: str
    confidence: float
    quad: list[list[float]]
    words: list[Word]


@dataclass
class Block:
    """A run of lines every format writes as one unit: a structure region (?structure=1), else one
    of service/layout's blocks (type "text")."""

    type: str
    box: tuple[int, int, int, int]
    rows: list[list[Line]]
    level: int | None = None
    table: dict[str, Any] | None = None  # the table's JSON ({quad, html, cells}) for a table region
    region: int | None = None  # its index in the page's regions


@dataclass
class DocPage:
    width: int
    height: int
    lines: list[Line]
    layout: Layout
    dpi: float | None  # from the upload (a PDF's or TIFF's resolution) when it has one
    # Where the page came from: the upload's index in the request, its 1-based page (a PDF's page,
    # a TIFF's frame), and "ocr" or "text-layer"; a model's Page is the first page of one image.
    file: int = 0
    number: int = 1
    source: str = "ocr"
    regions: list[dict[str, Any]] = field(default_factory=list)  # the JSON's regions, in reading order
    tables: list[dict[str, Any]] = field(default_factory=list)

    def rows(self) -> list[list[list[Line]]]:
        """Blocks of rows of lines, in reading order."""
        return [[[self.lines[i] for i in row] for row in block] for block in self.layout.blocks]

    def blocks(self) -> list[Block]:
        """The page's units in reading order: its regions when structure ran (each table region with
        its table, matched in order), else its layout blocks."""
        if not self.regions:
            return [Block("text", union([bbox(l.quad) for row in rows for l in row]), rows)
                    for rows in self.rows()]
        tables = iter(self.tables)
        out, seen = [], set()
        for k, region in enumerate(self.regions):
            indices = [i for i in region.get("lines", ()) if 0 <= i < len(self.lines)]
            seen.update(indices)
            rows = _rows(self.lines, indices)
            table = next(tables, None) if region["type"] == "table" else None
            out.append(Block(region["type"], bbox(region["quad"]), rows, region.get("level"), table, k))
        rest = [i for i in range(len(self.lines)) if i not in seen and self.lines[i].words]
        if rest:  # every word reaches every format, even one no region holds
            rows = _rows(self.lines, rest)
            out.append(Block("text", union([bbox(self.lines[i].quad) for i in rest]), rows))
        return out


def _rows(lines: Sequence[Line], indices: Sequence[int]) -> list[list[Line]]:
    """Some of a page's lines as rows in reading order (one region read as rows)."""
    if not indices:
        return []
    layout = arrange([lines[i].quad for i in indices])
    return [[lines[indices[j]] for j in row] for block in layout.blocks for row in block]


def bbox(quad: Sequence[Sequence[float]]) -> tuple[int, int, int, int]:
    """The quad's axis-aligned box as whole pixels (x0, y0, x1, y1), the outside rounded outward."""
    xs, ys = [p[0] for p in quad], [p[1] for p in quad]
    return int(min(xs)), int(min(ys)), int(-(-max(xs) // 1)), int(-(-max(ys) // 1))


def union(boxes: Sequence[tuple[int, int, int, int]]) -> tuple[int, int, int, int]:
    return min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)


def spread(text: str, confidence: float, quad: Sequence[Sequence[float]]) -> list[Word]:
    """Words for a line that carries none (a JSON entry made without ?words=1): its tokens share
    the quad in proportion to their characters, so every format still has a box for each."""
    tokens = text.split()
    total = sum(len(t) for t in tokens) + max(0, len(tokens) - 1)
    (tl, tr, br, bl), out, at = quad, [], 0
    for token in tokens:
        u0, u1 = at / total, (at + len(token)) / total
        at += len(token) + 1
        lerp = lambda a, b, u: [a[0] + (b[0] - a[0]) * u, a[1] + (b[1] - a[1]) * u]
        out.append(Word(token, confidence, [lerp(tl, tr, u0), lerp(tl, tr, u1), lerp(bl, br, u1), lerp(bl, br, u0)]))
    return out


def _line(text: str, confidence: float, quad: Any, words: Sequence[Any] | None, get) -> Line:
    quad = [[float(x), float(y)] for x, y in quad]
    placed = [Word(get(w, "text"), float(get(w, "confidence")), [[float(x), float(y)] for x, y in get(w, "quad")])
              for w in words or []]
    return Line(text, float(confidence), quad, placed or spread(text, confidence, quad))


def page(p: PageLike) -> DocPage:
    """A Page object or a JSON image entry ({width, height, lines: [{text, confidence, quad, words?}]})."""
    if isinstance(p, Page):
        get = getattr
        lines = [_line(l.text, l.confidence, l.quad, l.words, get) for l in p.lines]
        width, height, dpi = p.width, p.height, getattr(p, "dpi", None)
        origin: tuple[int, int, str] = (0, 1, "ocr")
        structure: tuple[list, list] = ([], [])
    else:
        get = lambda obj, key: obj[key]
        lines = [_line(l["text"], l.get("confidence", 1.0), l["quad"], l.get("words"), get) for l in p["lines"]]
        width, height, dpi = int(p["width"]), int(p["height"]), p.get("dpi")
        origin = (int(p.get("file", 0)), int(p.get("page", 1)), str(p.get("source", "ocr")))
        structure = (list(p.get("regions") or ()), list(p.get("tables") or ()))
    return DocPage(width, height, lines, arrange([l.quad for l in lines]), float(dpi) if dpi else None,
                   *origin, *structure)
