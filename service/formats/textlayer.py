"""One page's invisible text, as the content-stream operators that draw it over the page.

Words are written in the reading order the JSON gives (blocks, rows, lines, words), in render
mode 3 (neither filled nor stroked). Each word is set at its box's height, turned to its box's
angle and scaled across (Tz) to its box's width, so a viewer's selection highlights the word where
it is printed. Between two words of a row a space is drawn, stretched over the gap between them:
extraction then has a real space there rather than guessing one from the gap, and "1 x 2.20"
stays three words however close they are printed.

Coordinates come in as page pixels; `to_page` maps a pixel to the PDF user space the operators
are written in (service/formats/pdf.py builds it from the page's box, rotation and dpi).
"""

from __future__ import annotations

import math
from typing import Callable

from . import glyphless
from .document import DocPage

Point = tuple[float, float]
ToPage = Callable[[float, float], Point]
# Shares of the word's height: the extent a reader gives a character below its baseline, and the
# narrowest a space is drawn where two words' boxes touch or overlap.
DESCENT = -glyphless.DESCENT / glyphless.UNITS_PER_EM
MIN_SPACE = 0.05
ADVANCE = glyphless.ADVANCE / glyphless.UNITS_PER_EM


class _Word:
    """A word's baseline in user space: origin, unit direction, run length and font size."""

    def __init__(self, text: str, quad: list[list[float]], to_page: ToPage):
        tl, _, br, bl = (to_page(x, y) for x, y in quad)
        self.text = text
        run = math.hypot(br[0] - bl[0], br[1] - bl[1])
        self.size = math.hypot(tl[0] - bl[0], tl[1] - bl[1])
        self.dir = ((br[0] - bl[0]) / run, (br[1] - bl[1]) / run) if run > 0 else (1.0, 0.0)
        self.run = run
        # The baseline sits the descent above the box's bottom edge, across the text's direction.
        lift = DESCENT * self.size
        self.origin = (bl[0] - self.dir[1] * lift, bl[1] + self.dir[0] * lift)

    @property
    def end(self) -> Point:
        return self.origin[0] + self.dir[0] * self.run, self.origin[1] + self.dir[1] * self.run

    def usable(self) -> bool:
        return self.run > 0 and self.size > 0 and bool(self.text)


def _num(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".") or "0"


def _show(text: str, origin: Point, direction: Point, size: float, width: float, font: str,
          codes: glyphless.Codes) -> str:
    """Operators that set `text` from `origin` along `direction`, `size` high and `width` long."""
    cos, sin = direction
    scale = 100 * width / (len(text) * ADVANCE * size)
    matrix = " ".join(_num(v) for v in (cos, sin, -sin, cos, *origin))
    return f"/{font} {_num(size)} Tf {_num(scale)} Tz {matrix} Tm <{codes.encode(text).hex()}> Tj\n"


def operators(page: DocPage, to_page: ToPage, font: str, codes: glyphless.Codes) -> bytes:
    """The page's text layer (BT ... ET in its own q ... Q), font resource name `font`."""
    out = ["q\nBT\n3 Tr\n"]
    for block in page.rows():
        for row in block:
            words = [_Word(w.text, w.quad, to_page) for line in row for w in line.words]
            words = [w for w in words if w.usable()]
            for word, following in zip(words, [*words[1:], None]):
                out.append(_show(word.text, word.origin, word.dir, word.size, word.run, font, codes))
                if following is not None:
                    # The gap, measured along this word's baseline up to the next word's start.
                    gap = ((following.origin[0] - word.end[0]) * word.dir[0]
                           + (following.origin[1] - word.end[1]) * word.dir[1])
                    out.append(_show(" ", word.end, word.dir, word.size, max(gap, MIN_SPACE * word.size), font, codes))
    out.append("ET\nQ\n")
    return "".join(out).encode("ascii")
