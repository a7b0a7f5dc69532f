"""One report page written by reportlab, for the structure tests: a title, two paragraphs, a ruled
table of 4 rows and 3 columns whose header has one cell spanning two columns, a bar chart with a
caption under it, and a page number. The same page serves as a born-digital PDF and, rendered by
PDFium, as a scan."""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
from reportlab.lib.pagesizes import letter
from reportlab.pdfgen import canvas

TITLE = "Water Quality Report"
PARAGRAPHS = (
    ("The survey measured the water of three rivers every week of the year. Samples were taken",
     "at dawn and kept cold until the laboratory read them. The readings show a steady improve-",
     "ment since the new treatment plant opened in the spring."),
    ("Acidity stayed within the limits set by the regional authority at every site. Temperature",
     "rose in the summer months, most of all downstream of the power station, as expected."),
)
HEADER = ("Site", "Measured")  # "Measured" spans the last two columns
ROWS = (("North", "7.2", "14.5"), ("Centre", "6.9", "15.8"), ("South", "7.4", "16.1"))
CAPTION = "Figure 1: Weekly samples taken at each site."
PAGE_NUMBER = "7"
DPI = 150

# Geometry in points from the top of the page (reportlab's y runs up).
LEFT, RIGHT = 72.0, 540.0
TABLE_TOP, ROW_HEIGHT, COLUMNS = 330.0, 26.0, (72.0, 252.0, 396.0, 540.0)


@lru_cache(maxsize=1)
def pdf() -> bytes:
    """The page as a born-digital PDF (its text in the text layer)."""
    out = io.BytesIO()
    c = canvas.Canvas(out, pagesize=letter)
    _, height = letter
    top = lambda y: height - y
    c.setFont("Helvetica-Bold", 26)
    c.drawString(LEFT, top(96), TITLE)
    c.setFont("Helvetica", 12)
    y = 150.0
    for paragraph in PARAGRAPHS:
        for line in paragraph:
            c.drawString(LEFT, top(y), line)
            y += 17
        y += 20
    # The table: every cell ruled; the header's second cell spans two columns.
    rows = 1 + len(ROWS)
    c.setLineWidth(1)
    c.rect(LEFT, top(TABLE_TOP + rows * ROW_HEIGHT), RIGHT - LEFT, rows * ROW_HEIGHT)
    for r in range(1, rows):
        c.line(LEFT, top(TABLE_TOP + r * ROW_HEIGHT), RIGHT, top(TABLE_TOP + r * ROW_HEIGHT))
    c.line(COLUMNS[1], top(TABLE_TOP), COLUMNS[1], top(TABLE_TOP + rows * ROW_HEIGHT))
    c.line(COLUMNS[2], top(TABLE_TOP + ROW_HEIGHT), COLUMNS[2], top(TABLE_TOP + rows * ROW_HEIGHT))
    c.setFont("Helvetica-Bold", 12)
    c.drawString(COLUMNS[0] + 8, top(TABLE_TOP + 17), HEADER[0])
    c.drawString(COLUMNS[1] + 8, top(TABLE_TOP + 17), HEADER[1])
    c.setFont("Helvetica", 12)
    for r, row in enumerate(ROWS, 1):
        for col, text in enumerate(row):
            c.drawString(COLUMNS[col] + 8, top(TABLE_TOP + r * ROW_HEIGHT + 17), text)
    # The figure: a framed bar chart, no text in it.
    fig_top, fig_bottom = 480.0, 640.0
    c.setFillGray(0.95)
    c.rect(150, top(fig_bottom), 312, fig_bottom - fig_top, fill=1)
    for k, value in enumerate((0.5, 0.8, 0.65, 0.9, 0.4, 0.7)):
        c.setFillGray(0.2 + 0.1 * k)
        bar = value * (fig_bottom - fig_top - 20)
        c.rect(170 + k * 48, top(fig_bottom - 10), 32, bar, fill=1, stroke=0)
    c.setFillGray(0)
    c.setFont("Helvetica-Oblique", 11)
    c.drawString(150, top(fig_bottom + 22), CAPTION)
    c.setFont("Helvetica", 11)
    c.drawCentredString((LEFT + RIGHT) / 2, top(750), PAGE_NUMBER)
    c.showPage()
    c.save()
    return out.getvalue()


@lru_cache(maxsize=1)
def image() -> np.ndarray:
    """The same page rendered at DPI by PDFium, as the scan of it."""
    from service.documents.pdf import PdfFile
    doc = PdfFile(pdf())
    try:
        return doc.render(0, DPI)
    finally:
        doc.close()


def paragraph_text(k: int) -> str:
    """A paragraph as the Markdown writes it: rows joined, the hyphenated word whole."""
    return " ".join(PARAGRAPHS[k]).replace("improve- ment", "improvement")
