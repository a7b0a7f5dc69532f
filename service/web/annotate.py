"""Results as files: `POST /v1/parse?annotate=1` draws each image with its line quads into a PNG.

The PNG goes into the results folder ([results] in conf/parse.toml) under a random, unguessable
name, and Nginx serves it at /results/<id>.png (only names of that shape: no listing, nothing else).

The folder looks after itself on every write: files older than `ttl_seconds` are deleted, then
the oldest files go until the new one fits under `max_bytes`. That sweep is one directory scan
and one stat per file. At the default cap (256 MiB of PNGs, a few thousand files at most) it
costs about a millisecond, beside the hundreds the OCR itself takes. Nginx serves a file for as
long as it exists, so expiry must not wait for the next write: each worker also sweeps from a
daemon thread every tenth of the TTL (5 s to 60 s), and a result is gone at most that long after
it expired. Several workers may sweep at once: a file another one already deleted is skipped.
"""

from __future__ import annotations

import io
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..ocr.types import Quad
from ..settings import ResultsSettings

log = logging.getLogger(__name__)

URL_PREFIX = "/results/"
# 16 random bytes: 128 bits, 22 URL-safe characters. Nginx serves exactly this alphabet.
ID_BYTES = 16
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22}$")
# Files being written carry this prefix; the Nginx location never matches a leading dot.
TMP_PREFIX = ".tmp-"

# Box colours cycle so that neighbouring lines stay apart; the same order as the web page's.
COLORS = ((37, 99, 235), (220, 38, 38), (5, 150, 105), (217, 119, 6), (124, 58, 237), (8, 145, 178))

def new_id() -> str:
    """A result id nobody can guess: 128 bits from the OS's CSPRNG, URL-safe."""
    return secrets.token_urlsafe(ID_BYTES)


def draw(image: np.ndarray, quads: Iterable[Quad]) -> Image.Image:
    """The RGB image with each quad outlined over a light tint of the same colour."""
    img = Image.fromarray(image).convert("RGB")
    # An "RGBA" pen blends the tint straight into the RGB pixels: no second full-size layer,
    # which matters at the 40-megapixel limit.
    pen = ImageDraw.Draw(img, "RGBA")
    # Outlines stay visible on large scans and do not swamp small crops.
    width = max(2, round(max(img.size) / 400))
    for i, quad in enumerate(quads):
        points = [(float(x), float(y)) for x, y in quad]
        color = COLORS[i % len(COLORS)]
        pen.polygon(points, fill=(*color, 40), outline=(*color, 255), width=width)
    return img


def encode_png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    # Level 3 is several times faster than the default 6 for a few percent more bytes.
    img.save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def sweep(folder: Path, ttl_seconds: float, max_bytes: int, reserve: int = 0,
          now: float | None = None) -> int:
    """Delete expired files, then the oldest ones until `reserve` more bytes fit under `max_bytes`.

    Returns the bytes the folder holds afterwards. Half-written files of a crashed writer count
    and expire like the rest.
    """
    now = time.time() if now is None else now
    kept: list[tuple[float, int, str]] = []
    total = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # another worker swept it first
        if not entry.is_file(follow_symlinks=False):
            continue
        if now - st.st_mtime > ttl_seconds:
            _unlink(entry.path)
            continue
        kept.append((st.st_mtime, st.st_size, entry.path))
        total += st.st_size
    kept.sort()
    for _, size, path in kept:
        if total + reserve <= max_bytes:
            break
        _unlink(path)
        total -= size
    return total


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def write_png(data: bytes, results: ResultsSettings) -> str | None:
    """Store PNG bytes under a new id after making room; its URL, or None when it can never fit."""
    if len(data) > results.max_bytes:
        log.warning("annotated PNG of %d bytes is over [results] max_bytes=%d; not kept",
                    len(data), results.max_bytes)
        return None
    folder = Path(results.dir)
    folder.mkdir(parents=True, exist_ok=True)
    sweep(folder, results.ttl_seconds, results.max_bytes, reserve=len(data))
    result_id = new_id()
    final = folder / f"{result_id}.png"
    tmp = folder / f"{TMP_PREFIX}{result_id}"
    # Written aside, then renamed: Nginx never serves a partial file. 0644 so that Nginx's
    # user can read what the service's user wrote.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, final)
    except BaseException:
        _unlink(str(tmp))
        raise
    return URL_PREFIX + final.name


def annotate(image: np.ndarray, quads: Iterable[Quad], results: ResultsSettings) -> str | None:
    """Draw `quads` over `image`, keep it as a result file, and return its URL (/results/<id>.png)."""
    return write_png(encode_png(draw(image, quads)), results)


def sweep_interval(ttl_seconds: float) -> float:
    """Seconds between background sweeps: a tenth of the TTL, within 5 s and a minute."""
    return min(60.0, max(5.0, ttl_seconds / 10))


def start_sweeper(results: ResultsSettings, interval: float | None = None,
                  stop: threading.Event | None = None) -> threading.Thread:
    """Sweep the results folder every `interval` seconds from a daemon thread, until `stop` is set.

    The app starts one per worker (uWSGI lazy-apps: after fork), so expiry holds even when no
    request writes a result.
    """
    period = sweep_interval(results.ttl_seconds) if interval is None else interval
    stop = stop or threading.Event()

    def loop() -> None:
        while not stop.wait(period):
            try:
                sweep(Path(results.dir), results.ttl_seconds, results.max_bytes)
            except OSError:
                log.exception("sweeping %s failed; trying again in %.0f s", results.dir, period)

    thread = threading.Thread(target=loop, name="results-sweep", daemon=True)
    thread.start()
    return thread
