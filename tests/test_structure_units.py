"""Regions, reading order and the Markdown, hOCR and ALTO written from them, without the models.

The lines are the report page's own text layer (tests/structure_page.py, written by reportlab);
the detections stand where the layout model would put its boxes, so that each rule (text built
from lines the detector missed, captions, page numbers, lists, heading levels) is tested alone.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import pytest

from service import formats
from service.documents.pdf import PdfFile
from service.ocr.types import Line, Page
from service.structure import PageStructure
from service.structure.regions import build
from tests import structure_page as report
from tests.formats_check import check_alto, check_hocr

pytestmark = pytest.mark.unit

SCALE = report.DPI / 72


@dataclass(frozen=True)
class Det:
    label: str
    box: tuple[float, float, float, float]
    score: float


def pt(x0, y0, x1, y1) -> tuple[float, float, float, float]:
    return x0 * SCALE, y0 * SCALE, x1 * SCALE, y1 * SCALE


@pytest.fixture(scope="module")
def lines() -> list[Line]:
    doc = PdfFile(report.pdf())
    try:
        return doc.text_lines(0, report.DPI)
    finally:
        doc.close()


# What the CDLA model finds on such a page: the title, the table and the figure; no paragraph.
DETECTIONS = [Det("title", pt(70, 72, 400, 102), 0.9), Det("table", pt(72, 330, 540, 460), 0.95),
              Det("figure", pt(150, 480, 462, 640), 0.8)]


def entry(lines: list[Line], regions, tables=()) -> dict:
    page = Page(1275, 1650, lines)
    out = formats.image_json(page, words=True)
    out |= PageStructure(regions, list(tables)).to_json() | {"text": PageStructure(regions).text(lines)}
    return out


class FakeTable:
    """A table model's answer, as its JSON (the table model is tested on its own)."""

    def __init__(self, json_: dict):
        self.json = json_

    def to_json(self) -> dict:
        return self.json


def spanned_table(lines: list[Line]) -> FakeTable:
    cells = [{"row": 0, "col": 0, "rowspan": 1, "colspan": 1, "text": "Site"},
             {"row": 0, "col": 1, "rowspan": 1, "colspan": 2, "text": "Measured"}]
    cells += [{"row": r, "col": c, "rowspan": 1, "colspan": 1, "text": t}
              for r, row in enumerate(report.ROWS, 1) for c, t in enumerate(row)]
    html = "<table><tr><td>Site</td><td colspan=\"2\">Measured</td></tr>" + "".join(
        "<tr>" + "".join(f"<td>{t}</td>" for t in row) + "</tr>" for row in report.ROWS) + "</table>"
    quad = [[150.0, 688.0], [1125.0, 688.0], [1125.0, 958.0], [150.0, 958.0]]
    return FakeTable({"quad": quad, "html": html, "cells": [c | {"quad": quad} for c in cells]})


def test_regions_of_the_report_page(lines):
    regions = build(DETECTIONS, lines, 1275, 1650)
    types = [r.type for r in regions]
    assert types == ["title", "text", "text", "table", "figure", "caption", "footer"], types
    held = [i for r in regions for i in r.lines]
    assert len(held) == len(set(held)) == len(lines)  # every line in exactly one region here
    texts = {r.type: [lines[i].text for i in r.lines] for r in regions}
    assert texts["title"] == [report.TITLE] and regions[0].level == 1
    assert texts["caption"] == [report.CAPTION] and texts["footer"] == [report.PAGE_NUMBER]
    # Regions are snapped to their lines: the title's box is its line's, not the detector's.
    title_line = lines[regions[0].lines[0]].quad
    assert regions[0].box == (title_line[0][0], title_line[0][1], title_line[2][0], title_line[2][1])


def test_duplicate_detections_are_one_region(lines):
    box = pt(72, 140, 540, 190)
    regions = build([Det("text", box, 0.6), Det("reference", box, 0.9)], lines, 1275, 1650)
    assert [r.type for r in regions].count("reference") == 1
    assert "text" not in [r.type for r in regions if r.score == 0.6]


