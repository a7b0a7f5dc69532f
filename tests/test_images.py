"""service.documents.images: every accepted format decodes to the pixels a viewer shows; every broken one gets a 4xx.

Fixtures are made here with Pillow, so each case states exactly what it feeds the decoder.
"""

from __future__ import annotations

import io
import resource
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from service.errors import ClientError
from service.documents.images import decode
from service.settings import Limits
from tests.support import png_chunk, png_header

pytestmark = pytest.mark.unit


LIMITS = Limits(max_pixels=40_000_000, max_side=16384)


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def sample(mode: str = "RGB", size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A white page with a black bar in the top-left quarter: orientation and colour are visible."""
    img = Image.new("RGB", size, "white")
    img.paste((0, 0, 0), (0, 0, size[0] // 2, size[1] // 2))
    return img.convert(mode)


def assert_page(arr: np.ndarray, size: tuple[int, int] = (64, 48), tol: int = 40) -> None:
    """RGB uint8 of the right shape, dark top-left, white bottom-right (lossy codecs within tol)."""
    assert arr.dtype == np.uint8 and arr.shape == (size[1], size[0], 3)
    assert arr[2, 2].max() <= tol, arr[2, 2]
    assert arr[-3, -3].min() >= 255 - tol, arr[-3, -3]


def refused(data: bytes, limits: Limits = LIMITS) -> ClientError:
    with pytest.raises(ClientError) as info:
        decode(data, limits)
    return info.value


@pytest.mark.parametrize(
    "fmt,params",
    [
        ("JPEG", {"quality": 95}),
        ("JPEG", {"quality": 95, "progressive": True}),
        ("PNG", {}),
        ("WEBP", {"quality": 95}),
        ("WEBP", {"lossless": True}),
        ("BMP", {}),
        ("TIFF", {}),
        ("TIFF", {"compression": "tiff_lzw"}),
        ("GIF", {}),
    ],
    ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={w}" for k, w in v.items()),
)
def test_accepted_formats(fmt: str, params: dict) -> None:
    assert_page(decode(encode(sample(), fmt, **params), LIMITS))


@pytest.mark.parametrize("mode", ["L", "1", "P", "LA", "RGBA", "I;16"])
def test_png_modes(mode: str) -> None:
    img = sample("L").point(lambda v: v * 257, "I").convert("I;16") if mode == "I;16" else sample(mode)
    data = encode(img, "PNG")
    assert Image.open(io.BytesIO(data)).mode == mode
    assert_page(decode(data, LIMITS))


def test_16bit_grey_keeps_mid_tones() -> None:
    """Pillow's own convert clips 16-bit grey at 255 (white page); the decoder keeps the grey level."""
    for fmt, mode, dtype in (("PNG", "I;16", "<u2"), ("TIFF", "I;16B", ">u2")):
        img = Image.frombytes(mode, (8, 8), np.full((8, 8), 0x8000, dtype).tobytes())
        data = encode(img, fmt)
        assert Image.open(io.BytesIO(data)).mode == mode
        assert (decode(data, LIMITS) == 0x80).all(), fmt


def test_16bit_rgb_png() -> None:
    rgb16 = np.zeros((48, 64, 3), np.uint16) + 65535
    rgb16[:24, :32] = 0
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb16)
    data = png_header(64, 48, depth=16, colour=2) + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b"")
    assert_page(decode(data, LIMITS))


def test_transparency_is_white_paper() -> None:
    """Black text on a transparent background stays readable: clear pixels become white, not black."""
    img = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    img.paste((0, 0, 0, 255), (0, 0, 32, 24))
    assert_page(decode(encode(img, "PNG"), LIMITS))
    pal = sample("P")
    assert_page(decode(encode(pal, "PNG", transparency=pal.getpixel((60, 40))), LIMITS))


def test_cmyk_jpeg_colours() -> None:
    patches = {(0, 255, 255, 0): (255, 0, 0), (255, 0, 255, 0): (0, 255, 0), (0, 0, 0, 0): (255, 255, 255)}
    for cmyk, rgb in patches.items():
        data = encode(Image.new("CMYK", (16, 16), cmyk), "JPEG", quality=95)
        assert Image.open(io.BytesIO(data)).mode == "CMYK"
        got = decode(data, LIMITS)[8, 8].astype(int)
        assert np.abs(got - rgb).max() <= 8, (cmyk, got)


