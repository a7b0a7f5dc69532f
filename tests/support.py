"""Builders the test modules share: rendered pages, PNG bytes and chunks, multipart bodies, and an
in-process app client. Test modules import from here (and from tests/stack.py, tests/hostile.py),
never from each other, so that each one can be read and run alone.
"""

from __future__ import annotations

import dataclasses
import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from service import settings as settings_mod
from service.settings import ROOT, AuthSettings, Limits
from service.web.app import create_app
from service.web.state import WorkerState
from tests.stack import default_family

FONT_PATHS = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
)

# Fixed, so that generated bodies are the same for a seed (tests/hostile.py's fuzz replays them).
BOUNDARY = "parseTestBoundary7MA4YWxk"


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for path in FONT_PATHS:
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def render_lines(lines: list[str], size: int = 32, margin: int = 40, gap: int = 24) -> np.ndarray:
    """Black text on white, one string per row: an RGB uint8 page whose true content we know."""
    font = _font(size)
    widths = [font.getbbox(text)[2] for text in lines]
    height = margin * 2 + len(lines) * (size + gap)
    img = Image.new("RGB", (max(widths) + margin * 2, height), "white")
    draw = ImageDraw.Draw(img)
    for row, text in enumerate(lines):
        draw.text((margin, margin + row * (size + gap)), text, fill="black", font=font)
    return np.asarray(img)


def receipt_page() -> np.ndarray:
    """A receipt-like page of a dozen lines: the "real page" of the load tests and bench-load."""
    return render_lines([f"Item {i:02d} coffee beans  {i * 3}.50" for i in range(12)], size=24)


def png(array: np.ndarray) -> bytes:
    """An RGB uint8 array as PNG file bytes (lossless: the decoder gets exactly these pixels)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk with its CRC, for files Pillow would refuse to write (bombs, zero sizes)."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_header(width: int, height: int, depth: int = 8, colour: int = 0) -> bytes:
    """The PNG signature and an IHDR that claims these dimensions, whatever follows."""
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))


def multipart(parts: list[tuple[str, str, bytes, str]], boundary: str = BOUNDARY) -> tuple[bytes, str]:
    """(field, filename, bytes, content type) parts -> (body, Content-Type header value)."""
    out = io.BytesIO()
    for field, filename, data, ctype in parts:
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                  f"Content-Type: {ctype}\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def words(text: str) -> set[str]:
    """The lower-case words and numbers of a read: OCR tests compare these, not exact spacing."""
    return set(re.findall(r"[a-z0-9.]+", text.lower()))


def sha256sums() -> dict[str, str]:
    """weights/SHA256SUMS as {file name: sum}: what a served model must report for its weights."""
    lines = (ROOT / "weights" / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split() for line in lines if line.strip())}


# The route's answer while the model is unloaded: every check before the route let the request in.
PASSED = 503


def make_client(tmp_path: Path, keys: bool = True, limits: Limits | None = None, allow: tuple[str, ...] = ()):
    """A test client of the real app with no model loaded: auth and guards run, the route answers 503."""
    cfg = settings_mod.load()
    cfg = dataclasses.replace(
        cfg,
        auth=AuthSettings(keys_file=tmp_path / "keys" if keys else None, metrics_allow=allow),
        limits=limits or cfg.limits,
    )
    return create_app(cfg, load=False).test_client()


def default_config() -> settings_mod.Settings:
    """conf/parse.toml as shipped, with the family the tests run (PARSE_TEST_FAMILY may pick another)."""
    base = settings_mod.load(settings_mod.DEFAULT_CONFIG)
    return dataclasses.replace(base, model=dataclasses.replace(base.model, family=default_family()))


def loaded_app(cfg: settings_mod.Settings | None = None):
    """The real app with its models loaded in-process, synchronously: the routes answer for real."""
    app = create_app(cfg or default_config(), load=False)
    state = app.extensions[WorkerState.KEY]
    state.load()
    assert state.ready.is_set(), state.error
    return app


def parse(client, key: str | None = None, address: str = "127.0.0.1", **kw):
    """POST /v1/parse through a test client, with a bearer key and a client address when given."""
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    headers.update(kw.pop("headers", {}))
    kw.setdefault("data", b"\x89PNG....")
    kw.setdefault("content_type", "image/png")
    return client.post("/v1/parse", headers=headers, environ_base={"REMOTE_ADDR": address}, **kw)
