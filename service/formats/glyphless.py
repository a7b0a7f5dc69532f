"""The searchable PDF's font: one blank glyph under every character of every script.

The text layer is invisible (render mode 3), so its font needs no letter shapes, only codes a
reader can map back to Unicode. This is the design of Tesseract's and OCRmyPDF's text layers: a
Type0 font with Identity-H encoding over a CIDFontType2 whose every CID maps to one TrueType
glyph, and a ToUnicode CMap that says which character each CID stands for. The glyph's outline is
its em box, which render mode 3 never paints: PDFium (Chrome's viewer, and this service reading
its own output back) measures a character by its outline, and with none it gives every word a
height of zero and drops text turned a quarter turn; with the box, a selection covers the word. The CIDs are handed out per
document, one per distinct character (code point) in the order they first occur, so any script,
and characters past the Basic Multilingual Plane, extract as themselves; a document of n distinct
characters carries a CMap of n entries. The TrueType program is built here with fontTools (MIT),
once per process: a few hundred bytes, nothing to license.
"""

from __future__ import annotations

import functools
import io
import zlib

import pikepdf
from fontTools.fontBuilder import FontBuilder
from fontTools.pens.ttGlyphPen import TTGlyphPen

NAME = "GlyphLessFont"
UNITS_PER_EM = 1000
# Every character advances half an em; the text layer then sets each word's width by scaling (Tz).
ADVANCE = 500
# The extent a reader gives a character (its selection box, pdftotext -bbox): 0.8 em above the
# baseline, 0.2 below, one em in all; so a word set at its box's height fills the box exactly.
ASCENT, DESCENT = 800, -200
MAX_CIDS = 0xFFFF  # two-byte codes (Identity-H); CID 0 is .notdef


@functools.lru_cache(maxsize=1)
def truetype() -> bytes:
    """The font program: an empty .notdef and the box glyph, both half an em wide."""
    builder = FontBuilder(UNITS_PER_EM, isTTF=True)
    builder.setupGlyphOrder([".notdef", "space"])
    builder.setupCharacterMap({0x20: "space"})
    box = TTGlyphPen(None)
    for point in ((0, DESCENT), (0, ASCENT), (ADVANCE, ASCENT), (ADVANCE, DESCENT)):
        (box.lineTo if box.points else box.moveTo)(point)
    box.closePath()
    builder.setupGlyf({".notdef": TTGlyphPen(None).glyph(), "space": box.glyph()})
    builder.setupHorizontalMetrics({".notdef": (ADVANCE, 0), "space": (ADVANCE, 0)})
    builder.setupHorizontalHeader(ascent=ASCENT, descent=DESCENT)
    builder.setupNameTable({"familyName": NAME, "styleName": "Regular"})
    builder.setupOS2(sTypoAscender=ASCENT, sTypoDescender=DESCENT, usWinAscent=ASCENT, usWinDescent=-DESCENT)
    builder.setupPost()
    out = io.BytesIO()
    builder.save(out)
    return out.getvalue()


class Codes:
    """CIDs for the characters of one document, handed out as they are first met."""

    def __init__(self) -> None:
        self.cids: dict[str, int] = {}

    def encode(self, text: str) -> bytes:
        """`text` as the two-byte big-endian CIDs a Tj operand carries."""
        out = bytearray()
        for ch in text:
            cid = self.cids.get(ch)
            if cid is None:
                if len(self.cids) >= MAX_CIDS - 1:
                    raise ValueError(f"more than {MAX_CIDS - 1} distinct characters in one document")
                cid = self.cids[ch] = len(self.cids) + 1
            out += cid.to_bytes(2, "big")
        return bytes(out)

    def to_unicode(self) -> bytes:
        """The ToUnicode CMap: each CID to its character, in UTF-16BE (a surrogate pair past U+FFFF)."""
        entries = [f"<{cid:04X}> <{ch.encode('utf-16-be').hex().upper()}>" for ch, cid in self.cids.items()]
        chunks = []
        for start in range(0, len(entries), 100):  # a bfchar block holds at most 100 entries
            block = entries[start:start + 100]
            chunks.append(f"{len(block)} beginbfchar\n" + "\n".join(block) + "\nendbfchar")
        return ("/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
                "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
                "/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
                "1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n"
                + "\n".join(chunks)
                + "\nendcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n").encode("ascii")

    def cid_to_gid(self) -> bytes:
        """CIDToGIDMap: CID 0 stays .notdef, every CID handed out draws glyph 1 (the box)."""
        return b"\x00\x00" + b"\x00\x01" * len(self.cids)


def flate(pdf: pikepdf.Pdf, data: bytes, **keys) -> pikepdf.Stream:
    """A Flate-compressed stream of `data` (the output is saved without touching existing streams,
    so new ones are compressed here)."""
    stream = pikepdf.Stream(pdf, zlib.compress(data, 9), **keys)
    stream.Filter = pikepdf.Name.FlateDecode
    return stream


def font(pdf: pikepdf.Pdf, codes: Codes) -> pikepdf.Object:
    """The Type0 font for every character `codes` handed out, as an indirect object of `pdf`.
    Call it once the document's text is all encoded: the CMap is written from `codes` now."""
    program = truetype()
    descriptor = pdf.make_indirect(pikepdf.Dictionary(
        Type=pikepdf.Name.FontDescriptor, FontName=pikepdf.Name("/" + NAME),
        Flags=4 | 1,  # symbolic (its codes are not a standard encoding), fixed pitch
        FontBBox=[0, DESCENT, ADVANCE, ASCENT], ItalicAngle=0, Ascent=ASCENT, Descent=DESCENT,
        CapHeight=ASCENT, StemV=80,
        FontFile2=pdf.make_indirect(flate(pdf, program, Length1=len(program))),
    ))
    descendant = pdf.make_indirect(pikepdf.Dictionary(
        Type=pikepdf.Name.Font, Subtype=pikepdf.Name.CIDFontType2, BaseFont=pikepdf.Name("/" + NAME),
        CIDSystemInfo=pikepdf.Dictionary(Registry=pikepdf.String("Adobe"), Ordering=pikepdf.String("Identity"),
                                         Supplement=0),
        FontDescriptor=descriptor, DW=ADVANCE,
        CIDToGIDMap=pdf.make_indirect(flate(pdf, codes.cid_to_gid())),
    ))
    return pdf.make_indirect(pikepdf.Dictionary(
        Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type0, BaseFont=pikepdf.Name("/" + NAME),
        Encoding=pikepdf.Name("/Identity-H"), DescendantFonts=[descendant],
        ToUnicode=pdf.make_indirect(flate(pdf, codes.to_unicode())),
    ))
