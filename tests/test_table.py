"""Tables (service/structure/table.py): spans and cell text through the real model, the bounds, parity.

The rendered table is drawn here with Pillow; the parity tests read ../shared in place (skipping
when it is absent) and, for cell boxes, run RapidTable 0.3.0 itself where its venv exists.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from service import settings as settings_mod
from service.ocr.model import load_model
from service.settings import ROOT
from service.structure.table import TableModel, layout_cells
from service.web.state import WorkerState
from tests.support import _font, loaded_app

SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "structure-dev-reference"
DEV = SHARED / "structure-dev"
ORIGINAL_PYTHON = ROOT / "build" / "structure-ref-venv" / "bin" / "python"

# A ruled 3x4 table whose header's second cell spans two columns.
HEADER = ["Region", "Sales", "Total"]
ROWS = [["North", "120", "130", "250"], ["South", "90", "80", "170"]]


def render_table(cols: int = 4, cell_w: int = 150, cell_h: int = 56, size: int = 26) -> np.ndarray:
    font = _font(size)
    margin = 30
    img = Image.new("RGB", (margin * 2 + cols * cell_w, margin * 2 + 3 * cell_h), "white")
    draw = ImageDraw.Draw(img)
    spans = [(0, 1), (1, 3), (3, 4)]  # header cells as (first column, column after the last)
    cells = [(0, a, b, text) for (a, b), text in zip(spans, HEADER)]
    cells += [(r + 1, c, c + 1, text) for r, row in enumerate(ROWS) for c, text in enumerate(row)]
    for row, a, b, text in cells:
        x0, y0 = margin + a * cell_w, margin + row * cell_h
        draw.rectangle((x0, y0, margin + b * cell_w, y0 + cell_h), outline="black", width=2)
        draw.text((x0 + 14, y0 + (cell_h - size) // 2), text, fill="black", font=font)
    return np.asarray(img)


@pytest.fixture(scope="module")
def cfg():
    return settings_mod.load()


@pytest.fixture(scope="module")
def models(cfg):
    """The table model in both settings (one network each: loading is cheap)."""
    return {mode: TableModel.load(dataclasses.replace(cfg.structure, table=mode), ROOT / "weights", torch.device("cpu"))
            for mode in ("parse", "rapidtable")}


@pytest.fixture(scope="module")
def rendered(load_family):
    image = render_table()
    return image, load_family("ppocr", 1).parse([image])[0].lines


@pytest.mark.model
@pytest.mark.parametrize("mode", ["parse", "rapidtable"])
def test_rendered_table_has_the_span_and_every_cell(models, rendered, mode):
    image, lines = rendered
    table = models[mode].read(image, None, lines)
    assert not table.truncated
    grid = {(c.row, c.col): c for c in table.cells}
    assert len(table.cells) == 11, [(c.row, c.col, c.text) for c in table.cells]
    span = grid[(0, 1)]
    assert (span.rowspan, span.colspan) == (1, 2)
    assert 'colspan="2"' in table.html
    expected = {(0, 0): "Region", (0, 1): "Sales", (0, 3): "Total"}
    expected |= {(r + 1, c): text for r, row in enumerate(ROWS) for c, text in enumerate(row)}
    assert {k: c.text for k, c in grid.items()} == expected
    for text in expected.values():
        assert f">{text}<" in table.html
    # Cell quads lie in the image, and the JSON carries what the contract names.
    h, w = image.shape[:2]
    assert all(-2 <= x <= w + 2 and -2 <= y <= h + 2 for c in table.cells for x, y in c.quad)
    out = table.to_json()
    assert set(out) == {"quad", "html", "cells", "truncated"}
    assert set(out["cells"][0]) == {"row", "col", "rowspan", "colspan", "quad", "text"}


@pytest.mark.model
def test_words_fill_cells_and_name_their_lines(models, rendered):
    image, lines = rendered
    table = models["parse"].read(image, None, lines)
    for cell in table.cells:
        assert cell.lines and all(cell.text.split()[0] in lines[i].text for i in cell.lines[:1])


@pytest.mark.model
def test_a_table_stands_where_it_was_found(models, rendered):
    # The crop the model reads has a margin around the box; the table's quad is the box itself,
    # as a scorer or a viewer matches it against the page.
    image, lines = rendered
    h, w = image.shape[:2]
    box = (0.1 * w, 0.1 * h, 0.9 * w, 0.9 * h)
    quad = models["parse"].read(image, box, lines).quad
    assert quad == [[box[0], box[1]], [box[2], box[1]], [box[2], box[3]], [box[0], box[3]]]


@pytest.mark.model
def test_the_decoder_stops_after_table_max_steps(cfg, rendered):
    image, lines = rendered
    model = TableModel.load(dataclasses.replace(cfg.structure, table_max_steps=12), ROOT / "weights",
                            torch.device("cpu"))
    st = model.structure([image])[0]
    assert st.truncated and len(st.tokens) <= 12 + 6
    table = model.read(image, None, lines)
    assert table.truncated
    # Only closed rows are kept, and the HTML is still a table.
    assert table.html.startswith("<table>") and table.html.endswith("</table>")
    assert table.html.count("<tr>") == table.html.count("</tr>")
    assert len(table.cells) == len(re.findall("<td", table.html))


@pytest.mark.model
def test_a_table_of_thousands_of_cells_is_cut_to_whole_rows(cfg):
    """60 x 40 numbers: the decoder's bound ends it, the cell bound keeps whole rows, in bounded time."""
    rows, cols = 60, 40
    img = Image.new("RGB", (cols * 40 + 20, rows * 18 + 20), "white")
    draw = ImageDraw.Draw(img)
    font = _font(11)
    for r in range(rows + 1):
        draw.line((10, 10 + r * 18, 10 + cols * 40, 10 + r * 18), fill="black")
    for c in range(cols + 1):
        draw.line((10 + c * 40, 10, 10 + c * 40, 10 + rows * 18), fill="black")
    for r in range(rows):
        for c in range(cols):
            draw.text((14 + c * 40, 12 + r * 18), str(r * cols + c), fill="black", font=font)
    image = np.asarray(img)
    model = TableModel.load(dataclasses.replace(cfg.structure, max_table_cells=60), ROOT / "weights",
                            torch.device("cpu"))
    table = model.read(image, None, [])
    assert table.truncated
    assert 0 < len(table.cells) <= 60
    assert table.html.count("<tr>") == table.html.count("</tr>")
    # Whole rows: every kept row has as many cells as the first.
    per_row = {}
    for cell in table.cells:
        per_row[cell.row] = per_row.get(cell.row, 0) + 1
    assert len(set(per_row.values())) == 1


