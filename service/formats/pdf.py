"""The searchable PDF: the uploaded pages as they came, with the words as invisible text over them.

pikepdf (qpdf, MPL-2.0; what OCRmyPDF builds on) edits the upload itself. A PDF keeps its page
objects, content streams, images, fonts, outline and metadata: an OCRed page gains a text layer
(its content streams stay, wrapped in q/Q, with one stream of text after them) and a font in its
own copy of the resources dictionary; a page read from its own text layer is not touched at all.
Streams are written as they are stored (no decoding, no recompression), so an image object stays
byte for byte. An image upload becomes a page: a JPEG as it came (DCTDecode, no second lossy pass),
any other image losslessly (Flate with PNG predictors); a TIFF's frames become a page each.
Active content is removed (service/formats/active.py).

The OCR's coordinates are the pixels of the page as PDFium rendered it: its crop box (intersected
with the media box) at the page's dpi, turned by its /Rotate. PDFium lays a page out in user-space
units at 72 per inch and ignores /UserUnit, so the pixels map back to user space without it.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import pikepdf
from PIL import Image

from ..documents import images as image_files
from ..errors import ClientError
from ..documents import pdf as pdf_files
from ..settings import Limits
from . import active, glyphless, textlayer
from .document import DocPage

POINTS_PER_INCH = 72.0
# A page image without a plausible resolution of its own is laid out at this one. Files that say
# 72 or 96 dpi (cameras, screens) would print a phone photo a metre wide: below MIN_FILE_DPI the
# file's resolution is taken as a default, not a scan's.
DEFAULT_DPI = 200.0
MIN_FILE_DPI, MAX_FILE_DPI = 100.0, 2400.0
MIN_PAGE_PT, MAX_PAGE_PT = 3.0, 14400.0
FONT_NAME = "ParseOcrText"
# EXIF orientation -> where the raw image's pixel (x, y) shows in the upright page (X, Y), given
# the raw width w and height h; 5 to 8 swap the sides (Pillow's ImageOps.exif_transpose).
ORIENT = {
    1: lambda x, y, w, h: (x, y), 2: lambda x, y, w, h: (w - x, y), 3: lambda x, y, w, h: (w - x, h - y),
    4: lambda x, y, w, h: (x, h - y), 5: lambda x, y, w, h: (y, x), 6: lambda x, y, w, h: (h - y, x),
    7: lambda x, y, w, h: (h - y, w - x), 8: lambda x, y, w, h: (y, w - x),
}


def pdf(pages: Sequence[DocPage], uploads: Sequence[bytes] | None) -> bytes:
    """The searchable PDF of `pages`, drawn over their uploads (each page's `file` indexes
    `uploads`); without uploads, over blank pages of each page's size."""
    codes = glyphless.Codes()
    sources: dict[int, pikepdf.Pdf] = {}  # every Pdf opened or made here, closed at the end
    try:
        try:
            out, layers = _assemble(pages, uploads, sources, codes)
            if all(out is not source for source in sources.values()):
                sources[-1] = out
        except pikepdf.PdfError as err:  # PDFium read it, qpdf cannot repair it into a document to edit
            raise ClientError(422, "pdf_not_editable",
                              f"the PDF was read, but it is too damaged to add a text layer to ({err}); "
                              "ask for format=json, text, hocr or alto, or re-export the PDF") from None
        if layers:
            font = glyphless.font(out, codes)
            for page, operators in layers:
                _attach(out, page, operators, font)
        active.scrub(out)
        buf = io.BytesIO()
        # Streams are copied as stored: an image is the same bytes, a content stream too.
        out.save(buf, stream_decode_level=pikepdf.StreamDecodeLevel.none, recompress_flate=False,
                 compress_streams=False)
        return buf.getvalue()
    finally:
        for source in sources.values():
            source.close()


