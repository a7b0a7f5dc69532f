"""hOCR 1.2 (XHTML) and ALTO v4 (XML): the two standard OCR layouts, built with ElementTree so
every text is escaped, one element per block, row (line of text) and word, each with its box."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from .document import DocPage, bbox, union

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


def hocr(pages: list[DocPage]) -> bytes:
    ET.register_namespace("", XHTML)
    html = ET.Element(f"{{{XHTML}}}html", {"xml:lang": "en", "lang": "en"})
    head = ET.SubElement(html, f"{{{XHTML}}}head")
    ET.SubElement(head, f"{{{XHTML}}}title").text = "OCR output"
    ET.SubElement(head, f"{{{XHTML}}}meta", {"http-equiv": "Content-Type", "content": "text/html; charset=utf-8"})
    ET.SubElement(head, f"{{{XHTML}}}meta", {"name": "ocr-system", "content": SOFTWARE})
    ET.SubElement(head, f"{{{XHTML}}}meta", {"name": "ocr-capabilities",
                                            "content": "ocr_page ocr_carea ocr_par ocr_line ocrx_word"})
    body = ET.SubElement(html, f"{{{XHTML}}}body")
    box = lambda b: "bbox {} {} {} {}".format(*b)
    for p, page in enumerate(pages, 1):
        div = ET.SubElement(body, f"{{{XHTML}}}div", {"class": "ocr_page", "id": f"page_{p}",
                                                      "title": f"{box((0, 0, page.width, page.height))}; ppageno {p - 1}"})
        n_line = n_word = 0
        for b, block in enumerate(page.rows(), 1):
            block_box = union([bbox(l.quad) for row in block for l in row])
            area = ET.SubElement(div, f"{{{XHTML}}}div", {"class": "ocr_carea", "id": f"block_{p}_{b}",
                                                          "title": box(block_box)})
            par = ET.SubElement(area, f"{{{XHTML}}}p", {"class": "ocr_par", "id": f"par_{p}_{b}", "title": box(block_box)})
            for row in block:
                n_line += 1
                span = ET.SubElement(par, f"{{{XHTML}}}span", {"class": "ocr_line", "id": f"line_{p}_{n_line}",
                                                               "title": box(union([bbox(l.quad) for l in row]))})
                for word in (w for line in row for w in line.words):
                    n_word += 1
                    w = ET.SubElement(span, f"{{{XHTML}}}span", {
                        "class": "ocrx_word", "id": f"word_{p}_{n_word}",
                        "title": f"{box(word.box)}; x_wconf {round(100 * word.confidence)}"})
                    w.text = _clean(word.text)
                    w.tail = " "
    doctype = ('<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" '
               '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">\n')
    return _serialise(html, doctype)


def _position(element: ET.Element, b: tuple[int, int, int, int]) -> None:
    element.set("HPOS", str(b[0]))
    element.set("VPOS", str(b[1]))
    element.set("WIDTH", str(b[2] - b[0]))
    element.set("HEIGHT", str(b[3] - b[1]))


def alto(pages: list[DocPage]) -> bytes:
    ET.register_namespace("", ALTO)
    ET.register_namespace("xsi", "http://www.w3.org/2001/XMLSchema-instance")
    q = lambda tag: f"{{{ALTO}}}{tag}"
    root = ET.Element(q("alto"), {"{http://www.w3.org/2001/XMLSchema-instance}schemaLocation": f"{ALTO} {ALTO_SCHEMA}"})
    description = ET.SubElement(root, q("Description"))
    ET.SubElement(description, q("MeasurementUnit")).text = "pixel"
    processing = ET.SubElement(ET.SubElement(description, q("OCRProcessing"), {"ID": "ocr_0"}), q("ocrProcessingStep"))
    ET.SubElement(ET.SubElement(processing, q("processingSoftware")), q("softwareName")).text = SOFTWARE
    layout = ET.SubElement(root, q("Layout"))
    for p, page in enumerate(pages, 1):
        page_el = ET.SubElement(layout, q("Page"), {"ID": f"page_{p}", "PHYSICAL_IMG_NR": str(p),
                                                    "WIDTH": str(page.width), "HEIGHT": str(page.height)})
        space = ET.SubElement(page_el, q("PrintSpace"))
        _position(space, (0, 0, page.width, page.height))
        n_line = n_word = 0
        for b, block in enumerate(page.rows(), 1):
            block_el = ET.SubElement(space, q("TextBlock"), {"ID": f"block_{p}_{b}"})
            _position(block_el, union([bbox(l.quad) for row in block for l in row]))
            for row in block:
                if not any(line.words for line in row):
                    continue  # ALTO wants a String in every TextLine; a line read as empty has none
                n_line += 1
                line_el = ET.SubElement(block_el, q("TextLine"), {"ID": f"line_{p}_{n_line}"})
                _position(line_el, union([bbox(l.quad) for l in row]))
                for k, word in enumerate(w for line in row for w in line.words):
                    if k:
                        ET.SubElement(line_el, q("SP"))
                    n_word += 1
                    string = ET.SubElement(line_el, q("String"), {"ID": f"string_{p}_{n_word}"})
                    _position(string, word.box)
                    string.set("CONTENT", _clean(word.text))
                    string.set("WC", f"{min(1.0, max(0.0, word.confidence)):.4f}")
    return _serialise(root)