@pytest.mark.unit
def test_layout_cells_places_spans_like_rapidtable():
    tokens = ["<html>", "<body>", "<table>", "<thead>", "<tr>", "<td", ' rowspan="2"', ">", "</td>",
              "<td", ' colspan="2"', ">", "</td>", "</tr>", "</thead>", "<tbody>", "<tr>", "<td></td>",
              "<td></td>", "</tr>", "</tbody>", "</table>", "</body>", "</html>"]
    kept, slots, cut = layout_cells(tokens, 100, truncated=False)
    assert kept == tokens and not cut
    assert [(s.row, s.col, s.rowspan, s.colspan) for s in slots] == [(0, 0, 2, 1), (0, 1, 1, 2), (1, 1, 1, 1),
                                                                     (1, 2, 1, 1)]
    kept, slots, cut = layout_cells(tokens, 3, truncated=False)
    assert cut and len(slots) == 2 and kept[-4:] == ["</thead>", "</table>", "</body>", "</html>"]


# ------------------------------------------------------------------ parity with RapidTable 0.3.0


def _crops() -> list[Path]:
    if not (DEV.is_dir() and REFERENCE.is_dir()):
        pytest.skip(f"the structure dev set or its reference is absent ({DEV}, {REFERENCE}): never copied here")
    out = []
    for gt in sorted(DEV.glob("*.json")):
        if json.loads(gt.read_text()).get("subset") == "pubtabnet":
            out.append(next(p for p in (gt.with_suffix(".png"), gt.with_suffix(".jpg")) if p.exists()))
    return out


def _structure_only(html: str) -> list[str]:
    """The tags of RapidTable's HTML: its structure tokens without the cell text."""
    return re.findall(r"<[^>]+>", re.sub(r"<td([^>]*)>.*?</td>", r"<td\1></td>", html))


@pytest.mark.model
def test_structure_is_rapidtables_on_every_dev_crop(models):
    """Every PubTabNet crop: the same structure as RapidTable 0.3.0's stored HTML (gtbox/)."""
    model = models["rapidtable"]
    crops = _crops()
    images = [np.ascontiguousarray(cv2.imread(str(p))[:, :, ::-1]) for p in crops]
    for path, st in zip(crops, model.structure(images)):
        ref = json.loads((REFERENCE / "gtbox" / f"{path.stem}.json").read_text())["images"][0]["tables"][0]["html"]
        ours = "".join(t for t in st.tokens[2:-2] if t not in ("<thead>", "</thead>", "<tbody>", "</tbody>"))
        assert _structure_only(ours) == _structure_only(ref), path.stem


