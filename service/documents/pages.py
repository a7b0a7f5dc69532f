"""How many pages an upload holds, read from its header without rendering a pixel.

A job is planned page by page before any page is read (service/jobs/), so its size is known at
submit time and checked against [jobs] max_pages. A multi-page TIFF counts its frames; every other
accepted image is one page. The errors are the decoder's own, so a file refused here is refused
with the same message as by /v1/parse.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from ..errors import ClientError
from ..settings import Limits
from .images import ACCEPTED, _corrupt, _too_large, _unidentified, check_size


def count_pages(data: bytes, limits: Limits) -> int:
    """Pages in one uploaded file: TIFF frames, else 1. Raises ClientError for bad input."""
    if not data:
        raise ClientError(400, "empty_image", "the image file is empty (0 bytes); attach the file's contents")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=list(ACCEPTED))
    except UnidentifiedImageError:
        raise _unidentified(data) from None
    except Image.DecompressionBombError as err:
        raise _too_large(str(err), limits) from None
    except Exception as err:
        raise _corrupt("image", err) from None
    with img:
        check_size(img.size, limits)
        if img.format != "TIFF":
            return 1
        try:
            # Counting walks the IFD chain (headers only); a broken chain is a corrupt file.
            return int(getattr(img, "n_frames", 1))
        except Exception as err:
            raise _corrupt("TIFF", err) from None
