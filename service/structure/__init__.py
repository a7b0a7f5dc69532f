"""A page's structure: the layout model's regions, typed and ordered over the page's OCR lines,
and each table read into cells by the table model.

`StructureModel` is what a worker loads beside its OCR model and what the API, the CLI and the
benchmarks call: `analyse(image, lines)` once per page. The lines are the page's own (OCR, or a
PDF's text layer, which stays exact); the models only decide how they group.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..layout import arrange
from ..ocr.types import Line
from ..settings import StructureSettings
from .regions import Region, build, page_text

__all__ = ["StructureModel", "PageStructure", "Region", "TooManyRegions"]


class TooManyRegions(ValueError):
    """A page whose layout holds more regions or tables than a worker reads within a deadline."""


@dataclass
class PageStructure:
    regions: list[Region]  # in reading order
    tables: list[Any] = field(default_factory=list)  # service.structure.table.Table, in the regions' order

    def to_json(self) -> dict[str, Any]:
        return {"regions": [r.to_json() for r in self.regions], "tables": [t.to_json() for t in self.tables]}

    def text(self, lines: Sequence[Line]) -> str:
        return page_text(self.regions, lines)


def _claim(structure: list[Region], table: Region, cells_lines: set[int], lines: Sequence[Line]) -> list[Region]:
    """The lines the table model put in cells belong to the table region, wherever the layout put
    them; a region left with no line (and no picture) goes."""
    extra = cells_lines - set(table.lines)
    if not extra:
        return structure
    for r in structure:
        if r is not table:
            r.lines = [i for i in r.lines if i not in extra]
    held = sorted(set(table.lines) | extra)
    order = arrange([lines[i].quad for i in held]).block_lines()
    table.lines = [held[j] for block in order for j in block]
    return [r for r in structure if r.lines or r.type in ("table", "figure", "equation")]


class StructureModel:
    """The layout model and the table model of one worker, loaded once."""

    def __init__(self, layout: Any, table: Any, settings: StructureSettings):
        self.layout = layout
        self.table = table
        self.settings = settings

    @classmethod
    def load(cls, settings: StructureSettings, weights_dir: Path, device: torch.device) -> "StructureModel":
        from .layout import LayoutModel
        from .table import TableModel
        return cls(LayoutModel.load(settings, weights_dir, device), TableModel.load(settings, weights_dir, device),
                   settings)

    @property
    def weights_sha256(self) -> dict[str, str]:
        return {**self.layout.weights_sha256, **self.table.weights_sha256}

    def analyse(self, image: np.ndarray, lines: Sequence[Line],
                check: Callable[[str], None] = lambda what: None) -> PageStructure:
        """Regions and tables of one page. image: RGB uint8, the page as its lines were placed
        (OCR'd pixels, or a PDF page rendered at the text layer's dpi). `check(what)` is called
        before each costly step (the request's deadline)."""
        height, width = image.shape[:2]
        detections = self.layout.detect([image])[0]
        tables = sum(d.label == "table" for d in detections)
        if len(detections) > self.settings.max_regions or tables > self.settings.max_tables:
            raise TooManyRegions(
                f"the page holds {len(detections)} layout regions and {tables} tables; a page may hold at most "
                f"{self.settings.max_regions} regions and {self.settings.max_tables} tables")
        regions = build(detections, lines, width, height)
        read = []
        for k, region in enumerate([r for r in regions if r.type == "table"], 1):
            check(f"table {k} of {tables}")
            table = self.table.read(image, region.box, list(lines))
            regions = _claim(regions, region, {i for cell in table.cells for i in cell.lines}, lines)
            read.append(table)
        return PageStructure(regions, read)

    def warmup(self) -> None:
        """One blank page through both models, so that the first request pays no first-call cost."""
        page = np.full((608, 800, 3), 255, np.uint8)
        self.layout.detect([page])
        self.table.read(page, (0.0, 0.0, 800.0, 608.0), [])
