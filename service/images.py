"""Decoding uploaded bytes into RGB pixels.

Every image enters the service here, from HTTP and from the CLI alike, so that both see the same
pixels: EXIF orientation applied, any mode converted to 8-bit RGB.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps


def decode(data: bytes) -> np.ndarray:
    """Bytes of an image file -> RGB uint8 array of shape (H, W, 3), as a viewer shows it."""
    with Image.open(io.BytesIO(data)) as img:
        img = ImageOps.exif_transpose(img)
        return np.asarray(img.convert("RGB"))
