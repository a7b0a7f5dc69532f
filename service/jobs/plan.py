"""Which pages a job reads: every page of every file, or the `pages` the client selected.

`pages` is parsed as for /v1/parse (service/documents/pages.py) and applied to each file, so a
job and a synchronous request read the same pages of the same upload.
"""

from __future__ import annotations

import urllib.parse

from ..documents.pages import parse_pages

# Query parameters that shape the job's result, not the reading of a page: they are applied when
# the result is assembled, and each page is read as JSON with its words, which every format needs.
OUTPUT_PARAMS = ("format", "words")


def plan(counts: list[int], spec: str | None) -> list[tuple[int, int]]:
    """(file index, 1-based page) for each page to read, in reading order; a page past the end of
    a file is a 400 that says how many pages it has."""
    selection = parse_pages(spec)
    return [(f, i + 1) for f, n in enumerate(counts)
            for i in selection.pick(n, f"file {f + 1}" if len(counts) > 1 else "the file")]


def page_query(job_query: str) -> str:
    """The query each page of a job is posted to /v1/parse with."""
    query = urllib.parse.parse_qsl(job_query)
    kept = [(k, v) for k, v in query if k not in OUTPUT_PARAMS]
    # Markdown is written from the pages' regions: a job that asks for it reads them.
    if ("format", "markdown") in query and not any(k == "structure" for k, _ in kept):
        kept.append(("structure", "1"))
    return urllib.parse.urlencode([*kept, ("words", "1")])
