"""`?pages=2-4,7`: which pages of each uploaded file to read.

The selection is parsed once per request, before any body is read, so that a typo costs no
upload; it is checked against each file's page count only once that count is known, and a page
past the end is refused with the count, so that the client can correct the range at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ClientError

_PART = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")
# A range string longer than this is no page list a person or a client writes.
MAX_SPEC_CHARS = 200


@dataclass(frozen=True)
class PageSelection:
    """1-based inclusive ranges, in the order given; None means every page."""

    ranges: tuple[tuple[int, int], ...] | None = None

    def pick(self, count: int, what: str = "the file") -> list[int]:
        """The 0-based page indexes to read from a file of `count` pages, in the client's order.

        A page the client names twice is read twice: the answer has one entry per named page.
        """
        if self.ranges is None:
            return list(range(count))
        last = max(end for _, end in self.ranges)
        if last > count:
            raise ClientError(
                400, "page_out_of_range",
                f"pages={self.spec()} names page {last}, but {what} has {count} page{'s' if count != 1 else ''}; "
                f"ask for pages 1-{count} at most")
        return [i - 1 for start, end in self.ranges for i in range(start, end + 1)]

    def count(self, total: int) -> int:
        """How many pages `pick` yields for a file of `total` pages (without checking the end)."""
        if self.ranges is None:
            return total
        return sum(end - start + 1 for start, end in self.ranges)

    def spec(self) -> str:
        if self.ranges is None:
            return "all"
        return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in self.ranges)


ALL = PageSelection()


def parse_pages(spec: str | None) -> PageSelection:
    """'2-4,7' -> ranges ((2, 4), (7, 7)); None or '' -> every page. Raises ClientError 400."""
    if spec is None or not spec.strip():
        return ALL
    how = "write pages as 1-based numbers and inclusive ranges, e.g. pages=2-4,7"
    if len(spec) > MAX_SPEC_CHARS:
        raise ClientError(400, "invalid_pages", f"pages= is {len(spec)} characters long; {how}")
    ranges = []
    for part in spec.split(","):
        m = _PART.match(part)
        if not m:
            raise ClientError(400, "invalid_pages", f"pages={spec!r}: {part.strip()!r} is not a page or a range; {how}")
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) else start
        if start < 1:
            raise ClientError(400, "invalid_pages", f"pages={spec!r}: pages count from 1; {how}")
        if end < start:
            raise ClientError(400, "invalid_pages", f"pages={spec!r}: {start}-{end} runs backwards; {how}")
        ranges.append((start, end))
    return PageSelection(tuple(ranges))
