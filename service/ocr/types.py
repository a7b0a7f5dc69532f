"""The values every family returns: lines with their quads, pages, and the model's identity.

They live apart from the loader (model.py) so that the families can import them while the
loader imports the families: the dependency runs one way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..layout import Layout, arrange

# 4 [x, y] points, clockwise from top-left, in the original image's pixels, as floats.
Quad = list[list[float]]


def as_quad(points) -> Quad:
    """Any 4x2 sequence (list, numpy array) as the plain-float Quad the JSON carries."""
    return [[float(x), float(y)] for x, y in points]


# Quads in JSON are rounded to 0.1 px, every one alike (lines and words, from a model or a PDF's
# text layer): a detector's box is good to about a pixel, and more digits are only noise.
QUAD_DECIMALS = 1


def json_quad(quad: Quad) -> Quad:
    return [[round(float(x), QUAD_DECIMALS), round(float(y), QUAD_DECIMALS)] for x, y in quad]


@dataclass
class Word:
    """One whitespace-separated run of a line's text, placed where the recognizer read it."""

    text: str
    confidence: float
    quad: Quad

    def to_json(self) -> dict:
        return {"text": self.text, "confidence": round(float(self.confidence), 6), "quad": json_quad(self.quad)}


@dataclass
class Line:
    text: str
    confidence: float
    quad: Quad
    # Filled by both families on every read (the cost is a few array lookups); the JSON carries
    # them only when the client asks (?words=1), so the default response stays as it was.
    words: list[Word] = field(default_factory=list)

    def to_json(self, words: bool = False) -> dict:
        out = {"text": self.text, "confidence": round(float(self.confidence), 6), "quad": json_quad(self.quad)}
        if words:
            out["words"] = [word.to_json() for word in self.words]
        return out


@dataclass
class Page:
    """One image's result: lines in the order the family found them, seconds spent per stage, and
    the rotation that was applied before reading (degrees counter-clockwise: 0, 90, 180 or 270; a
    page scanned turned 90 degrees clockwise reports 90). Quads are in the image's own pixels
    whatever the angle."""

    width: int
    height: int
    lines: list[Line]
    timing: dict[str, float] = field(default_factory=dict)
    angle: int = 0
    batch_pages: int = 1  # pages read in the same model call (service/ocr/batching.py)

    def layout(self) -> Layout:
        """Rows and blocks in reading order, from the quads (service/layout)."""
        return arrange([line.quad for line in self.lines])

    @property
    def text(self) -> str:
        """The lines in reading order: a row's parts on one line, blocks apart by a blank line."""
        return self.layout().text([line.text for line in self.lines])


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    weights_sha256: dict[str, str]
