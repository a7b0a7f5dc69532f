"""A searchable PDF: each page is its image, with the words as invisible text over it.

reportlab (BSD) writes it: it draws images and text with a render mode and a horizontal scale
directly, which is all this needs; pikepdf would have us write content streams and fonts by hand,
and pypdfium2 is a reader first. Each word is set in Helvetica at its box's height (render mode 3:
neither filled nor stroked), scaled across to its box's width and turned to its box's angle, so a
viewer's selection highlights the word where it is printed.
"""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
from PIL import Image
from reportlab.pdfbase.pdfmetrics import getFont, stringWidth
from reportlab.pdfgen import canvas

from .document import DocPage

FONT = "Helvetica"  # one of PDF's standard fonts: nothing to embed, every reader has it
# A page image without a resolution of its own (a photo, a PNG) is laid out at this one: an A4
# scan at 300 dpi, or a phone photo of a receipt, then prints at about its real size.
DEFAULT_DPI = 200
JPEG_QUALITY = 90  # the background image, as a viewer shows it; the text layer is exact anyway
_FACE = getFont(FONT).face
# The font's glyphs reach from descent to ascent around the baseline (shares of the font size):
# the text is sized so that this extent is the word's height, and its baseline is lifted by the descent.
ASCENT, DESCENT = _FACE.ascent / 1000, _FACE.descent / 1000


def _background(image: np.ndarray | None, page: DocPage) -> io.BytesIO:
    if image is None:  # no pixels at hand (a stored JSON result): a white page keeps the text searchable
        image = np.full((page.height, page.width, 3), 255, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image[..., :3])).save(buf, format="JPEG", quality=JPEG_QUALITY)
    buf.seek(0)
    return buf


def pdf(pages: Sequence[DocPage], images: Sequence[np.ndarray | None]) -> bytes:
    from reportlab.lib.utils import ImageReader

    out = io.BytesIO()
    doc = canvas.Canvas(out, pageCompression=1)
    doc.setCreator("parse")
    for page, image in zip(pages, images):
        scale = 72 / (page.dpi or DEFAULT_DPI)  # pixels -> points
        width, height = page.width * scale, page.height * scale
        doc.setPageSize((width, height))
        doc.drawImage(ImageReader(_background(image, page)), 0, 0, width, height)
        for block in page.rows():
            for row in block:
                for word in (w for line in row for w in line.words):
                    _word(doc, word.text, word.quad, scale, height)
        doc.showPage()
    doc.save()
    return out.getvalue()


def _word(doc: canvas.Canvas, text: str, quad: list[list[float]], scale: float, page_height: float) -> None:
    """One word along its quad's bottom edge (BL -> BR), as tall as its left edge (BL -> TL)."""
    tl, _, br, bl = ([x * scale, page_height - y * scale] for x, y in quad)
    run = math.hypot(br[0] - bl[0], br[1] - bl[1])
    rise = math.hypot(tl[0] - bl[0], tl[1] - bl[1])
    natural = stringWidth(text, FONT, 1.0)
    if run <= 0 or rise <= 0 or natural <= 0:
        return
    size = rise / (ASCENT - DESCENT)
    angle = math.atan2(br[1] - bl[1], br[0] - bl[0])
    # The baseline sits the descent above the box's bottom edge, across the text's direction.
    lift = -DESCENT * size
    origin = (bl[0] - math.sin(angle) * lift, bl[1] + math.cos(angle) * lift)
    text_object = doc.beginText()
    text_object.setTextRenderMode(3)
    text_object.setFont(FONT, size)
    text_object.setHorizScale(100 * run / (natural * size))
    cos, sin = math.cos(angle), math.sin(angle)
    text_object.setTextTransform(cos, sin, -sin, cos, *origin)
    text_object.textOut(text)
    doc.drawText(text_object)