def _assemble(pages: Sequence[DocPage], uploads: Sequence[bytes] | None, sources: dict[int, pikepdf.Pdf],
              codes: glyphless.Codes) -> tuple[pikepdf.Pdf, list[tuple[pikepdf.Page, bytes]]]:
    """The output document and, for each OCRed page, the page and its text layer's operators."""
    out = _whole_document(pages, uploads, sources)
    whole = out is not None
    if out is None:
        out = pikepdf.new()
    layers = []
    copied: dict[tuple[int, int], pikepdf.Page] = {}
    for at, page in enumerate(pages):
        data = uploads[page.file] if uploads is not None else None
        if data is not None and pdf_files.is_pdf(data):
            if whole:
                target = out.pages[at]
            elif (page.file, page.number) in copied:  # a page asked for twice: a page object of its own
                first = copied[(page.file, page.number)].obj
                out.pages.append(pikepdf.Page(out.make_indirect(pikepdf.Dictionary({k: v for k, v in first.items()}))))
                target = out.pages[-1]
            else:
                if page.file not in sources:
                    sources[page.file] = _open(data)
                out.pages.append(sources[page.file].pages[page.number - 1])
                target = copied[(page.file, page.number)] = out.pages[-1]
            if page.source == "text-layer":
                continue  # its own text is the answer: the page stays exactly as it was
            to_page = _pdf_pixels_to_page(target, page.dpi or DEFAULT_DPI)
        elif data is not None:
            target, to_page = _image_page(out, data, page)
        else:
            target, to_page = _blank_page(out, page)
        layers.append((target, textlayer.operators(page, to_page, FONT_NAME, codes)))
    return out, layers


def _whole_document(pages: Sequence[DocPage], uploads: Sequence[bytes] | None,
                    sources: dict[int, pikepdf.Pdf]) -> pikepdf.Pdf | None:
    """The uploaded PDF itself, opened, when `pages` are all its pages in order: it is edited in
    place, and its outline, names, metadata and forms stay with it. Else None."""
    if not uploads or not pages or len({p.file for p in pages}) != 1:
        return None
    file = pages[0].file
    if not pdf_files.is_pdf(uploads[file]) or [p.number for p in pages] != list(range(1, len(pages) + 1)):
        return None
    doc = sources[file] = _open(uploads[file])
    return doc if len(doc.pages) == len(pages) else None


def _open(data: bytes) -> pikepdf.Pdf:
    # The upload was read by PDFium already; qpdf repairs what it can the same way (warnings only).
    return pikepdf.open(io.BytesIO(data), suppress_warnings=True)


def _attach(out: pikepdf.Pdf, page: pikepdf.Page, operators: bytes, font: pikepdf.Object) -> None:
    """The text layer after the page's own content, which is wrapped in q/Q so that whatever
    graphics state it leaves does not move the text. The page gets its own resources dictionary
    (a shallow copy) with the font added: resources other pages share are not changed."""
    obj = page.obj
    resources = _inherited(obj, "/Resources")
    own = pikepdf.Dictionary({k: v for k, v in resources.items()}) if isinstance(resources, pikepdf.Dictionary) \
        else pikepdf.Dictionary()
    fonts = own.get("/Font")
    fonts = pikepdf.Dictionary({k: v for k, v in fonts.items()}) if isinstance(fonts, pikepdf.Dictionary) \
        else pikepdf.Dictionary()
    fonts["/" + FONT_NAME] = font
    own.Font = fonts
    obj.Resources = own
    contents = obj.get("/Contents")
    streams = list(contents) if isinstance(contents, pikepdf.Array) else [contents] if contents is not None else []
    obj.Contents = pikepdf.Array([out.make_indirect(glyphless.flate(out, b"q\n")), *streams,
                                  out.make_indirect(glyphless.flate(out, b"Q\n" + operators))])


def _inherited(obj: pikepdf.Dictionary, key: str) -> pikepdf.Object | None:
    """A page attribute, from the page or the nearest page-tree node above it that has it."""
    seen = 0
    while isinstance(obj, pikepdf.Dictionary) and seen < 64:
        if key in obj:
            return obj[key]
        obj = obj.get("/Parent")
        seen += 1
    return None


