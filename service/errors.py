"""The one error type for a request the service refuses: every layer raises it, the web layer answers it.

It carries the HTTP status a server should answer with, a stable code and a message that says
what to fix. It lives outside the web layer so that the decoders, the documents code and the
model layer can refuse bad input without importing Flask; the CLI prints the same message.
"""

from __future__ import annotations


class ClientError(Exception):
    """A refusal the client can act on: `status` (4xx, or 503/504 for capacity), `code`, `message`."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
