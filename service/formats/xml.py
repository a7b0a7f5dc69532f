"""hOCR 1.2 (XHTML) and ALTO v4 (XML): the two standard OCR layouts, built with ElementTree so
every text is escaped, one element per block, row (line of text) and word, each with its box.

With structure, a block is a region and carries its type: an hOCR class (ocr_title, ocr_table
with an XHTML table of its cells, ocr_caption, ocr_header ...) or an ALTO LayoutTag (TAGREFS), a
table as a ComposedBlock of one TextBlock per cell and a figure as an Illustration."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from .document import Block, DocPage, Word, bbox, union

XHTML = "http://www.w3.org/1999/xhtml"
ALTO = "http://www.loc.gov/standards/alto/ns-v4#"
ALTO_SCHEMA = "http://www.loc.gov/standards/alto/v4/alto-4-4.xsd"
SOFTWARE = "parse"

# XML 1.0 cannot carry most control characters: a recognizer never means them, so they go.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _clean(text: str) -> str:
    return _NOT_XML.sub("", text)


def _serialise(root: ET.Element, doctype: str = "") -> bytes:
    ET.indent(root)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + doctype.encode() + ET.tostring(root, encoding="utf-8",
                                                                                   xml_declaration=False) + b"\n"


# hOCR classes of region types (hOCR 1.2: typesetting and float elements).
HOCR_CLASS = {"title": "ocr_title", "caption": "ocr_caption", "header": "ocr_header", "footer": "ocr_footer",
              "table": "ocr_table", "figure": "ocr_image", "equation": "ocr_display"}
HOCR_HEADING = {1: "ocr_chapter", 2: "ocr_section", 3: "ocr_subsection"}
HOCR_CAPABILITIES = ("ocr_page ocr_carea ocr_par ocr_line ocrx_word ocr_title ocr_chapter ocr_section "
                     "ocr_subsection ocr_subsubsection ocr_caption ocr_header ocr_footer ocr_table ocr_image "
                     "ocr_display")


def _hocr_class(block: Block) -> str:
    if block.type == "heading":
        return HOCR_HEADING.get(block.level or 2, "ocr_subsubsection")
    return HOCR_CLASS.get(block.type, "ocr_carea")


def cell_rows(block: Block) -> tuple[list[tuple[dict, list[list[Word]]]], list[list[Word]]]:
    """A table block's words by cell (a word goes to the cell holding its centre), as rows of
    words per cell, and the rows of the words no cell holds. A text layer's line may cross cells."""
    cells = list((block.table or {}).get("cells") or ())
    boxes = [bbox(c["quad"]) for c in cells]
    held: list[list[list[Word]]] = [[] for _ in cells]
    rest: list[list[Word]] = []
    for row in block.rows:
        per_cell: dict[int, list[Word]] = {}
        loose: list[Word] = []
        for word in (w for line in row for w in line.words):
            x0, y0, x1, y1 = word.box
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            k = next((k for k, b in enumerate(boxes) if b[0] <= cx <= b[2] and b[1] <= cy <= b[3]), None)
            (loose if k is None else per_cell.setdefault(k, [])).append(word)
        for k, words in per_cell.items():
            held[k].append(words)
        if loose:
            rest.append(loose)
    return list(zip(cells, held)), rest


def hocr(pages: list[DocPage]) -> bytes:
    ET.register_namespace("", XHTML)
    h = lambda tag: f"{{{XHTML}}}{tag}"
    html = ET.Element(h("html"), {"xml:lang": "en", "lang": "en"})
    head = ET.SubElement(html, h("head"))
    ET.SubElement(head, h("title")).text = "OCR output"
    ET.SubElement(head, h("meta"), {"http-equiv": "Content-Type", "content": "text/html; charset=utf-8"})
    ET.SubElement(head, h("meta"), {"name": "ocr-system", "content": SOFTWARE})
    ET.SubElement(head, h("meta"), {"name": "ocr-capabilities", "content": HOCR_CAPABILITIES})
    body = ET.SubElement(html, h("body"))
    box = lambda b: "bbox {} {} {} {}".format(*b)
    for p, page in enumerate(pages, 1):
        div = ET.SubElement(body, h("div"), {"class": "ocr_page", "id": f"page_{p}",
                                             "title": f"{box((0, 0, page.width, page.height))}; ppageno {p - 1}"})
        count = {"line": 0, "word": 0}

        def words(parent: ET.Element, row: list[Word]) -> None:
            count["line"] += 1
            span = ET.SubElement(parent, h("span"), {"class": "ocr_line", "id": f"line_{p}_{count['line']}",
                                                     "title": box(union([w.box for w in row]))})
            for word in row:
                count["word"] += 1
                w = ET.SubElement(span, h("span"), {"class": "ocrx_word", "id": f"word_{p}_{count['word']}",
                                                    "title": f"{box(word.box)}; x_wconf {round(100 * word.confidence)}"})
                w.text = _clean(word.text)
                w.tail = " "

        def par(parent: ET.Element, rows: list[list[Word]], b: int) -> None:
            rows = [row for row in rows if row]
            if rows:
                node = ET.SubElement(parent, h("p"), {"class": "ocr_par", "id": f"par_{p}_{b}",
                                                      "title": box(union([w.box for row in rows for w in row]))})
                for row in rows:
                    words(node, row)

        for b, block in enumerate(page.blocks(), 1):
            area = ET.SubElement(div, h("div"), {"class": _hocr_class(block), "id": f"block_{p}_{b}",
                                                 "title": box(block.box)})
            rows = [[w for line in row for w in line.words] for row in block.rows]
            if block.type == "table" and block.table is not None:
                cells, rest = cell_rows(block)
                table = ET.SubElement(area, h("table"))
                tr, at = None, None
                for cell, cell_words in sorted(cells, key=lambda c: (c[0]["row"], c[0]["col"])):
                    if cell["row"] != at:
                        tr, at = ET.SubElement(table, h("tr")), cell["row"]
                    td = ET.SubElement(tr, h("td"), {"title": box(bbox(cell["quad"]))})
                    for key in ("rowspan", "colspan"):
                        if cell.get(key, 1) > 1:
                            td.set(key, str(cell[key]))
                    for row in cell_words:
                        words(td, row)
                par(area, rest, b)
            else:
                par(area, rows, b)
    doctype = ('<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" '
               '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n')
    return _serialise(html, doctype)


