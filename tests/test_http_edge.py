"""The HTTP edge: raw bytes through a socket to the real Nginx of a real stack (uWSGI + app).

Scanners send whatever they like before a request even parses. Every answer must be a JSON 4xx
in the app's error shape, {"error": {"code", "message"}}, or a close without a byte (HTTP/0.9,
to which Nginx could write no status line, and requests that end before they are whole) - never
a 5xx and never Nginx's HTML. The access log must hold each request as sent (its request line,
its method) with the status sent. conf/nginx/parse.conf says which error page takes which status,
and why.

One small stack (one instance, one worker) for the module. Cases are byte strings, so a failure
names the exact request to replay.
"""

from __future__ import annotations

import collections
import json
import random
import socket
import ssl
import time
from dataclasses import dataclass, field

import pytest

from tests.hostile import dechunk
from tests.stack import Stack

pytestmark = pytest.mark.stack

HOST = b"parse.test"  # the Host every case sends unless it is about the Host header
CLOSED = "closed"     # the expectation: Nginx closes the connection without a byte
# Nginx's first read is client_header_buffer_size (1 KiB); a line that fails past it is logged as
# far as Nginx read it.
FIRST_READ = 1024
# A case that gets no answer within this long fails: nothing may hang.
ANSWER_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def edge(stack_factory) -> Stack:
    return stack_factory([{"processes": 1, "threads": 1}])


def addr(stack: Stack) -> tuple[str, int]:
    host, port = stack.cfg.nginx.listen.split(":")
    return host, int(port)


# --- sending bytes and reading what comes back -------------------------------------------------

@dataclass
class Answer:
    raw: bytes                      # every byte received
    status: int | None = None       # None: closed without a byte
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def split_head(data: bytes) -> tuple[bytes, bytes] | None:
    """(head, rest) of the first final answer in `data`, skipping interim 1xx answers (100 Continue)."""
    while True:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            return None
        if head.startswith(b"HTTP/1.1 1"):
            data = rest
            continue
        return head, rest


def parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers


def whole(data: bytes, head_request: bool) -> bool:
    """The answer is whole: stop reading (Nginx lingers, reading what a refused client still sends)."""
    parts = split_head(data)
    if parts is None:
        return False
    head, rest = parts
    status, headers = parse_head(head)
    if head_request or status in (204, 304):
        return True
    if headers.get("transfer-encoding") == "chunked":
        return rest.endswith(b"0\r\n\r\n")
    if "content-length" in headers:
        return len(rest) >= int(headers["content-length"])
    return False  # no length: the answer ends with the connection


def exchange(stack: Stack, data: bytes, half_close: bool = False) -> Answer:
    """Send `data` on a fresh connection and read the answer. `half_close` ends the client's side
    after sending, for requests that are not whole (Nginx would wait for the rest)."""
    received = b""
    with socket.create_connection(addr(stack), timeout=ANSWER_TIMEOUT_S) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused while still sending: what came back is the answer
        head_request = first_line(data).startswith(b"HEAD ")
        try:
            while not whole(received, head_request) and (chunk := sock.recv(65536)):
                received += chunk
        except ConnectionResetError:
            pass  # judged below: a reset may only follow a whole answer, or nothing
        except socket.timeout:
            pytest.fail(f"no answer within {ANSWER_TIMEOUT_S} s to {data[:200]!r}")
    answer = Answer(received)
    if parts := split_head(received):
        answer.status, answer.headers = parse_head(parts[0])
        answer.body = dechunk(parts[1]) if answer.headers.get("transfer-encoding") == "chunked" else parts[1]
    return answer


def first_line(data: bytes) -> bytes:
    """The request line as Nginx logs it ($request): leading empty lines skipped, up to CR or LF."""
    line = data.lstrip(b"\r\n")
    ends = [i for i in (line.find(b"\r"), line.find(b"\n")) if i >= 0]
    return line[:min(ends)] if ends else line


