"""PDF and TIFF fixtures the tests make themselves: scans, born-digital pages and hostile files."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from reportlab.lib.pagesizes import letter
from reportlab.pdfgen import canvas


def scanned_pdf(pages: list[np.ndarray | Image.Image], resolution: float = 200.0) -> bytes:
    """Images as the pages of a PDF, each page exactly the image's size at `resolution` dpi
    (what a scanner writes): rendered at that dpi, a page gives its image's pixels back."""
    imgs = [p if isinstance(p, Image.Image) else Image.fromarray(p) for p in pages]
    buf = io.BytesIO()
    imgs[0].convert("RGB").save(buf, "PDF", resolution=resolution, save_all=True,
                                append_images=[i.convert("RGB") for i in imgs[1:]])
    return buf.getvalue()


def born_digital_pdf(pages: list[list[str]], size: tuple[float, float] = letter, font_size: float = 14,
                     rotation: int = 0, invisible: bool = False, **canvas_args) -> bytes:
    """Pages of text lines written by reportlab, one line every 2 font sizes from 1 inch down.
    `invisible` writes them in render mode 3, as OCR tools hide their text behind a scan."""
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=size, **canvas_args)
    for lines in pages:
        if rotation:
            c.setPageRotation(rotation)
        for i, line in enumerate(lines):
            text = c.beginText(72, size[1] - 72 - i * 2 * font_size)
            text.setFont("Helvetica", font_size)
            if invisible:
                text.setTextRenderMode(3)
            text.textLine(line)
            c.drawText(text)
        c.showPage()
    c.save()
    return buf.getvalue()


def blank_pdf(count: int, size: tuple[float, float] = letter) -> bytes:
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=size)
    for _ in range(count):
        c.showPage()
    c.save()
    return buf.getvalue()


def written_pdf(objects: list[bytes]) -> bytes:
    """A PDF of these objects (1-based; object 1 is the catalog) with a correct xref table, for
    structures no PDF library would write (zero pages, scripts)."""
    out = io.BytesIO()
    out.write(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def zero_page_pdf() -> bytes:
    return written_pdf([b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"])


def javascript_pdf() -> bytes:
    """A one-page PDF whose opening action and page action are scripts that never end, were they run."""
    script = b"<< /S /JavaScript /JS (while (true) {}) >>"
    return written_pdf([
        b"<< /Type /Catalog /Pages 2 0 R /OpenAction 4 0 R /Names << /JavaScript << /Names [(x) 4 0 R] >> >> >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /AA << /O 4 0 R >> >>",
        script,
    ])


def broken_xref(data: bytes) -> bytes:
    """The same PDF with every xref offset wrong: readers must rebuild the table by scanning."""
    head, sep, tail = data.rpartition(b"xref\n")
    lines = tail.split(b"\n")
    broken = [b"%010d 00000 n " % 7 if line.endswith(b" n ") else line for line in lines]
    return head + sep + b"\n".join(broken)


def multipage_tiff(pages: list[Image.Image]) -> bytes:
    buf = io.BytesIO()
    pages[0].save(buf, "TIFF", save_all=True, append_images=pages[1:])
    return buf.getvalue()


def mixed_pdf(lines: list[str], scan: np.ndarray, resolution: float = 200.0) -> bytes:
    """Two pages, as a born-digital document with a scan pasted in: page 1 vector text (Helvetica),
    page 2 the scan as a JPEG image filling the page at `resolution` dpi, no text."""
    from reportlab.lib.utils import ImageReader

    buf, jpeg = io.BytesIO(), io.BytesIO()
    Image.fromarray(scan).save(jpeg, format="JPEG", quality=85)
    jpeg.seek(0)
    c = canvas.Canvas(buf, pagesize=letter)
    for i, line in enumerate(lines):
        c.setFont("Helvetica", 14)
        c.drawString(72, letter[1] - 72 - i * 28, line)
    c.showPage()
    size = (scan.shape[1] * 72 / resolution, scan.shape[0] * 72 / resolution)
    c.setPageSize(size)
    c.drawImage(ImageReader(jpeg), 0, 0, *size)
    c.showPage()
    c.save()
    return buf.getvalue()