@pytest.mark.model
def test_html_and_cell_boxes_are_rapidtables(models):
    """A few crops end to end: RapidOCR's lines (pipeline "rapidocr") + table "rapidtable" give RapidTable's
    stored HTML character for character; the cell boxes agree with RapidTable run now within 1 px."""
    crops = _crops()[:4]
    ocr = load_model(dataclasses.replace(settings_mod.load().model, pipeline="rapidocr"), "cpu", 1)
    model = models["rapidtable"]
    requests = []
    for path in crops:
        bgr = cv2.imread(str(path))
        image = np.ascontiguousarray(bgr[:, :, ::-1])
        lines = ocr.parse([image])[0].lines
        table = model.read(image, None, lines)
        ref = json.loads((REFERENCE / "gtbox" / f"{path.stem}.json").read_text())["images"][0]["tables"][0]["html"]
        assert table.html == ref, path.stem
        requests.append({"image": str(path), "lines": [[l.quad, l.text, l.confidence] for l in lines]})
    if not ORIGINAL_PYTHON.exists():
        pytest.skip(f"RapidTable's own venv is absent ({ORIGINAL_PYTHON}: `make bench-table` makes it), "
                    "so cell boxes were not compared")
    answers = json.loads(subprocess.run([str(ORIGINAL_PYTHON), str(ROOT / "tests" / "rapidtable_reference.py")],
                                        input=json.dumps(requests), capture_output=True, text=True,
                                        check=True).stdout)
    images = [np.ascontiguousarray(cv2.imread(str(p))[:, :, ::-1]) for p in crops]
    for path, st, ref in zip(crops, model.structure(images), answers):
        assert st.tokens == ref["tokens"], path.stem
        assert np.abs(st.boxes - np.asarray(ref["boxes"])).max() <= 1.0, path.stem


# ------------------------------------------------------------------ ?mode=table through the API


def table_pdf() -> bytes:
    """The same table as a born-digital PDF page (reportlab): ruled cells, text in a text layer."""
    import io

    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    x0, cw, ch = 20, 110, 32
    pdf = canvas.Canvas(buf, pagesize=(2 * x0 + 4 * cw, 2 * x0 + 3 * ch))  # the page is the table
    top = x0 + 3 * ch
    spans = [(0, 1), (1, 3), (3, 4)]
    cells = [(0, a, b, text) for (a, b), text in zip(spans, HEADER)]
    cells += [(r + 1, c, c + 1, text) for r, row in enumerate(ROWS) for c, text in enumerate(row)]
    pdf.setFont("Helvetica", 14)
    for row, a, b, text in cells:
        pdf.rect(x0 + a * cw, top - (row + 1) * ch, (b - a) * cw, ch)
        pdf.drawString(x0 + a * cw + 10, top - (row + 1) * ch + 11, text)
    pdf.save()
    return buf.getvalue()


@pytest.fixture(scope="module")
def client(cfg):
    app = loaded_app(cfg)
    state = app.extensions[WorkerState.KEY]
    assert state.structure is not None, state.structure_error  # loaded beside the OCR model
    return app.test_client()


def _expected_cells() -> dict[tuple[int, int], str]:
    out = {(0, 0): "Region", (0, 1): "Sales", (0, 3): "Total"}
    return out | {(r + 1, c): text for r, row in enumerate(ROWS) for c, text in enumerate(row)}


@pytest.mark.model
@pytest.mark.parametrize("kind", ["png", "pdf"])
def test_mode_table_answers_the_cells(client, kind):
    from tests.support import png

    body, ctype = (png(render_table()), "image/png") if kind == "png" else (table_pdf(), "application/pdf")
    reply = client.post("/v1/parse?mode=table", data=body, content_type=ctype)
    assert reply.status_code == 200, reply.get_data(as_text=True)[:300]
    page = reply.get_json()["images"][0]
    (table,) = page["tables"]
    assert {(c["row"], c["col"]): c["text"] for c in table["cells"]} == _expected_cells()
    assert [(c["rowspan"], c["colspan"]) for c in table["cells"] if (c["row"], c["col"]) == (0, 1)] == [(1, 2)]
    assert 'colspan="2"' in table["html"] and not table["truncated"]
    assert [r["type"] for r in page["regions"]] == ["table"]
    assert "table" in reply.get_json()["timing_ms"]
    # Markdown writes the table as HTML, since a cell spans.
    md = client.post("/v1/parse?mode=table&format=markdown", data=body, content_type=ctype)
    assert md.status_code == 200 and 'colspan="2"' in md.get_data(as_text=True)


@pytest.mark.unit
def test_an_unknown_mode_names_table(tmp_path):
    from tests.support import make_client, parse

    reply = parse(make_client(tmp_path, keys=False), query_string={"mode": "tables"})
    assert reply.status_code == 400 and "mode=table" in reply.get_json()["error"]["message"]


@pytest.mark.model
def test_crops_decoded_together_read_as_alone(models):
    """Batched decode: each crop leaves the batch at its own end token, with the tokens it has alone."""
    crops = [render_table(), render_table(cell_w=110, size=20), render_table(cell_w=180, cell_h=70, size=30)]
    model = models["parse"]
    together = model.structure(crops)
    for crop, st in zip(crops, together):
        (alone,) = model.structure([crop])
        assert st.tokens == alone.tokens
        assert np.abs(st.boxes - alone.boxes).max() <= 0.01


@pytest.mark.model
@pytest.mark.parametrize("box", [(5000.0, 5000.0, 6000.0, 6000.0), (10.0, 10.0, 10.0, 10.0), (-50.0, -50.0, 3.0, 3.0)])
def test_odd_table_boxes_give_a_table(models, box):
    """A box off the page, empty or at its corner still reads (as a tiny crop), never raises."""
    image = render_table()
    table = models["parse"].read(image, box, [])
    assert table.html.startswith("<table>") and table.html.endswith("</table>")
