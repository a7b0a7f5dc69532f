"""Which pages a job reads: every page of every file, or the `pages` the client selected.

`pages` has the same shape for a job as for /v1/parse: 1-based page numbers and ranges
("3", "1-4", "1,3,7-9"), applied to each file of the upload.
"""

from __future__ import annotations

import re

from ..errors import ClientError

_PART = re.compile(r"^(\d+)(?:-(\d+))?$")


def _selected(spec: str) -> list[tuple[int, int]]:
    ranges = []
    for part in spec.split(","):
        match = _PART.match(part.strip())
        first, last = (int(match.group(1)), int(match.group(2) or match.group(1))) if match else (0, 0)
        if not match or first < 1 or last < first:
            raise ClientError(400, "invalid_pages", f"pages={spec!r} is not accepted: give 1-based page numbers "
                                                    "and ranges, e.g. pages=1-3,7")
        ranges.append((first, last))
    return ranges


def plan(counts: list[int], spec: str | None) -> list[tuple[int, int]]:
    """(file index, 1-based page) for each page to read, in reading order."""
    if not spec:
        return [(f, p) for f, n in enumerate(counts) for p in range(1, n + 1)]
    ranges = _selected(spec)
    pages = [(f, p) for f, n in enumerate(counts) for p in range(1, n + 1) if any(a <= p <= b for a, b in ranges)]
    if not pages:
        raise ClientError(400, "invalid_pages", f"pages={spec!r} selects no page: the files have "
                                                f"{', '.join(map(str, counts))} pages")
    return pages
