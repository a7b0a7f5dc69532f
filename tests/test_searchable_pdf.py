"""The searchable PDF keeps what was uploaded and adds only invisible text, in any script.

Unit tests give service.formats.render page entries made here; the model tests go through
POST /v1/parse in-process with the real model, as tests/test_documents_api.py does. poppler's
pdftotext reads the output back (`make poppler`), PDFium renders it.
"""

from __future__ import annotations

import io
import re
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pikepdf
import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageDraw, ImageFont, ImageOps

from service.documents import pdf as pdf_files
from service.formats import render
from tests import pdfs
from tests.formats_check import check_pdf, pdftotext
from tests.support import loaded_app, multipart, png, receipt_page

CJK_FONT = Path("/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf")  # Debian fonts-droid-fallback


def entry(lines: list[dict], width: int, height: int, dpi: float | None = None, file: int = 0, page: int = 1,
          source: str = "ocr") -> dict:
    out = {"width": width, "height": height, "file": file, "page": page, "source": source, "lines": lines}
    return out | ({"dpi": dpi} if dpi else {})


def words_line(text: str, quad) -> dict:
    return {"text": text, "confidence": 1.0, "quad": quad}


def pdftotext_run(document: bytes, tmp: Path, *args: str) -> str:
    path = tmp / "out.pdf"
    path.write_bytes(document)
    return subprocess.run([pdftotext(), *args, str(path), "-"], check=True, capture_output=True, text=True).stdout


def rendered(document: bytes, index: int, dpi: float) -> np.ndarray:
    doc = pdfium.PdfDocument(document)
    try:
        bitmap = doc[index].render(scale=dpi / 72, rev_byteorder=True)
        return np.array(bitmap.to_numpy()[..., :3], copy=True)
    finally:
        doc.close()


def images_of(page: pikepdf.Page) -> dict[str, bytes]:
    xobjects = page.obj.Resources.get("/XObject", {})
    return {name: x.read_raw_bytes() for name, x in xobjects.items() if x.get("/Subtype") == "/Image"}


# ---------------------------------------------------------------------------------------- unit


@pytest.mark.unit
@pytest.mark.parametrize("rotation, crop, user_unit", [(0, None, None), (90, (30, 40, 500, 700), None),
                                                       (180, None, 2.0), (-90, (10, 20, 600, 780), 1.5)])
