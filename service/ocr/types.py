"""The values every family returns: lines with their quads, pages, and the model's identity.

They live apart from the loader (model.py) so that the families can import them while the
loader imports the families: the dependency runs one way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# 4 [x, y] points, clockwise from top-left, in the original image's pixels, as floats.
Quad = list[list[float]]


def as_quad(points) -> Quad:
    """Any 4x2 sequence (list, numpy array) as the plain-float Quad the JSON carries."""
    return [[float(x), float(y)] for x, y in points]


@dataclass
class Line:
    text: str
    confidence: float
    quad: Quad

    def to_json(self) -> dict:
        return {"text": self.text, "confidence": round(float(self.confidence), 6), "quad": as_quad(self.quad)}


@dataclass
class Page:
    """One image's result: lines in reading order, seconds spent per stage, and the rotation that
    was applied before reading (degrees counter-clockwise: 0, 90, 180 or 270; a page scanned
    turned 90 degrees clockwise reports 90). Quads are in the image's own pixels whatever the angle."""

    width: int
    height: int
    lines: list[Line]
    timing: dict[str, float] = field(default_factory=dict)
    angle: int = 0

    @property
    def text(self) -> str:
        return "\n".join(line.text for line in self.lines)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    weights_sha256: dict[str, str]