def check_answer(sent: bytes, answer: Answer) -> str | None:
    """Why `answer` breaks the rule (a JSON 4xx in the app's error shape, or a close without a
    byte), or None when it keeps it."""
    if b"<html" in answer.raw.lower():
        return "an HTML page"
    if not answer.raw:
        return None
    if answer.status is None:
        return "bytes that are not an HTTP/1.x answer (an HTTP/0.9 answer has no status line)"
    if not 400 <= answer.status < 500:
        return f"status {answer.status}"
    if not answer.headers.get("content-type", "").startswith("application/json"):
        return f"Content-Type {answer.headers.get('content-type')!r}"
    if answer.headers.get("x-content-type-options") != "nosniff":
        return "no X-Content-Type-Options: nosniff"
    if not answer.headers.get("x-request-id"):
        return "no X-Request-ID"
    if not answer.body:
        return None if first_line(sent).startswith(b"HEAD ") else "an empty body"
    try:
        error = json.loads(answer.body)["error"]
    except (ValueError, KeyError, TypeError):
        return f"a body that is not the JSON error: {answer.body[:200]!r}"
    if set(error) != {"code", "message"} or not all(isinstance(v, str) and v for v in error.values()):
        return f"an error object of another shape: {error}"
    return None


# --- the access log ----------------------------------------------------------------------------

def access_log(stack: Stack) -> list[dict]:
    """The access log's entries. Nginx's escape=json escapes control bytes but writes bytes from
    0x80 up as they came, so lines are not always UTF-8: undecodable bytes become surrogates,
    and .encode("utf-8", "surrogateescape") gives the bytes back. A line Nginx is still writing
    has no newline yet: it is left for the next read."""
    data = (stack.layout.logs / "access.json").read_bytes()
    lines = data[:data.rfind(b"\n") + 1].splitlines()
    return [json.loads(line.decode("utf-8", "surrogateescape")) for line in lines]


def logged_line(entry: dict) -> bytes:
    return entry["request"].encode("utf-8", "surrogateescape")


def line_matches(sent: bytes, entry: dict) -> bool:
    """The entry's request line is the one sent (a line longer than Nginx's first read may be
    logged as far as Nginx read it before refusing it)."""
    line, logged = first_line(sent), logged_line(entry)
    return logged == line or (len(line) > FIRST_READ and len(logged) >= FIRST_READ and line.startswith(logged))


def log_problem(sent: bytes, answer: Answer, entries: dict[str, dict], closes: list[dict]) -> str | None:
    """Why the log does not hold this exchange as it happened, or None. An answer is found by its
    X-Request-ID; a close by its request line, with nothing sent."""
    if answer.status is not None:
        entry = entries.get(answer.headers["x-request-id"])
        if entry is None:
            return "no access log entry with its request id"
    else:
        entry = next((e for e in closes if line_matches(sent, e)), None)
        if entry is None:
            return "no access log entry for the close (its request line with bytes_sent 0)"
    if answer.status is not None and entry["status"] != answer.status:
        return f"logged status {entry['status']}, sent {answer.status}"
    if not line_matches(sent, entry):
        return f"logged request {logged_line(entry)[:200]!r}"
    # The method as sent, also where an error page turned it into GET.
    if entry["method"].encode("utf-8", "surrogateescape") != logged_line(entry).split(b" ")[0]:
        return f"logged method {entry['method']!r}"
    return None


def wait_logged(stack: Stack, exchanges: list[tuple[bytes, Answer]], timeout: float = 10.0) -> list[str]:
    """Problems with the log for each exchange, once every one is in it or `timeout` passed (Nginx
    writes an entry when it lets the connection go, after the client read the answer)."""
    deadline = time.monotonic() + timeout
    while True:
        entries = access_log(stack)
        by_id = {e["request_id"]: e for e in entries}
        closes = [e for e in entries if e["bytes_sent"] == 0]
        problems = [f"{sent[:120]!r}: {p}" for sent, answer in exchanges
                    if (p := log_problem(sent, answer, by_id, closes))]
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(0.1)


def error_log(stack: Stack) -> str:
    return (stack.layout.logs / "nginx.error.log").read_text(errors="replace")


# --- the cases ---------------------------------------------------------------------------------