def test_words_land_where_pdfium_shows_them_on_rotated_cropped_and_scaled_pages(rotation, crop, user_unit):
    """Words at known pixels of a page as PDFium renders it (media box off the origin, a crop box,
    /Rotate, /UserUnit), written into the page and read back by PDFium at the same pixels."""
    dpi = 150.0
    doc = pikepdf.new()
    page = doc.add_blank_page(page_size=(612, 792))
    page.obj.MediaBox = [15, 25, 627, 817]
    page.obj.Rotate = rotation
    if crop:
        page.obj.CropBox = list(crop)
    if user_unit:
        page.obj.UserUnit = user_unit
    buf = io.BytesIO()
    doc.save(buf)
    upload = buf.getvalue()
    source = pdf_files.PdfFile(upload)
    width, height = source.size(0).pixels(dpi)
    source.close()
    # One word a line: PDFium parts text that runs down the user space (/Rotate 270) into a line
    # per word, which is its reading, not the layer's.
    boxes = {"Upright": (60, 80, 420, 120), "Second-42": (90, 300, 330, 330)}
    lines = [words_line(t, [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) for t, (x0, y0, x1, y1) in boxes.items()]
    document = render([entry(lines, width, height, dpi)], "pdf", [upload])[0]
    back = pdf_files.PdfFile(document)
    found = back.text_lines(0, dpi)
    back.close()
    assert [l.text for l in found] == list(boxes)
    for got, (x0, y0, x1, y1) in zip(found, boxes.values()):
        assert np.abs(np.array(got.quad) - [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]).max() <= 2, (got.quad, y1)


@pytest.mark.unit
def test_every_character_extracts_as_itself(tmp_path):
    """CJK, accented Latin, Cyrillic, symbols and characters past the BMP, each a word of its own."""
    texts = ["增值税专用发票 No. 0042", "购买方名称：北京示例科技有限公司", "Ёлка café naïve Straße", "€ ± → ☑ 𝐀𝐁 😀 𠀋"]
    lines = [words_line(t, [[40, 60 + i * 50], [40 + 24 * len(t), 60 + i * 50], [40 + 24 * len(t), 92 + i * 50],
                            [40, 92 + i * 50]]) for i, t in enumerate(texts)]
    document = render([entry(lines, 1000, 300)], "pdf")[0]
    assert " ".join(pdftotext_run(document, tmp_path).split()) == " ".join(" ".join(texts).split())


@pytest.mark.unit
def test_active_content_is_removed_and_links_stay():
    doc = pikepdf.open(io.BytesIO(pdfs.javascript_pdf()))
    page = doc.pages[0]
    launch = pikepdf.Dictionary(S=pikepdf.Name.Launch, F=pikepdf.String("calc.exe"))
    uri = pikepdf.Dictionary(S=pikepdf.Name.URI, URI=pikepdf.String("https://example.org/"))
    page.obj.Annots = pikepdf.Array([doc.make_indirect(pikepdf.Dictionary(
        Type=pikepdf.Name.Annot, Subtype=pikepdf.Name.Link, Rect=[0, 0, 10, 10], A=a)) for a in (launch, uri)])
    buf = io.BytesIO()
    doc.save(buf)
    upload = buf.getvalue()
    document = render([entry([words_line("hello", [[10, 10], [90, 10], [90, 40], [10, 40]])], 1700, 2200, 200)],
                      "pdf", [upload])[0]
    out = pikepdf.open(io.BytesIO(document))
    assert "/OpenAction" not in out.Root and "/JavaScript" not in out.Root.get("/Names", {})
    assert "/AA" not in out.pages[0].obj
    actions = [str(a.A.S) for a in out.pages[0].obj.Annots if "/A" in a]
    assert actions == ["/URI"]
    raw = b"".join(o.read_raw_bytes() if isinstance(o, pikepdf.Stream) else bytes(o.unparse()) for o in out.objects
                   if isinstance(o, (pikepdf.Dictionary, pikepdf.Stream)))
    assert b"while (true)" not in raw and b"calc.exe" not in raw and b"/JavaScript" not in raw


@pytest.mark.unit
def test_selected_pages_in_any_order_and_twice_each_get_their_own_layer(tmp_path):
    upload = pdfs.blank_pdf(3)
    box = [[100, 1000], [400, 1000], [400, 1050], [100, 1050]]
    pages = [entry([words_line(t, box)], 1700, 2200, 200, page=n) for n, t in ((2, "alpha"), (2, "beta"), (1, "gamma"))]
    document = render(pages, "pdf", [upload])[0]
    assert len({p.objgen for p in pikepdf.open(io.BytesIO(document)).pages}) == 3
    assert pdftotext_run(document, tmp_path).split("\f")[:3] == ["alpha\n\n", "beta\n\n", "gamma\n\n"]


@pytest.mark.unit
def test_a_jpeg_is_embedded_as_it_came_and_shown_upright(tmp_path):
    """A phone photo stored sideways with EXIF orientation 6: the same JPEG bytes, turned by the
    page's matrix, so the page shows what the OCR read."""
    raw = Image.fromarray(receipt_page()).rotate(90, expand=True)  # stored lying on its side
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    raw.save(buf, format="JPEG", quality=90, exif=exif, dpi=(200, 200))
    jpeg = buf.getvalue()
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(jpeg))).convert("RGB"))
    height, width = upright.shape[:2]
    document = render([entry([words_line("Item", [[40, 40], [120, 40], [120, 64], [40, 64]])], width, height)],
                      "pdf", [jpeg])[0]
    out = pikepdf.open(io.BytesIO(document))
    assert list(images_of(out.pages[0]).values()) == [jpeg]
    shown = rendered(document, 0, 200)[:height, :width]  # PDFium rounds each side up
    assert shown.shape == upright.shape
    # PDFium's JPEG decoding and resampling against Pillow's: a few levels apart on average; a
    # mirrored or turned page would be 25 to 35 apart.
    assert np.abs(shown.astype(int) - upright.astype(int)).mean() < 8


@pytest.mark.unit
def test_other_images_are_lossless_and_each_tiff_frame_is_a_page():
    colour = receipt_page().copy()
    colour[:20, :, 0] = 200  # a red band: stored as RGB
    grey = [receipt_page()[..., 0], np.where(receipt_page()[..., 0] > 128, 255, 0).astype(np.uint8)]
    tiff = pdfs.multipage_tiff([Image.fromarray(g) for g in grey])
    pages = [entry([], colour.shape[1], colour.shape[0], file=0)] + \
            [entry([], g.shape[1], g.shape[0], file=1, page=n) for n, g in enumerate(grey, 1)]
    document = render(pages, "pdf", [png(colour), tiff])[0]
    out = pikepdf.open(io.BytesIO(document))
    assert len(out.pages) == 3
    for page, want, mode in zip(out.pages, [colour, *grey], ["RGB", "L", "1"]):
        image = pikepdf.PdfImage(next(iter(page.obj.Resources.XObject.values()))).as_pil_image()
        assert image.mode == mode and np.array_equal(np.asarray(image.convert(want.ndim == 3 and "RGB" or "L")), want)
        # Laid out at 200 dpi, the files saying no resolution of their own.
        assert [float(v) for v in page.mediabox] == [0, 0, want.shape[1] * 72 / 200, want.shape[0] * 72 / 200]


@pytest.mark.unit
def test_a_page_of_a_few_pixels_or_a_very_long_strip_is_within_pdf_limits():
    """A PDF page side is 3 to 14400 units: a 1x1 image (0.36 at 200 dpi) and a 2 x 50000 strip
    are drawn within them, not refused with a 500."""
    for size in ((1, 1), (2, 50000)):
        document = render([entry([], *size)], "pdf", [png(np.full((size[1], size[0]), 255, np.uint8))])[0]
        out = pikepdf.open(io.BytesIO(document))
        box = [float(v) for v in out.pages[0].mediabox]
        assert all(3 <= side <= 14400 for side in box[2:]), (size, box)