def _position(element: ET.Element, b: tuple[int, int, int, int]) -> None:
    element.set("HPOS", str(b[0]))
    element.set("VPOS", str(b[1]))
    element.set("WIDTH", str(b[2] - b[0]))
    element.set("HEIGHT", str(b[3] - b[1]))


def _tag(block: Block) -> tuple[str, str, str | None]:
    """(ID, LABEL, DESCRIPTION) of a region type's ALTO LayoutTag; a heading's level is its own tag."""
    if block.type == "heading" and block.level:
        return f"TAG_heading_{block.level}", "heading", f"level {block.level}"
    return f"TAG_{block.type}", block.type, None


def alto(pages: list[DocPage]) -> bytes:
    ET.register_namespace("", ALTO)
    ET.register_namespace("xsi", "http://www.w3.org/2001/XMLSchema-instance")
    q = lambda tag: f"{{{ALTO}}}{tag}"
    root = ET.Element(q("alto"), {"{http://www.w3.org/2001/XMLSchema-instance}schemaLocation": f"{ALTO} {ALTO_SCHEMA}"})
    description = ET.SubElement(root, q("Description"))
    ET.SubElement(description, q("MeasurementUnit")).text = "pixel"
    processing = ET.SubElement(ET.SubElement(description, q("OCRProcessing"), {"ID": "ocr_0"}), q("ocrProcessingStep"))
    ET.SubElement(ET.SubElement(processing, q("processingSoftware")), q("softwareName")).text = SOFTWARE
    blocks = [page.blocks() for page in pages]
    # Region types as tags (only when structure ran: plain blocks carry none).
    tags = {}
    for block in (b for page in blocks for b in page if b.region is not None):
        tags.setdefault(_tag(block)[0], _tag(block))
    if tags:
        tags_el = ET.SubElement(root, q("Tags"))
        for tag_id, label, about in sorted(tags.values()):
            tag = ET.SubElement(tags_el, q("LayoutTag"), {"ID": tag_id, "LABEL": label})
            if about:
                tag.set("DESCRIPTION", about)
    layout = ET.SubElement(root, q("Layout"))
    for p, (page, page_blocks) in enumerate(zip(pages, blocks), 1):
        page_el = ET.SubElement(layout, q("Page"), {"ID": f"page_{p}", "PHYSICAL_IMG_NR": str(p),
                                                    "WIDTH": str(page.width), "HEIGHT": str(page.height)})
        space = ET.SubElement(page_el, q("PrintSpace"))
        _position(space, (0, 0, page.width, page.height))
        count = {"line": 0, "word": 0}

        def text_block(parent: ET.Element, block_id: str, rows: list[list[Word]], tag: str | None,
                       where: tuple[int, int, int, int] | None = None) -> None:
            rows = [row for row in rows if row]  # ALTO wants a String in every TextLine
            if not rows and where is None:
                return
            block_el = ET.SubElement(parent, q("TextBlock"), {"ID": block_id})
            if tag:
                block_el.set("TAGREFS", tag)
            _position(block_el, where or union([w.box for row in rows for w in row]))
            for row in rows:
                count["line"] += 1
                line_el = ET.SubElement(block_el, q("TextLine"), {"ID": f"line_{p}_{count['line']}"})
                _position(line_el, union([w.box for w in row]))
                for k, word in enumerate(row):
                    if k:
                        ET.SubElement(line_el, q("SP"))
                    count["word"] += 1
                    string = ET.SubElement(line_el, q("String"), {"ID": f"string_{p}_{count['word']}"})
                    _position(string, word.box)
                    string.set("CONTENT", _clean(word.text))
                    string.set("WC", f"{min(1.0, max(0.0, word.confidence)):.4f}")

        for b, block in enumerate(page_blocks, 1):
            tag = _tag(block)[0] if block.region is not None else None
            rows = [[w for line in row for w in line.words] for row in block.rows]
            if block.type == "figure":
                figure = ET.SubElement(space, q("Illustration"), {"ID": f"figure_{p}_{b}"})
                if tag:
                    figure.set("TAGREFS", tag)
                _position(figure, block.box)
                text_block(space, f"block_{p}_{b}", rows, tag)  # labels inside a chart
            elif block.type == "table" and block.table is not None:
                composed = ET.SubElement(space, q("ComposedBlock"), {"ID": f"table_{p}_{b}", "TYPE": "table"})
                if tag:
                    composed.set("TAGREFS", tag)
                _position(composed, block.box)
                cells, rest = cell_rows(block)
                for k, (cell, cell_words) in enumerate(cells, 1):
                    text_block(composed, f"cell_{p}_{b}_{k}", cell_words, None, bbox(cell["quad"]))
                text_block(composed, f"block_{p}_{b}", rest, None)
            else:
                text_block(space, f"block_{p}_{b}", rows, tag)
    return _serialise(root)