def req(line: bytes, *headers: bytes, body: bytes = b"", host: bool = True) -> bytes:
    """A request: `line`, Connection: close (first, so a broken later header cannot keep the
    connection open), Host, then `headers` and `body`."""
    head = [b"Connection: close", *([b"Host: " + HOST] if host else []), *headers]
    return line + b"\r\n" + b"".join(h + b"\r\n" for h in head) + b"\r\n" + body


def tls_client_hello(server_name: str) -> bytes:
    """The bytes a real TLS client sends first: Python's own ClientHello, taken from memory."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def chunked(body: bytes, line: bytes = b"POST /v1/parse HTTP/1.1") -> bytes:
    return req(line, b"Content-Type: image/png", b"Transfer-Encoding: chunked", body=body)


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS = b"\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00\x64"
BAD = "bad_request"

# (name, bytes, expected status or CLOSED, expected error code or None, half-close after sending)
CASES: list[tuple[str, bytes, int | str, str | None, bool]] = [
    # path traversal, raw and encoded: above the root is refused, the rest stays inside the site
    ("traversal raw", req(b"GET /../etc/passwd HTTP/1.1"), 400, BAD, False),
    ("traversal encoded slash", req(b"GET /..%2f..%2fetc/passwd HTTP/1.1"), 400, BAD, False),
    ("traversal encoded dots", req(b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1"), 400, BAD, False),
    ("traversal from /v1", req(b"GET /v1/../../x HTTP/1.1"), 400, BAD, False),
    ("traversal from /results", req(b"GET /results/../../../etc/passwd HTTP/1.1"), 400, BAD, False),
    ("traversal from /results encoded", req(b"GET /results/..%2f..%2f..%2fconf%2fparse.toml HTTP/1.1"), 400, BAD, False),
    ("traversal dot segments", req(b"GET /./v1/./../../.. HTTP/1.1"), 400, BAD, False),
    ("traversal inside the site", req(b"GET /results/%2e%2e%2fparse.toml HTTP/1.1"), 404, "not_found", False),
    ("traversal backslashes", req(b"GET /..\\..\\etc\\passwd HTTP/1.1"), 404, "not_found", False),
    ("traversal double-encoded", req(b"GET /%252e%252e/%252e%252e/etc/passwd HTTP/1.1"), 404, "not_found", False),
    ("traversal overlong utf-8", req(b"GET /results/..%c0%af..%c0%afetc/passwd HTTP/1.1"), 404, "not_found", False),
    ("traversal ..; in /v1", req(b"GET /v1/..;/healthz HTTP/1.1"), 404, None, False),
    # NUL and control bytes
    ("encoded NUL", req(b"GET /v1/parse%00 HTTP/1.1"), 400, BAD, False),
    ("encoded NUL between dots", req(b"GET /.%00./etc/passwd HTTP/1.1"), 400, BAD, False),
    ("raw NUL in path", req(b"GET /a\x00b HTTP/1.1"), 400, BAD, False),
    ("raw NUL before method", req(b"\x00GET / HTTP/1.1"), 400, BAD, False),
    ("control byte in path", req(b"GET /a\x01b HTTP/1.1"), 400, BAD, False),
    ("DEL in path", req(b"GET /a\x7fb HTTP/1.1"), 400, BAD, False),
    ("escape sequence in path", req(b"GET /\x1b[2J\x1b[31m HTTP/1.1"), 400, BAD, False),
    ("tab between method and path", req(b"GET\t/ HTTP/1.1"), 400, BAD, False),
    ("NUL in a header value", req(b"GET /nope HTTP/1.1", b"X-A: a\x00b"), 400, BAD, False),
    ("control byte in a header name", req(b"GET /nope HTTP/1.1", b"X\x01A: v"), 400, BAD, False),
    ("control byte in a header value", req(b"GET /nope HTTP/1.1", b"User-Agent: a\x01\x1b[31mb"), 404, "not_found", False),
    # bad percent-encoding
    ("percent zz", req(b"GET /%zz HTTP/1.1"), 400, BAD, False),
    ("percent alone", req(b"GET /% HTTP/1.1"), 400, BAD, False),
    ("percent one digit", req(b"GET /%2 HTTP/1.1"), 400, BAD, False),
    ("percent g0", req(b"GET /%g0 HTTP/1.1"), 400, BAD, False),
    ("percent twice", req(b"GET /%%41 HTTP/1.1"), 400, BAD, False),
    ("percent at the end of /v1/parse", req(b"POST /v1/parse% HTTP/1.1", b"Content-Length: 0"), 400, BAD, False),
    ("percent in the query", req(b"GET /nope?%zz HTTP/1.1"), 404, "not_found", False),
    # invalid methods
    ("method with @", req(b"G@T / HTTP/1.1"), 400, BAD, False),
    ("lower-case method", req(b"get / HTTP/1.1"), 400, BAD, False),
    ("space before method", req(b" GET / HTTP/1.1"), 400, BAD, False),
    ("method only", req(b"GET"), 400, BAD, False),
    ("non-ASCII method", req(b"\xc3\x84GET / HTTP/1.1"), 400, BAD, False),
    ("method 10 000 bytes", req(b"A" * 10_000 + b" / HTTP/1.1"), 414, "uri_too_long", False),
    ("unknown method, nginx path", req(b"FOO /nope HTTP/1.1"), 404, "not_found", False),
    ("unknown method, app path", req(b"FOO /v1/parse HTTP/1.1"), 405, None, False),
    ("TRACE", req(b"TRACE /v1/parse HTTP/1.1"), 405, "method_not_allowed", False),
    ("TRACE elsewhere", req(b"TRACE /nope HTTP/1.1"), 405, "method_not_allowed", False),
    ("PROPFIND on the page", req(b"PROPFIND / HTTP/1.1"), 405, "method_not_allowed", False),
    ("POST to a page file", req(b"POST /app.js HTTP/1.1", b"Content-Length: 3", body=b"abc"), 405, "method_not_allowed", False),
    # invalid versions
    ("HTTP/9.9", req(b"GET / HTTP/9.9"), 400, "http_version_not_supported", False),
    ("HTTP/2.0 request line", req(b"GET / HTTP/2.0"), 400, "http_version_not_supported", False),
    ("HTTP/3", req(b"GET / HTTP/3"), 400, "http_version_not_supported", False),
    ("HTTP/0.9 named", req(b"GET /nope HTTP/0.9"), 400, BAD, False),
    ("HTTP/1.1.1", req(b"GET /nope HTTP/1.1.1"), 400, BAD, False),
    ("lower-case version", req(b"GET /nope http/1.1"), 400, BAD, False),
    ("HTTPS/1.1", req(b"GET /nope HTTPS/1.1"), 400, BAD, False),
    ("HTTP/01.1", req(b"GET /nope HTTP/01.1"), 400, BAD, False),
    ("HTTP/1", req(b"GET /nope HTTP/1"), 400, BAD, False),
    ("a word after the version", req(b"GET /nope HTTP/1.1 x"), 400, BAD, False),
    ("HTTP/1.99", req(b"GET /nope HTTP/1.99"), 404, "not_found", False),
    # HTTP/0.9: no status line could be written, so no answer
    ("HTTP/0.9 GET", b"GET /nope\r\n", CLOSED, None, False),
    ("HTTP/0.9 GET of the page", b"GET /\r\n", CLOSED, None, False),
    ("HTTP/0.9 POST", b"POST /v1/parse\r\n", CLOSED, None, False),
    ("HTTP/0.9 bad path", b"GET /%zz\r\n", CLOSED, None, False),
    ("HTTP/0.9 HEAD", b"HEAD /\r\n", CLOSED, None, False),
    ("HTTP/0.9 with headers after", b"GET /nope\r\nHost: parse.test\r\n\r\n", CLOSED, None, False),
    # other protocols on the plain port
    ("TLS ClientHello", tls_client_hello("parse.test"), 400, BAD, False),
    ("TLS ClientHello for another host", tls_client_hello("evil.example"), 400, BAD, False),
    ("SSLv2-style hello", b"\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10" + bytes(range(37)), 400, BAD, False),
    ("HTTP/2 preface", H2_PREFACE, 400, BAD, False),
    ("HTTP/2 preface and SETTINGS", H2_PREFACE + H2_SETTINGS, 400, BAD, False),
    ("h2c upgrade", req(b"GET /nope HTTP/1.1", b"Upgrade: h2c", b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"), 404, "not_found", False),
    ("SSH banner", b"SSH-2.0-OpenSSH_9.6\r\n", 400, BAD, False),
    # CONNECT and absolute URIs for other hosts
    ("CONNECT host:port", req(b"CONNECT evil.example:443 HTTP/1.1"), 400, BAD, False),
    ("CONNECT loopback ssh", req(b"CONNECT 127.0.0.1:22 HTTP/1.1"), 400, BAD, False),
    ("CONNECT a path", req(b"CONNECT / HTTP/1.1"), 405, "method_not_allowed", False),
    ("CONNECT an absolute URI", req(b"CONNECT http://evil.example/ HTTP/1.1"), 405, "method_not_allowed", False),
    ("absolute URI, other host", req(b"GET http://evil.example/healthz HTTP/1.1"), 421, "misdirected_request", False),
    ("absolute https URI, other host", req(b"GET https://evil.example:443/v1/models HTTP/1.1"), 421, "misdirected_request", False),
    ("absolute URI POST, other host", req(b"POST http://evil.example/v1/parse HTTP/1.1", b"Content-Length: 0"), 421, "misdirected_request", False),
    ("absolute URI without a path", req(b"GET http://evil.example HTTP/1.1"), 421, "misdirected_request", False),
    ("absolute ftp URI", req(b"GET ftp://evil.example/ HTTP/1.1"), 421, "misdirected_request", False),
    ("absolute URI, loopback address", req(b"GET http://127.0.0.1/healthz HTTP/1.1"), 421, "misdirected_request", False),
    ("absolute URI, HTTP/1.0 without Host", b"GET http://evil.example/healthz HTTP/1.0\r\n\r\n", 421, "misdirected_request", False),
    ("absolute URI, this host", req(b"GET http://parse.test/nope HTTP/1.1"), 404, "not_found", False),
    ("absolute URI, this host in capitals and a port", req(b"GET http://PARSE.test:8100/nope HTTP/1.1"), 404, "not_found", False),
    ("absolute URI with userinfo", req(b"GET http://user@evil.example/ HTTP/1.1"), 400, BAD, False),
    ("absolute URI, broken IPv6 host", req(b"GET http://[::1/ HTTP/1.1"), 400, BAD, False),
    ("OPTIONS *", req(b"OPTIONS * HTTP/1.1"), 400, BAD, False),
    # Content-Length and Transfer-Encoding
    ("Content-Length and chunked", req(b"POST /v1/parse HTTP/1.1", b"Content-Length: 5", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"), 400, BAD, False),
    ("chunked and Content-Length 0", req(b"POST /v1/parse HTTP/1.1", b"Transfer-Encoding: chunked", b"Content-Length: 0", body=b"0\r\n\r\n"), 400, BAD, False),
    ("duplicate Content-Length, same", req(b"POST /v1/parse HTTP/1.1", b"Content-Length: 3", b"Content-Length: 3", body=b"abc"), 400, BAD, False),
    ("duplicate Content-Length, different", req(b"POST /v1/parse HTTP/1.1", b"Content-Length: 3", b"Content-Length: 30", body=b"abc"), 400, BAD, False),
    ("Content-Length list", req(b"POST /v1/parse HTTP/1.1", b"Content-Length: 3, 3", body=b"abc"), 400, BAD, False),
    ("negative Content-Length", req(b"POST /v1/parse HTTP/1.1", b"Content-Length: -1"), 400, BAD, False),
    ("Content-Length with a sign", req(b"POST /v1/parse HTTP/1.1", b"Content-Length: +3", body=b"abc"), 400, BAD, False),
    ("Content-Length not a number", req(b"POST /v1/parse HTTP/1.1", b"Content-Length: abc"), 400, BAD, False),
    ("Content-Length overflow", req(b"POST /v1/parse HTTP/1.1", b"Content-Length: 99999999999999999999999999"), 400, BAD, False),
    ("Content-Length over the limit", req(b"POST /v1/parse HTTP/1.1", b"Content-Length: 999999999"), 413, "payload_too_large", False),
    ("body longer than Content-Length", req(b"POST /nope HTTP/1.1", b"Content-Length: 2", body=b"hello"), 404, "not_found", False),
    ("Transfer-Encoding gzip", req(b"POST /v1/parse HTTP/1.1", b"Transfer-Encoding: gzip", body=b"0\r\n\r\n"), 400, "unsupported_transfer_encoding", False),
    ("Transfer-Encoding chunked, gzip", req(b"POST /v1/parse HTTP/1.1", b"Transfer-Encoding: chunked, gzip", body=b"0\r\n\r\n"), 400, "unsupported_transfer_encoding", False),
    ("Transfer-Encoding identity", req(b"POST /v1/parse HTTP/1.1", b"Transfer-Encoding: identity", body=b"abc"), 400, "unsupported_transfer_encoding", False),
    ("Transfer-Encoding xchunked", req(b"POST /v1/parse HTTP/1.1", b"Transfer-Encoding: xchunked", body=b"0\r\n\r\n"), 400, "unsupported_transfer_encoding", False),
    ("Transfer-Encoding twice", req(b"POST /v1/parse HTTP/1.1", b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"), 400, BAD, False),
    ("Transfer-Encoding with a space before the colon", req(b"POST /v1/parse HTTP/1.1", b"Transfer-Encoding : chunked", body=b"0\r\n\r\n"), 400, BAD, False),
    ("Transfer-Encoding in HTTP/1.0", b"POST /v1/parse HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, BAD, False),
    # chunk sizes
    ("chunk size not hex", chunked(b"zz\r\nab\r\n0\r\n\r\n"), 400, BAD, False),
    ("chunk size negative", chunked(b"-1\r\nab\r\n0\r\n\r\n"), 400, BAD, False),
    ("chunk size 0x", chunked(b"0x2\r\nab\r\n0\r\n\r\n"), 400, BAD, False),
    ("chunk size with a leading space", chunked(b" 2\r\nab\r\n0\r\n\r\n"), 400, BAD, False),
    ("chunk size overflow", chunked(b"ffffffffffffffffffff\r\nab\r\n0\r\n\r\n"), 400, BAD, False),
    ("chunk size over the limit", chunked(b"7fffffff\r\nab\r\n0\r\n\r\n"), 413, "payload_too_large", False),
    ("chunk longer than its size", chunked(b"1\r\nabc\r\n0\r\n\r\n"), 400, BAD, False),
    ("chunk without its CRLF", chunked(b"2\r\nabXX0\r\n\r\n"), 400, BAD, False),
    # Nginx skips chunk extensions whatever their bytes: the app gets "ab" and says it is no image.
    ("chunk extension with NUL", chunked(b"2;a=\x00\r\nab\r\n0\r\n\r\n"), 415, "unsupported_media_type", False),
    ("empty chunked body reaches the app", chunked(b"0\r\n\r\n"), 400, "empty_body", False),
    # header lines
    ("header without a colon", req(b"GET /nope HTTP/1.1", b"nocolon"), 404, "not_found", False),
    ("header without a colon, with spaces", req(b"GET /nope HTTP/1.1", b"no colon here"), 400, BAD, False),
    ("header with an empty name", req(b"GET /nope HTTP/1.1", b": v"), 400, BAD, False),
    ("header with a space before the colon", req(b"GET /nope HTTP/1.1", b"X-A : v"), 400, BAD, False),
    ("folded header", req(b"GET /nope HTTP/1.1", b"X-A: v", b" folded"), 400, BAD, False),
    ("no Host in HTTP/1.1", req(b"GET /nope HTTP/1.1", host=False), 400, BAD, False),
    ("two Hosts", req(b"GET /nope HTTP/1.1", b"Host: other.example"), 400, BAD, False),
    ("Host with a slash", req(b"GET /nope HTTP/1.1", b"Host: a/b", host=False), 400, BAD, False),
    ("Host ..", req(b"GET /nope HTTP/1.1", b"Host: ..", host=False), 400, BAD, False),
    ("Host with NUL", req(b"GET /nope HTTP/1.1", b"Host: a\x00b", host=False), 400, BAD, False),
    ("bare LF line ends", b"GET /nope HTTP/1.1\nHost: parse.test\nConnection: close\n\n", 404, "not_found", False),
    # huge and numerous headers, long lines
    ("one header of 40 000 bytes", req(b"GET /nope HTTP/1.1", b"X-Junk: " + b"a" * 40_000), 431, "header_too_large", False),
    ("one header of 9 000 bytes", req(b"GET /nope HTTP/1.1", b"X-Junk: " + b"a" * 9_000), 431, "header_too_large", False),
    ("a cookie of 20 000 bytes", req(b"GET /nope HTTP/1.1", b"Cookie: a=" + b"b" * 20_000), 431, "header_too_large", False),
    ("5 000 headers", req(b"GET /nope HTTP/1.1", *(b"X-%d: v" % i for i in range(5_000))), 431, "header_too_large", False),
    ("500 headers", req(b"GET /nope HTTP/1.1", *(b"X-%d: v" % i for i in range(500))), 404, "not_found", False),
    ("request line of 9 000 bytes", req(b"GET /" + b"a" * 9_000 + b" HTTP/1.1"), 414, "uri_too_long", False),
    ("request line of 100 000 bytes", req(b"GET /" + b"a" * 100_000 + b" HTTP/1.1"), 414, "uri_too_long", False),
    ("query of 40 000 bytes", req(b"GET /healthz?" + b"a" * 40_000 + b" HTTP/1.1"), 414, "uri_too_long", False),
    # requests that end before they are whole: Nginx closes without an answer
    ("only empty lines", b"\r\n\r\n", CLOSED, None, True),
    ("request line without its end", b"GET /nope HTTP/1.1", CLOSED, None, True),
    ("headers without their end", b"GET /nope HTTP/1.1\r\nHost: parse.test\r\n", CLOSED, None, True),
    ("body shorter than Content-Length", req(b"POST /v1/parse HTTP/1.1", b"Content-Length: 10", body=b"abc"), CLOSED, None, True),
    ("chunked body without its last chunk", chunked(b"2\r\nab\r\n"), CLOSED, None, True),
]


@pytest.mark.parametrize("name,data,expected,code,half_close", CASES, ids=[c[0] for c in CASES])
def test_hostile_request(edge: Stack, name: str, data: bytes, expected: int | str, code: str | None,
                         half_close: bool) -> None:
    answer = exchange(edge, data, half_close)
    problem = check_answer(data, answer)
    assert problem is None, f"{problem}: {answer.raw[:300]!r}"
    if expected == CLOSED:
        assert answer.raw == b"", answer.raw[:300]
    else:
        assert answer.status == expected, answer.raw[:300]
        if code is not None and answer.body:
            assert json.loads(answer.body)["error"]["code"] == code, answer.body
    for secret in (b"root:", b"[model]", b"[[instances]]"):
        assert secret not in answer.body
    assert wait_logged(edge, [(data, answer)]) == []


# --- generated mutations of valid request lines ------------------------------------------------

# Valid request lines that each answer a 4xx as they are, chosen so that no mutation of a few
# bytes reaches a page or a 2xx route (a path far from every route; routes only with methods they
# refuse; no OPTIONS, which Flask answers 200).
BASES = [
    b"GET /nope-edge-fuzz-target HTTP/1.1",
    b"POST /v1/parse HTTP/1.1",
    b"GET /v1/parse?mode=page HTTP/1.1",
    b"GET /results/0123456789abcdef0123.png HTTP/1.1",
    b"GET http://parse.test/nope-edge-fuzz-target HTTP/1.1",
    b"HEAD /nope-edge-fuzz-target HTTP/1.0",
    b"GET /static/%2e%2e/nope-edge-fuzz-target?x=%41 HTTP/1.1",
    b"DELETE /v1/parse HTTP/1.1",
]
INSERTS = [b"%", b"%00", b"%2e%2e%2f", b"../", b"/..", b"%zz", b"%2", b" ", b"\t", b"\r", b"\n", b"\x00",
           b"HTTP/", b"*", b"//", b"?", b"#", b";", b"@", b":", b"\\", b"%c0%af", b"\x7f", b"\xff", b"~",
           b"%25", b"http://evil.example", b"\x16\x03\x01"]
VERSIONS = [b"HTTP/1.0", b"HTTP/1.1", b"HTTP/2.0", b"HTTP/9.9", b"HTTP/0.9", b"HTTP/1.1.1", b"HTTP/1",
            b"http/1.1", b"HTTP/01.1", b"HTTP/1.99", b"", b"HTTP/1.1 x", b"HTTP/1.1\x00", b"HTTP/3"]
METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"TRACE", b"CONNECT", b"PRI", b"get", b"G@T", b"",
           b"A" * 300, b"M-SEARCH", b"_", b"\x16\x03\x01"]
MUTATIONS = 1200
SEED = 20_251_202


def mutate(line: bytes, rng: random.Random) -> bytes:
    """1-3 edits of `line`: bit flips, random or telling bytes, inserts, deletes of 1-2 bytes,
    repeats, case swaps, and swapped versions or methods."""
    data = bytearray(line)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(9)
        pos = rng.randrange(len(data)) if data else 0
        if op == 0 and data:
            data[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            data[pos] = rng.randrange(256)
        elif op == 2:
            data[pos:pos] = rng.choice(INSERTS)
        elif op == 3 and data:
            del data[pos:pos + rng.randint(1, 2)]
        elif op == 4 and data:
            data[pos:pos] = data[pos:pos + rng.randint(1, 4)]
        elif op == 5:
            data[pos:pos + 4] = bytes(data[pos:pos + 4]).swapcase()
        elif op == 6:
            head, sep, _ = bytes(data).rpartition(b" ")
            data = bytearray(head + sep + rng.choice(VERSIONS)) if sep else data
        elif op == 7:
            _, sep, rest = bytes(data).partition(b" ")
            data = bytearray(rng.choice(METHODS) + sep + rest) if sep else data
        else:
            data[pos:pos] = b" " * rng.randint(1, 3)
    return bytes(data)


def test_mutated_request_lines(edge: Stack) -> None:
    """MUTATIONS seeded mutations of valid request lines (the seed makes a failure replay); each
    request is bounded by ANSWER_TIMEOUT_S, so the test ends soon after anything hangs."""
    rng = random.Random(SEED)
    exchanges: list[tuple[bytes, Answer]] = []
    failures = []
    start = time.monotonic()
    for number in range(MUTATIONS):
        line = mutate(rng.choice(BASES), rng)
        data = req(line, b"Content-Length: 0", b"User-Agent: edge-fuzz")
        answer = exchange(edge, data)
        if problem := check_answer(data, answer):
            failures.append(f"#{number} {data[:160]!r}: {problem}: {answer.raw[:200]!r}")
        exchanges.append((data, answer))
    seconds = time.monotonic() - start
    outcomes = collections.Counter(a.status or CLOSED for _, a in exchanges)
    to_app = sum(1 for _, a in exchanges if a.headers.get("x-upstream"))
    print(f"\n{MUTATIONS} mutated request lines in {seconds:.1f} s (seed {SEED}), {to_app} passed on to "
          "the app: " + ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items(), key=str)))
    assert not failures, "\n".join(failures[:20])
    assert wait_logged(edge, exchanges) == []
    # The mutations reach many outcomes, not one status, and the app as well as Nginx.
    assert len(outcomes) > 3 and to_app > 0


def test_nginx_error_log_and_the_stack_after_the_fuzz(edge: Stack) -> None:
    """No error page failed and no worker died (Nginx logs both), and the stack still serves."""
    log = error_log(edge)
    assert "empty URI in redirect to named location" not in log
    for level in ("[alert]", "[crit]", "[emerg]"):
        assert level not in log, [line for line in log.splitlines() if level in line][:5]
    ok = exchange(edge, req(b"GET /healthz HTTP/1.1"))
    assert ok.status == 200, ok.raw[:300]