# ------------------------------------------------------------------- the real model, in-process


@pytest.fixture(scope="module")
def client():
    return loaded_app().test_client()


def post(client, data: bytes, query: str, name: str = "doc.pdf"):
    body, ctype = multipart([("image", name, data, "application/octet-stream")])
    return client.post(f"/v1/parse{query}", data=body, content_type=ctype)


def both(client, data: bytes, query: str = "", name: str = "doc.pdf") -> tuple[list[dict], bytes]:
    """The JSON's images (with words) and the searchable PDF for the same upload."""
    answer = post(client, data, f"?words=1{query}", name)
    assert answer.status_code == 200, answer.get_json()
    document = post(client, data, f"?format=pdf{query}", name)
    assert document.status_code == 200 and document.data.startswith(b"%PDF"), document.data[:200]
    return answer.get_json()["images"], document.data


@pytest.mark.model
def test_a_mixed_pdf_keeps_its_pages_and_gains_text_only_where_it_was_read(client, tmp_path):
    scan = receipt_page()
    upload = pdfs.mixed_pdf(["Vector text page", "kept exactly as it was"], scan)
    images, document = both(client, upload)
    assert [i["source"] for i in images] == ["text-layer", "ocr"]
    before, after = pikepdf.open(io.BytesIO(upload)), pikepdf.open(io.BytesIO(document))
    vector_in, vector_out = before.pages[0], after.pages[0]
    assert vector_out.obj.Contents.read_raw_bytes() == vector_in.obj.Contents.read_raw_bytes()
    assert not images_of(vector_out) and "/ParseOcrText" not in vector_out.obj.Resources.get("/Font", {})
    assert np.array_equal(rendered(document, 0, 150), rendered(upload, 0, 150))
    # The scan: its image object byte for byte, its own content stream still drawing it, and text.
    assert images_of(after.pages[1]) == images_of(before.pages[1])
    assert before.pages[1].obj.Contents.read_raw_bytes() in [s.read_raw_bytes() for s in after.pages[1].obj.Contents]
    page_text = pdftotext_run(document, tmp_path).split("\f")[1]
    assert " ".join(page_text.split()) == " ".join(images[1]["text"].split())
    assert len(document) <= len(upload) * 1.1 + 20_000


@pytest.mark.model
def test_chinese_and_english_extract_as_the_json_reads_them(client, tmp_path):
    if not CJK_FONT.exists():
        pytest.skip(f"{CJK_FONT} is absent: `make poppler` installs fonts-droid-fallback")
    font = ImageFont.truetype(str(CJK_FONT), 36)
    lines = ["增值税专用发票 No. 0042", "购买方名称：北京示例科技有限公司", "Total amount 128.50 元"]
    img = Image.new("RGB", (900, 60 + 70 * len(lines)), "white")
    draw = ImageDraw.Draw(img)
    for i, text in enumerate(lines):
        draw.text((40, 30 + 70 * i), text, fill="black", font=font)
    images, document = both(client, png(np.asarray(img)), name="invoice.png")
    assert re.search(r"[\u4e00-\u9fff]", images[0]["text"]), images[0]["text"]  # the model did read Chinese
    assert " ".join(pdftotext_run(document, tmp_path).split()) == " ".join(images[0]["text"].split())


@pytest.mark.model
def test_a_receipt_extracts_every_word_inside_its_box(client, tmp_path):
    images, document = both(client, png(receipt_page()), name="receipt.png")
    words = [w["text"] for line in images[0]["lines"] for w in line["words"]]
    found = Counter(pdftotext_run(document, tmp_path).split())
    recall = sum(min(n, found[w]) for w, n in Counter(words).items()) / len(words)
    assert recall >= 0.99, (recall, words, found)
    check_pdf(document, images, tmp_path)  # -bbox: each word within 2 px of its box


@pytest.mark.model
def test_scripts_go_and_hostile_uploads_keep_their_answers(client):
    r = post(client, pdfs.javascript_pdf(), "?format=pdf&ocr=force")
    assert r.status_code == 200, r.data[:300]
    out = pikepdf.open(io.BytesIO(r.data))
    assert "/OpenAction" not in out.Root and "/Names" not in out.Root or "/JavaScript" not in out.Root.Names
    assert b"while (true)" not in r.data
    for data, status in ((pdfs.zero_page_pdf(), 400), (pdfs.born_digital_pdf([["x"]], encrypt="pw"), 400),
                         (pdfs.blank_pdf(1, size=(14400, 14400)), 413), (pdfs.born_digital_pdf([["x"]])[:300], 400)):
        answer = post(client, data, "?format=pdf")
        assert answer.status_code == status and answer.get_json()["error"]["code"], answer.data[:300]