def _box(value: pikepdf.Object | None) -> tuple[float, float, float, float] | None:
    try:
        x0, y0, x1, y1 = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    return box if box[2] > box[0] and box[3] > box[1] else None


def _pdf_pixels_to_page(page: pikepdf.Page, dpi: float) -> textlayer.ToPage:
    """Rendered pixel -> user space, as PDFium laid the page out: the crop box within the media
    box (US Letter where the media box is missing), /Rotate in quarter turns, truncated as PDFium
    reads it."""
    media = _box(_inherited(page.obj, "/MediaBox")) or (0.0, 0.0, 612.0, 792.0)
    crop = _box(_inherited(page.obj, "/CropBox"))
    if crop is not None:
        crop = (max(crop[0], media[0]), max(crop[1], media[1]), min(crop[2], media[2]), min(crop[3], media[3]))
    left, bottom, right, top = crop if crop is not None and crop[2] > crop[0] and crop[3] > crop[1] else media
    try:
        rotate = int(float(_inherited(page.obj, "/Rotate") or 0) / 90) % 4  # type: ignore[arg-type]
    except (TypeError, ValueError):
        rotate = 0
    s = POINTS_PER_INCH / dpi
    if rotate == 1:
        return lambda x, y: (left + y * s, bottom + x * s)
    if rotate == 2:
        return lambda x, y: (right - x * s, bottom + y * s)
    if rotate == 3:
        return lambda x, y: (right - y * s, top - x * s)
    return lambda x, y: (left + x * s, top - y * s)


def _file_dpi(img: Image.Image) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in img.info.get("dpi", (0, 0)))
    except (TypeError, ValueError):
        return DEFAULT_DPI, DEFAULT_DPI
    ok = MIN_FILE_DPI <= x <= MAX_FILE_DPI and MIN_FILE_DPI <= y <= MAX_FILE_DPI
    return (x, y) if ok else (DEFAULT_DPI, DEFAULT_DPI)


def _image_page(out: pikepdf.Pdf, data: bytes, page: DocPage) -> tuple[pikepdf.Page, textlayer.ToPage]:
    """A page that shows frame `page.number` of an image upload at its resolution; the pixel ->
    user space map of its upright pixels (EXIF orientation applied, as the OCR saw them)."""
    with Image.open(io.BytesIO(data)) as img:
        dpi_x, dpi_y = _file_dpi(img)
        orientation = img.getexif().get(image_files.EXIF_ORIENTATION, 1) if img.format == "JPEG" else 1
        if img.format == "JPEG" and img.mode in ("L", "RGB", "CMYK") and orientation in ORIENT:
            raw_w, raw_h = img.size
            image = _jpeg(out, data, img)
        else:
            orientation = 1
            image, raw_w, raw_h = _lossless(out, data, page)
    upright_w, upright_h = (raw_h, raw_w) if orientation >= 5 else (raw_w, raw_h)
    if orientation >= 5:
        dpi_x, dpi_y = dpi_y, dpi_x
    # A PDF page side is 3 to 14400 units: an image of a few pixels (or of tens of thousands) is
    # drawn larger (or smaller) than its resolution says, rather than refused.
    sx = min(max(POINTS_PER_INCH / dpi_x, MIN_PAGE_PT / upright_w), MAX_PAGE_PT / upright_w)
    sy = min(max(POINTS_PER_INCH / dpi_y, MIN_PAGE_PT / upright_h), MAX_PAGE_PT / upright_h)
    width, height = upright_w * sx, upright_h * sy

    def to_page(x: float, y: float) -> tuple[float, float]:
        return x * sx, height - y * sy

    # The image's unit square (u right, v up; its first row at v = 1) onto the page, through the
    # raw pixel it addresses and that pixel's place upright.
    def corner(u: float, v: float) -> tuple[float, float]:
        return to_page(*ORIENT[orientation](u * raw_w, (1 - v) * raw_h, raw_w, raw_h))

    (e, f), (ux, uy), (vx, vy) = corner(0, 0), corner(1, 0), corner(0, 1)
    matrix = [ux - e, uy - f, vx - e, vy - f, e, f]
    target = out.add_blank_page(page_size=(width, height))
    target.obj.Resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=image))
    cm = " ".join(f"{v:.4f}" for v in matrix)
    target.obj.Contents = out.make_indirect(glyphless.flate(out, f"q {cm} cm /Im0 Do Q\n".encode()))
    return target, to_page