def _line(text: str, x: float, y: float, h: float = 20.0) -> Line:
    w = 11.0 * len(text) * h / 20
    return Line(text, 0.99, [[x, y], [x + w, y], [x + w, y + h], [x, y + h]])


def test_lists_and_heading_levels_from_lines_alone():
    lines = [_line("1 Introduction", 100, 100, 34), _line("The method reads pages and finds their parts.", 100, 160),
             _line("1.1 Scope", 100, 220, 26), _line("It covers three kinds of document:", 100, 270),
             _line("\u2022 letters and invoices", 120, 300), _line("\u2022 scientific papers", 120, 330),
             _line("\u2022 newspapers", 120, 360), _line("2 Results", 100, 430, 34),
             _line("Every page was read.", 100, 490)]
    regions = build([], lines, 1000, 1400)
    got = [(r.type, r.level, [lines[i].text for i in r.lines][0]) for r in regions]
    assert got == [("heading", 1, "1 Introduction"), ("text", None, lines[1].text), ("heading", 2, "1.1 Scope"),
                   ("text", None, lines[3].text), ("list", None, lines[4].text), ("heading", 1, "2 Results"),
                   ("text", None, lines[8].text)], got


def test_levels_come_from_numbering_not_type_size():
    # A bold run-in heading at the body's size and a larger one are both the page's top level; "3.3.2"
    # alone on a page is its top level too, and "3.3.3" under "3.3" one deeper.
    body = "The method reads pages and finds their parts."
    lines = [_line("Overview", 100, 100, 34), _line(body, 100, 160), _line(body, 100, 190),
             _line("Findings", 100, 250, 26), _line(body, 100, 300), _line(body, 100, 330),
             _line("Results", 100, 390, 34), _line(body, 100, 450), _line(body, 100, 480)]
    assert [(r.type, r.level) for r in build([], lines, 1000, 1400) if r.level] == [("heading", 1)] * 3
    lines = [_line("3.3 Plant height", 100, 100, 26), _line(body, 100, 150), _line(body, 100, 180),
             _line("3.3.1 Flowers", 100, 240, 26), _line(body, 100, 290), _line(body, 100, 320)]
    assert [r.level for r in build([], lines, 1000, 1400) if r.level] == [1, 2]
    prose = "这一段是正文，写得很长，一直写到这一行的末尾为止。"
    lines = [_line("一、积累与运用", 100, 100, 26), _line(prose, 100, 150), _line(prose, 100, 180),
             _line("（一）字词", 100, 240, 26), _line(prose, 100, 290), _line(prose, 100, 320)]
    assert [(r.type, r.level) for r in build([], lines, 1000, 1400) if r.level] == [("heading", 1), ("heading", 2)]


def test_formulas_outlines_and_numbers_in_text():
    lines = [_line("Using the fundamental Poisson brackets of the fields we find", 100, 100),
             _line("[U(x), P(y)] = d(x - y),", 160, 130),
             _line("etc., and hence the constraints must vanish.", 100, 160),
             _line("1. Weather and its effects", 100, 260), _line("(1) Meaning: the state of the air", 120, 290),
             _line("(2) Traits: short and changeable", 120, 320),
             _line("Net profit rose by", 100, 420), _line("20.8% in the half year, as the loans grew", 100, 450),
             _line("-5% on the year before, and 2.8 points", 100, 480)]
    regions = build([], lines, 1000, 1400)
    got = [(r.type, lines[r.lines[0]].text) for r in regions]
    assert ("equation", "[U(x), P(y)] = d(x - y),") in got, got
    assert ("heading", "1. Weather and its effects") in got, got
    assert ("list", "(1) Meaning: the state of the air") in got, got
    assert ("text", "Net profit rose by") in got and "list" not in [t for t, text in got if "%" in text], got


def test_columns_are_read_one_after_the_other():
    left = [_line(f"left column line {k} of running text here", 100, 100 + 30 * k) for k in range(6)]
    right = [_line(f"right column line {k} of running text here", 600, 100 + 30 * k) for k in range(6)]
    lines = [l for pair in zip(left, right) for l in pair]  # found row by row, across the gutter
    regions = build([], lines, 1100, 1400)
    order = [lines[i].text for r in regions for i in r.lines]
    assert order == [l.text for l in left] + [l.text for l in right]