@pytest.mark.parametrize("orientation,viewer_corner", [(1, (0, 0)), (3, (-1, -1)), (6, (0, -1)), (8, (-1, 0))])
def test_exif_orientation(orientation: int, viewer_corner: tuple[int, int]) -> None:
    """A phone photo stored landscape with Orientation=6 is shown portrait, dark corner moved."""
    img = Image.new("RGB", (80, 40), "white")
    img.paste((0, 0, 0), (0, 0, 8, 8))  # stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = orientation
    arr = decode(encode(img, "JPEG", quality=95, exif=exif.tobytes()), LIMITS)
    assert arr.shape == ((40, 80, 3) if orientation in (1, 3) else (80, 40, 3))
    row, col = viewer_corner
    assert arr[row * 3 + (row >= 0), col * 3 + (col >= 0)].max() < 40  # dark where a viewer draws it
    assert arr[arr.shape[0] // 2, arr.shape[1] // 2].min() > 215


def test_first_tiff_page_and_gif_frame() -> None:
    pages = [sample(), Image.new("RGB", (64, 48), "black"), Image.new("RGB", (64, 48), "red")]
    for fmt in ("TIFF", "GIF"):
        data = encode(pages[0], fmt, save_all=True, append_images=pages[1:])
        assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 3, fmt
        assert_page(decode(data, LIMITS))


def test_decompression_bomb_refused_without_allocating() -> None:
    """A real 60000x60000 PNG (3.6 GP, ~450 kB) is refused from its header; pixel memory never appears."""
    side = 60000
    row = b"\x00" * (1 + side // 8)  # 1-bit grey: filter byte + packed pixels
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row * 1000) for _ in range(side // 1000)) + z.flush()
    bomb = png_header(side, side, depth=1) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    assert len(bomb) < 1_000_000
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    err = refused(bomb)
    # Inflating 3.6 GP takes many seconds even on a fast core; a header check takes microseconds.
    # The bound is loose because two shared cores may stall any process for a second or more.
    assert time.monotonic() - start < 5.0
    assert (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) * 1024 < 50_000_000
    assert err.status == 413 and err.code == "image_too_large" and "downscale" in err.message


@pytest.mark.parametrize("size", [(8000, 6000), (20000, 10)])
def test_pixel_and_side_limits_from_header(size: tuple[int, int]) -> None:
    """Over max_pixels (48 MP > 40 MP) or over max_side: refused before decoding, as a header only."""
    err = refused(png_header(*size) + png_chunk(b"IEND", b""), Limits(max_pixels=40_000_000, max_side=16384))
    assert err.status == 413 and f"{size[0]}x{size[1]}" in err.message


def test_limits_come_from_the_caller() -> None:
    data = encode(sample(), "PNG")
    assert refused(data, Limits(max_pixels=1000)).status == 413
    assert refused(data, Limits(max_side=50)).status == 413
    assert decode(data, Limits(max_pixels=64 * 48, max_side=64)).shape == (48, 64, 3)


@pytest.mark.parametrize(
    "fmt,img,params",
    [
        ("PDF", sample(), {}),
        ("ICO", sample(), {}),
        ("PPM", sample(), {}),
        ("TGA", sample(), {}),
    ],
    ids=["pdf", "ico", "ppm", "tga"],
)
def test_other_formats_get_415(fmt: str, img: Image.Image, params: dict) -> None:
    err = refused(encode(img, fmt, **params))
    assert err.status == 415 and err.code == "unsupported_media_type"
    assert "image/jpeg" in err.message and "image/gif" in err.message


@pytest.mark.parametrize("data", [b"hello, I am text", b"%PDF-1.4\n", b"<svg xmlns='http://www.w3.org/2000/svg'/>"])
def test_non_images_get_415(data: bytes) -> None:
    assert refused(data).status == 415


def test_empty_file() -> None:
    err = refused(b"")
    assert err.status == 400 and err.code == "empty_image"


@pytest.mark.parametrize("size", [(0, 10), (10, 0)])
def test_zero_sized_image(size: tuple[int, int]) -> None:
    err = refused(png_header(*size) + png_chunk(b"IDAT", zlib.compress(b"")) + png_chunk(b"IEND", b""))
    assert err.status == 400 and "zero-sized" in err.message and "PNG" in err.message
    gif = bytearray(encode(sample(), "GIF"))
    gif[6:10] = struct.pack("<HH", *size)  # logical screen size
    gif[gif.index(b"\x2c") + 5 : gif.index(b"\x2c") + 9] = struct.pack("<HH", *size)  # first frame size
    err = refused(bytes(gif))
    assert err.status == 400 and ("zero-sized" in err.message or "0x" in err.message or "x0 " in err.message)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_truncated_files_get_400(fmt: str, keep: float) -> None:
    data = encode(sample(size=(200, 150)), fmt)
    err = refused(data[: max(16, int(len(data) * keep))])
    assert err.status == 400 and err.code == "corrupt_image" and "re-export" in err.message, (fmt, keep)


def test_garbage_after_a_real_header_gets_400() -> None:
    err = refused(png_header(64, 48, depth=8, colour=2) + png_chunk(b"IDAT", b"not zlib at all") + png_chunk(b"IEND", b""))
    assert err.status == 400 and err.code == "corrupt_image" and "PNG" in err.message
