"""Helpers for the tests that attack the real stack: raw HTTP on loopback, bad bodies, uWSGI stats.

Raw sockets rather than an HTTP library, because the point is to send what a library refuses to:
lying headers, no boundary, a body that stalls, a header too large.
"""

from __future__ import annotations

import io
import json
import random
import socket
import time
from dataclasses import dataclass

from PIL import Image, ImageDraw

from tests import pdfs
from tests.support import BOUNDARY, multipart

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
MEDIA = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "BMP": "image/bmp",
         "TIFF": "image/tiff", "GIF": "image/gif"}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float  # from sending to the answer's first byte

    def json(self) -> dict:
        return json.loads(self.body)


def request(host: str, port: int, method: str, path: str, headers: dict[str, str] | None = None,
            body: bytes = b"", timeout: float = 30.0, raw_head: bytes | None = None) -> Reply:
    """One request on a fresh connection (Connection: close), read to the end. `raw_head` replaces
    the request line and headers byte for byte; otherwise Host, Content-Length and Connection are added."""
    if raw_head is None:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
        hdrs = {"Content-Length": str(len(body)), **(headers or {})}
        lines += [f"{k}: {v}" for k, v in hdrs.items()]
        raw_head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    start = time.monotonic()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(raw_head + body)
        return read_reply(sock, start)


def read_reply(sock: socket.socket, start: float) -> Reply:
    data = sock.recv(65536)
    seconds = time.monotonic() - start  # to the first byte: a lingering close is not the answer's time
    while not complete(data) and (chunk := sock.recv(65536)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return Reply(int(status_line.split()[1]), headers, body, seconds)


def complete(data: bytes) -> bool:
    """The answer is whole by its Content-Length: stop reading (Nginx lingers after an early answer
    while the client still owes it a body)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if sep and name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


def dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


def page(size: tuple[int, int] = (96, 40), text: str = "Hi 42") -> Image.Image:
    img = Image.new("RGB", size, "white")
    ImageDraw.Draw(img).text((8, 12), text, fill="black")
    return img


def encoded(fmt: str, img: Image.Image | None = None) -> bytes:
    buf = io.BytesIO()
    (img or page()).save(buf, fmt)
    return buf.getvalue()


def documents() -> dict[str, bytes]:
    """Small real documents to mutate: a scanned PDF, a born-digital one, a 3-page TIFF."""
    return {
        "scanned_pdf": pdfs.scanned_pdf([page(), page(text="Yo 7")], resolution=72),
        "text_pdf": pdfs.born_digital_pdf([["Hi 42"], ["page two"]], size=(160, 80), font_size=10),
        "tiff_pages": pdfs.multipage_tiff([page(), page(text="B 2"), page(text="C 3")]),
    }


def bad_bodies(count: int, seed: int = 4) -> list[tuple[str, dict[str, str], bytes]]:
    """`count` (kind, headers, body) cases: random bytes, bit-flipped and truncated real images,
    and bodies whose headers lie about them. Deterministic for a seed, so a failure replays."""
    rng = random.Random(seed)
    reals = {fmt: encoded(fmt) for fmt in FORMATS}
    docs = documents()
    ctypes = [*MEDIA.values(), "image/x-nonsense", "application/octet-stream", "text/plain", "", "image/",
              "multipart/form-data", "multipart/form-data; boundary=", "application/json"]
    cases: list[tuple[str, dict[str, str], bytes]] = []
    makers = ["random", "flipped", "truncated", "lying_type", "multipart_mangled", "multipart_misnamed",
              "multipart_many", "document_flipped", "document_truncated", "document_spliced"]
    for number in range(count):
        kind = makers[number % len(makers)]
        fmt = rng.choice(FORMATS)
        real = reals[fmt]
        if kind == "random":
            body = rng.randbytes(rng.randint(0, 4096))
            cases.append((kind, {"Content-Type": rng.choice(ctypes)}, body))
        elif kind == "flipped":
            data = bytearray(real)
            # Uncompressed BMP/TIFF pixels decode whatever their bits: only their headers are worth flipping.
            span = 128 if fmt in ("BMP", "TIFF") else len(data)
            for _ in range(rng.randint(1, 12)):
                data[rng.randrange(span)] ^= 1 << rng.randrange(8)
            cases.append((f"{kind}:{fmt}", {"Content-Type": MEDIA[fmt]}, bytes(data)))
        elif kind == "truncated":
            cases.append((f"{kind}:{fmt}", {"Content-Type": MEDIA[fmt]}, real[: rng.randrange(len(real))]))
        elif kind == "lying_type":
            body = rng.choice([real, rng.randbytes(200), b"<html>" * 20, b"%PDF-1.4\n" + rng.randbytes(64)])
            cases.append((kind, {"Content-Type": rng.choice(ctypes)}, body))
        elif kind == "multipart_mangled":
            body, ctype = multipart([("image", f"x.{fmt.lower()}", real, MEDIA[fmt])])
            data = bytearray(body)
            for _ in range(rng.randint(1, 6)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            ctype = rng.choice([ctype, ctype.replace(BOUNDARY, "otherBoundary"), "multipart/form-data"])
            cases.append((kind, {"Content-Type": ctype}, bytes(data[: rng.randint(len(data) // 2, len(data))])))
        elif kind == "multipart_misnamed":
            field = rng.choice(["img", "images", "upload", "", "IMAGE", "image[]"])
            body, ctype = multipart([(field, "x.png", real, MEDIA[fmt])])
            cases.append((kind, {"Content-Type": ctype}, body))
        elif kind.startswith("document_"):
            name = rng.choice(sorted(docs))
            data = bytearray(docs[name])
            ctype = "image/tiff" if name.startswith("tiff") else "application/pdf"
            if kind == "document_flipped":
                for _ in range(rng.randint(1, 12)):
                    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            elif kind == "document_truncated":
                del data[rng.randrange(len(data)):]
            else:  # a run of bytes replaced: objects, xref entries or directory offsets pointing anywhere
                at = rng.randrange(len(data))
                data[at:at + rng.randint(1, 64)] = rng.randbytes(rng.randint(0, 64))
            cases.append((f"{kind}:{name}", {"Content-Type": ctype}, bytes(data)))
        else:  # many parts, some empty, some not images
            parts = [("image", f"{i}.bin", rng.choice([b"", rng.randbytes(50), real[:40]]), "image/png")
                     for i in range(rng.randint(2, 12))]
            body, ctype = multipart(parts)
            cases.append((kind, {"Content-Type": ctype}, body))
    return cases


def uwsgi_stats(port: int) -> dict:
    """The uWSGI stats server's JSON (it writes it and closes the connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return json.loads(data)


def workers(stats_ports: list[int]) -> dict[tuple[int, int], dict]:
    """(stats port, worker id) -> {pid, respawn_count, rss} for every worker of every instance."""
    out = {}
    for port in stats_ports:
        for w in uwsgi_stats(port)["workers"]:
            out[(port, w["id"])] = {"pid": w["pid"], "respawn_count": w["respawn_count"], "rss": w["rss"]}
    return out