def test_markdown_of_the_report_page(lines):
    regions = build(DETECTIONS, lines, 1275, 1650)
    page = entry(lines, regions, [spanned_table(lines)])
    md, media = formats.render([page], "markdown")
    md = md.decode()
    assert media.startswith("text/markdown")
    assert f"\n# {report.TITLE}\n" in md
    assert report.paragraph_text(0) in md and report.paragraph_text(1) in md
    assert '<td colspan="2">Measured</td>' in md and all(t in md for row in report.ROWS for t in row)
    assert f"*{report.CAPTION}*" in md and "![figure 1-1]" in md
    # The figure comes before its caption, the table before the figure; the page number is left out.
    assert md.index("<table>") < md.index("![figure") < md.index(report.CAPTION)
    assert not any(line.strip() == report.PAGE_NUMBER for line in md.splitlines())


def test_markdown_pipe_table_without_spans_and_pages_apart(lines):
    cells = [{"row": r, "col": c, "rowspan": 1, "colspan": 1, "text": t, "quad": [[0, 0]] * 4}
             for r, row in enumerate((("a", "b|c"), ("1", "2"))) for c, t in enumerate(row)]
    regions = build([Det("table", pt(72, 330, 540, 460), 0.95)], lines, 1275, 1650)
    page = entry(lines, regions, [FakeTable({"quad": [[0, 0]] * 4, "html": "<table></table>", "cells": cells})])
    md = formats.render([page, page], "markdown")[0].decode()
    assert "| a | b\\|c |\n| --- | --- |\n| 1 | 2 |" in md
    assert md.count("<!-- page") == 2 and "<!-- page 2 -->" in md


def test_markdown_reflows_hyphens_and_cjk():
    from service.formats.markdown import reflow
    assert reflow(["a steady improve-", "ment since"]) == "a steady improvement since"
    assert reflow(["well-", "Known"]) == "well- Known"
    assert reflow(["文档的结构", "和表格"]) == "文档的结构和表格"


def test_plain_pages_still_write_markdown(lines):
    page = formats.image_json(Page(1275, 1650, lines), words=True)
    md = formats.render([page], "markdown")[0].decode()
    assert report.TITLE in md and "7\n" in md  # no structure: nothing is known to be a page number


def test_hocr_and_alto_carry_regions_and_tables(lines):
    regions = build(DETECTIONS, lines, 1275, 1650)
    page = entry(lines, regions, [spanned_table(lines)])
    images = [json.loads(json.dumps(page))]
    hocr = formats.render(images, "hocr")[0]
    check_hocr(hocr, images)
    root = ET.fromstring(hocr)
    classes = {e.get("class") for e in root.iter()}
    assert {"ocr_title", "ocr_table", "ocr_image", "ocr_caption", "ocr_footer", "ocr_par"} <= classes, classes
    x = "{http://www.w3.org/1999/xhtml}"
    cells = root.findall(f".//{x}table//{x}td")
    assert any(td.get("colspan") == "2" for td in cells) and len(cells) == 11
    alto = formats.render(images, "alto")[0]
    check_alto(alto, images)
    a = "{http://www.loc.gov/standards/alto/ns-v4#}"
    root = ET.fromstring(alto)
    labels = {t.get("ID"): t.get("LABEL") for t in root.iter(f"{a}LayoutTag")}
    assert {"title", "table", "caption", "footer", "figure"} <= set(labels.values())
    composed = root.findall(f".//{a}ComposedBlock")
    assert [c.get("TYPE") for c in composed] == ["table"]
    assert len(root.findall(f".//{a}Illustration")) == 1


def test_job_pages_read_their_structure_for_markdown():
    from service.jobs.plan import page_query
    assert page_query("format=markdown&dpi=150") == "dpi=150&structure=1&words=1"
    assert page_query("format=markdown&structure=1") == "structure=1&words=1"
    assert page_query("format=hocr") == "words=1"