def _jpeg(out: pikepdf.Pdf, data: bytes, img: Image.Image) -> pikepdf.Object:
    """The JPEG file itself as the image's stream (DCTDecode): no pixel decoded or re-encoded."""
    keys = {"Type": pikepdf.Name.XObject, "Subtype": pikepdf.Name.Image, "Width": img.width, "Height": img.height,
            "BitsPerComponent": 8, "ColorSpace": pikepdf.Name({"L": "/DeviceGray", "RGB": "/DeviceRGB",
                                                                 "CMYK": "/DeviceCMYK"}[img.mode])}
    if img.mode == "CMYK" and "adobe" in img.info:
        keys["Decode"] = [1, 0] * 4  # Adobe's CMYK JPEGs store inverted samples
    stream = pikepdf.Stream(out, data, **keys)
    stream.Filter = pikepdf.Name.DCTDecode
    return out.make_indirect(stream)


def _lossless(out: pikepdf.Pdf, data: bytes, page: DocPage) -> tuple[pikepdf.Object, int, int]:
    """The pixels the OCR read (upright, over white), Flate-compressed with PNG's row filters, in
    one bit per pixel for black and white, grey where every pixel is grey, else RGB."""
    # The upload was accepted when it was read: decoding it again at most at that page's size.
    limits = Limits(max_pixels=page.width * page.height, max_side=max(page.width, page.height))
    rgb = image_files.decode_frame(data, page.number - 1, limits)
    height, width = rgb.shape[:2]
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
        grey = rgb[..., 0]
        bilevel = bool(np.isin(grey, (0, 255)).all())
        pil = Image.fromarray(grey).convert("1") if bilevel else Image.fromarray(grey)
        colors, bits, space = 1, 1 if bilevel else 8, "/DeviceGray"
    else:
        pil, colors, bits, space = Image.fromarray(np.ascontiguousarray(rgb)), 3, 8, "/DeviceRGB"
    png = io.BytesIO()
    pil.save(png, format="PNG", compress_level=9)
    stream = pikepdf.Stream(out, _idat(png.getvalue()), Type=pikepdf.Name.XObject, Subtype=pikepdf.Name.Image,
                            Width=width, Height=height, BitsPerComponent=bits, ColorSpace=pikepdf.Name(space))
    stream.Filter = pikepdf.Name.FlateDecode
    stream.DecodeParms = pikepdf.Dictionary(Predictor=15, Colors=colors, BitsPerComponent=bits, Columns=width)
    return out.make_indirect(stream), width, height


def _idat(png: bytes) -> bytes:
    """A PNG's image data: one zlib stream of filtered rows, which is what Flate with PNG
    predictors decodes."""
    at, parts = 8, []
    while at < len(png):
        length = int.from_bytes(png[at:at + 4], "big")
        if png[at + 4:at + 8] == b"IDAT":
            parts.append(png[at + 8:at + 8 + length])
        at += 12 + length
    return b"".join(parts)


def _blank_page(out: pikepdf.Pdf, page: DocPage) -> tuple[pikepdf.Page, textlayer.ToPage]:
    """A white page of the page's size, for results kept without their upload."""
    s = POINTS_PER_INCH / (page.dpi or DEFAULT_DPI)
    height = page.height * s
    target = out.add_blank_page(page_size=(page.width * s, height))
    return target, lambda x, y: (x * s, height - y * s)
