"""Markdown (CommonMark with HTML tables) from pages of regions: what retrieval pipelines take.

Headings carry their levels, paragraphs are re-flowed (a word hyphenated at a line's end is
joined; Chinese and Japanese lines join without a space), lists keep their numbers or become
"-" items, tables are pipe tables unless a cell spans rows or columns (then the table's HTML,
which Markdown allows), a figure is an image placeholder followed by its caption, and page
headers, footers and page numbers are left out: they repeat on every page and break the text.
Pages follow one another, each opened by an HTML comment that names it.

A page read without structure (no regions) is written as paragraphs, one per layout block.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from .document import Block, DocPage, Line

LEFT_OUT = ("header", "footer")
# As service/structure/regions.py reads them: a dash before a space, a number not part of "20.8%".
BULLET = re.compile(r"^\s*([\u2022\u00b7\u25cf\u25cb\u25e6\u25aa\u25a0\u25a1\u27a2\u2713\u2714\u2023\u2043\u2219»]|"
                    r"[*\-\u2013\u2014>](?=\s))\s*")
NUMBER = re.compile(r"^\s*(\(?\d{1,3}[.)](?!\d)|\(?[a-zA-Z][.)]|\(?[ivxIVX]{1,4}[.)]|\(\d{1,3}\)|\d{1,3}、|"
                    r"[\u2460-\u2473])\s*")
# A word broken at a line's end: a letter, a hyphen; the next line goes on in lower case.
HYPHENATED = re.compile(r"(?<=[^\W\d_])-$")
# Scripts written without spaces between words.
UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef\u3000-\u303f]")
# What would turn a paragraph's first characters into Markdown syntax.
SYNTAX_START = re.compile(r"^(#{1,6}\s|>|[-+*]\s|\d{1,9}[.)]\s|=+\s*$|-+\s*$|`{3}|~{3}|\|)")


# Control characters a text layer may carry (PDFium marks a soft hyphen so) are not text.
CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _row_text(row: Sequence[Line]) -> str:
    return CONTROL.sub("", " ".join(l.text.strip() for l in row if l.text.strip()))


def reflow(rows: Sequence[str]) -> str:
    """Rows of one paragraph as one line: hyphenated words joined, CJK rows joined without a space."""
    out = ""
    for row in (r.strip() for r in rows):
        if not row:
            continue
        if not out:
            out = row
        elif HYPHENATED.search(out) and row[:1].islower():
            out = out[:-1] + row
        elif UNSPACED.match(out[-1]) and UNSPACED.match(row[0]):
            out += row
        else:
            out += " " + row
    return out


def _escape(text: str) -> str:
    """A paragraph's text that Markdown reads as text: a leading marker is escaped ("5\\." for a
    number that would start a list)."""
    number = re.match(r"^\d{1,9}(?=[.)]\s)", text)
    if number:
        return text[:number.end()] + "\\" + text[number.end():]
    return "\\" + text if SYNTAX_START.match(text) else text


def _list(rows: list[str]) -> str:
    """Items start at a bullet or a number; the rows between are their continuation."""
    items: list[tuple[str, list[str]]] = []
    for row in rows:
        bullet, number = BULLET.match(row), NUMBER.match(row)
        if bullet:
            items.append(("-", [row[bullet.end():]]))
        elif number:
            # "3." and "3)" are Markdown's own; "(3)", "a." or "①" stay as written after a "-".
            digits = re.fullmatch(r"(\d{1,3})[.)]", number.group(1))
            items.append((f"{digits.group(1)}.", [row[number.end():]]) if digits else ("-", [row]))
        elif items:
            items[-1][1].append(row)
        else:
            items.append(("-", [row]))
    return "\n".join(f"{mark} {reflow(parts)}" for mark, parts in items)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def table(t: dict[str, Any]) -> str:
    """A pipe table (first row the header) when no cell spans; else the table's own HTML."""
    cells = t.get("cells") or []
    if not cells or any(c.get("rowspan", 1) > 1 or c.get("colspan", 1) > 1 for c in cells):
        return t.get("html") or ""
    rows = max(c["row"] for c in cells) + 1
    cols = max(c["col"] for c in cells) + 1
    grid = [[""] * cols for _ in range(rows)]
    for c in cells:
        grid[c["row"]][c["col"]] = _cell(c.get("text", ""))
    out = ["| " + " | ".join(grid[0]) + " |", "|" + "|".join(" --- " for _ in range(cols)) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in grid[1:]]
    return "\n".join(out)


def _block(block: Block, figure: str) -> str:
    rows = [_row_text(row) for row in block.rows]
    rows = [r for r in rows if r]
    if block.type in ("title", "heading"):
        level = block.level or (1 if block.type == "title" else 2)
        return f"{'#' * max(1, min(6, level))} {reflow(rows)}" if rows else ""
    if block.type == "table":
        if block.table is not None:
            return table(block.table)
        return _escape(reflow(rows)) if rows else ""
    if block.type == "figure":
        return f"![figure {figure}](#figure-{figure})"
    if block.type == "equation":
        return f"$$\n{' '.join(rows)}\n$$" if rows else ""
    if block.type == "list":
        return _list(rows)
    if block.type == "caption":
        return f"*{reflow(rows)}*" if rows else ""
    return _escape(reflow(rows)) if rows else ""


def page_markdown(page: DocPage, number: int) -> str:
    parts, figures = [], 0
    for block in page.blocks():
        if block.type in LEFT_OUT:
            continue
        if block.type == "figure":
            figures += 1
        text = _block(block, f"{number}-{figures}")
        if text:
            parts.append(text)
    return "\n\n".join(parts)


def markdown(pages: Sequence[DocPage]) -> bytes:
    """The document: pages in order, each opened by `<!-- page N -->`."""
    out = [f"<!-- page {n} -->\n\n{page_markdown(p, n)}".rstrip() for n, p in enumerate(pages, 1)]
    return ("\n\n".join(out) + "\n").encode()
