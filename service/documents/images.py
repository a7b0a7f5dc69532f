"""Decoding uploaded bytes into RGB pixels, refusing what is hostile or broken before it costs memory.

Every image enters the service here, from HTTP and from the CLI alike, so that both see the same
pixels (EXIF orientation applied, any mode converted to 8-bit RGB over white) and the same limits.
The size is read from the header by `Image.open`, which decodes no pixel: a decompression bomb is
refused before its pixels are allocated. Failures are `ClientError`s whose message says what to fix.
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ClientError
from ..settings import Limits

# Pillow format name -> media type. Image.open tries only these decoders, so every other format
# (and every non-image) is refused by the same path, without any other plugin parsing it.
ACCEPTED: dict[str, str] = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "GIF": "image/gif",
}
# Every type an upload may be, a PDF first (service/documents/pdf.py reads those): what a 415 lists.
ACCEPTED_LIST = ", ".join(("application/pdf", *ACCEPTED.values()))
EXIF_ORIENTATION = 0x0112


def decode(data: bytes, limits: Limits) -> np.ndarray:
    """Bytes of an image file -> RGB uint8 array of shape (H, W, 3), as a viewer shows it.

    Raises ClientError: 400 for empty, truncated or corrupt files and zero-sized images, 413 for images
    past the pixel or side limit, 415 for anything that is not one of the accepted formats.
    """
    with open_image(data, limits) as img:
        img.seek(0)
        try:
            return _to_rgb(img)
        except MemoryError:
            raise
        except Exception as err:  # truncated data, bad Huffman tables, broken EXIF, odd modes...
            raise _corrupt(img.format or "image", err) from None


def open_image(data: bytes, limits: Limits) -> Image.Image:
    """The file opened by Pillow (header only, no pixel decoded), its first page's size checked."""
    if not data:
        raise ClientError(400, "empty_image", "the image file is empty (0 bytes); attach the file's contents")
    try:
        with warnings.catch_warnings():
            # Pillow warns about large images at open; check_size below refuses them with our limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=list(ACCEPTED))
    except UnidentifiedImageError:
        raise _unidentified(data) from None
    except Image.DecompressionBombError as err:
        raise _too_large(str(err), limits) from None
    except Exception as err:  # any parser failure on client bytes is a broken file, not our fault
        raise _corrupt("image", err) from None
    try:
        check_size(img.size, limits)
    except ClientError:
        img.close()
        raise
    return img


def tiff_frames(data: bytes, limits: Limits) -> int:
    """How many pages an image holds: a TIFF's frames, 1 for any other accepted format (a GIF's
    frames are an animation, not pages), from the headers alone; refusals as `decode` words them.

    Pillow finds frame N by walking the chain of image directories, so the count stops at
    `max_document_pages` + 1: a file of a million empty directories is refused in as many steps."""
    with open_image(data, limits) as img:
        if img.format != "TIFF":
            return 1
        count = 1
        while count <= limits.max_document_pages:
            try:
                img.seek(count)
            except EOFError:
                return count
            except Exception as err:  # a broken directory chain: the pages before it are readable
                raise _corrupt(f"TIFF page {count + 1} of the", err) from None
            count += 1
    raise ClientError(413, "too_many_pages",
                      f"the TIFF has more than {limits.max_document_pages:,} pages, the most a document may "
                      "have; split it")


def tiff_page(data: bytes, index: int, limits: Limits) -> bytes:
    """Frame `index` of a multi-page TIFF as a TIFF of its own, pixels unchanged (lossless)."""
    out = io.BytesIO()
    Image.fromarray(decode_frame(data, index, limits)).save(out, format="TIFF", compression="tiff_deflate")
    return out.getvalue()


def decode_frame(data: bytes, index: int, limits: Limits) -> np.ndarray:
    """Page `index` (0-based) of a multi-page TIFF as RGB, with the same checks as `decode`."""
    if index == 0:
        return decode(data, limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=["TIFF"])
            img.seek(index)
    except Image.DecompressionBombError as err:
        raise _too_large(f"page {index + 1}: {err}", limits) from None
    except Exception as err:
        raise _corrupt(f"TIFF page {index + 1} of the", err) from None
    with img:
        check_size(img.size, limits)
        try:
            return _to_rgb(img)
        except MemoryError:
            raise
        except Exception as err:
            raise _corrupt(f"TIFF page {index + 1} of the", err) from None


def check_size(size: tuple[int, int], limits: Limits) -> None:
    """Refuse a zero-sized image, or one past the pixel or side limit, from its header size alone."""
    width, height = size
    if width <= 0 or height <= 0:
        raise ClientError(400, "empty_image", f"the image is {width}x{height} pixels; send an image with content")
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        raise _too_large(f"the image is {width}x{height} pixels", limits)


def _to_rgb(img: Image.Image) -> np.ndarray:
    """The current frame (first unless the caller seeks), upright, in 8-bit RGB; transparency
    shows as white paper."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B"):
        # 16-bit grey: Pillow's convert("RGB") clips at 255 (all white); keep the top 8 bits.
        grey = (np.asarray(img).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(paper, rgba).convert("RGB"))
    return np.asarray(img.convert("RGB"))


def _unidentified(data: bytes) -> ClientError:
    """Pillow opened nothing: a file that starts like an accepted format is broken (400), else 415."""
    Image.init()
    for fmt in ACCEPTED:
        if Image.OPEN[fmt][1](data[:16]):
            return ClientError(
                400,
                "corrupt_image",
                f"the file starts like a {fmt} image but its header is invalid: it is zero-sized, truncated "
                "or corrupt; re-export it and upload the whole file",
            )
    return ClientError(415, "unsupported_media_type", f"neither a PDF nor a supported image; send one of: {ACCEPTED_LIST}")


def _too_large(detail: str, limits: Limits) -> ClientError:
    return ClientError(
        413,
        "image_too_large",
        f"{detail}; the limit is {limits.max_pixels:,} pixels and {limits.max_side} pixels per side: "
        "downscale it",
    )


def _corrupt(kind: str, err: Exception) -> ClientError:
    return ClientError(
        400,
        "corrupt_image",
        f"the {kind} file could not be decoded ({type(err).__name__}: {err}); it is truncated or corrupt, "
        "re-export it and upload the whole file",
    )


def decode_page(data: bytes, limits: Limits,
                grey: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Every caller's decode step: the RGB page, plus its file-decoded grey when the model reads
    grey (OcrModel.reads_grey), else None."""
    rgb = decode(data, limits)
    return rgb, decode_grey(data, rgb) if grey else None


def decode_grey(data: bytes, rgb: np.ndarray) -> np.ndarray | None:
    """The file decoded straight to grey by OpenCV, for recognizers measured on that (EasyOCR's).

    EasyOCR reads the recognizer's page with cv2.imread(IMREAD_GRAYSCALE): libjpeg and libpng
    convert to grey themselves, which differs from converting RGB on many pixels and changes
    a few reads. Call only after `decode` accepted the bytes (it checked the size from the
    header). None when OpenCV reads another shape (a format it treats otherwise), or when
    the file carries an EXIF rotation: the caller then converts `rgb`.
    """
    with Image.open(io.BytesIO(data)) as img:
        if img.getexif().get(EXIF_ORIENTATION, 1) != 1:
            return None  # two decoders' rotations are not worth trusting to agree
    grey = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if grey is None or grey.shape != rgb.shape[:2]:
        return None
    return grey
