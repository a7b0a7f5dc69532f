"""Generated bad input through Nginx: 1,000+ fuzzed bodies, then schemathesis from /openapi.json.

One instance with one worker, keys off, the rate limit out of the way. What must hold:
no 5xx, no worker respawned (uWSGI stats), no worker's live heap (parse_worker_heap_bytes) more
than 5% above where it started, and every schemathesis response matching the OpenAPI document.
"""

from __future__ import annotations

import collections
import os
import subprocess
import time
import warnings
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.errors import ClientError
from service import documents
from service.ocr import allocator
from service.settings import ROOT, DocumentSettings, Limits
from tests.hostile import Reply, bad_bodies, request, workers
from tests.stack import Stack

pytestmark = pytest.mark.stack


BODIES = 1000
SEED = 4


# PDF pages rendered at the lowest resolution the service allows: a mangled PDF whose page size
# PDFium can no longer read falls back to a Letter page, and at the default 300 dpi each of those
# costs seconds of detection on two cores while telling the fuzz nothing more than a small one.
DOCUMENTS = DocumentSettings(dpi=DocumentSettings.min_dpi)


@pytest.fixture(scope="module")
def stack(stack_factory) -> Stack:
    # One worker: every body reaches the same process, so its warm-up covers what the fuzz sends.
    return stack_factory([{"processes": 1, "threads": 1}], extra=f"[documents]\ndpi = {DOCUMENTS.dpi}\n")


def send_all(stack: Stack, cases: list[tuple[str, dict[str, str], bytes]], query: str = "") -> list[tuple[str, Reply]]:
    """POST each case to /v1/parse through Nginx, one after another."""
    host, port = stack.cfg.nginx.listen.split(":")
    return [(kind, request(host, int(port), "POST", "/v1/parse" + query, headers, body, timeout=60))
            for kind, headers, body in cases]


def decodable(cases: list[tuple[str, dict[str, str], bytes]]) -> list[tuple[str, dict[str, str], bytes]]:
    """The cases whose raw body still reads as pages, images or documents (they reach the model)."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's complaints about the corrupt ones are expected
        for case in cases:
            try:
                list(documents.read_pages([case[2]], Limits(), documents.ReadOptions(documents=DOCUMENTS)))
            except ClientError:
                continue
            out.append(case)
    return out


def heap_bytes(stack: Stack) -> dict[str, float]:
    """pid -> parse_worker_heap_bytes, from /metrics through Nginx."""
    host, port = stack.cfg.nginx.listen.split(":")
    reply = request(host, int(port), "GET", "/metrics")
    assert reply.status == 200, reply.status
    heaps = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        if family.name == "parse_worker_heap_bytes":
            heaps.update({sample.labels["pid"]: sample.value for sample in family.samples})
    return heaps


def test_fuzzed_bodies(stack: Stack) -> None:
    fuzz(stack, BODIES, "")


# With structure (the layout and table models after the OCR) and Markdown, on fewer bodies: the
# decodable ones cost a layout pass each, and the refusals are the same as above.
STRUCTURE_BODIES = 200


@pytest.mark.parametrize("query", ["?structure=1", "?format=markdown"])
def test_fuzzed_bodies_with_structure(stack: Stack, query: str) -> None:
    fuzz(stack, STRUCTURE_BODIES, query)


def fuzz(stack: Stack, bodies: int, query: str) -> None:
    ports = stack.stats_ports()
    start_workers = workers(ports)
    cases = bad_bodies(bodies, seed=SEED)
    # Warm-up: torch and oneDNN keep memory per input shape (measured: a plateau, not a leak), so
    # every shape the fuzz will reach the model with is seen before the baseline. Twice: with
    # PP-OCR's many shapes, memory settles only on the second pass (in-process at 1 thread, MiB after
    # each pass over these images: 637, 577, 578, 578, 578, 578).
    send_all(stack, decodable(cases) * 2 + bad_bodies(70, seed=SEED + 1), query)
    baseline = workers(ports)
    heap_before = heap_bytes(stack)

    started = time.monotonic()
    results = send_all(stack, cases, query)
    seconds = time.monotonic() - started
    end = workers(ports)
    heap_after = heap_bytes(stack)

    histogram = collections.Counter(reply.status for _, reply in results)
    by_kind = collections.Counter((kind.split(":")[0], reply.status) for kind, reply in results)
    respawns = sum(w["respawn_count"] for w in end.values()) - sum(w["respawn_count"] for w in start_workers.values())
    rss = {k: (baseline[k]["rss"] / 2**20, end[k]["rss"] / 2**20) for k in end}
    heap = {pid: (heap_before[pid] / 2**20, heap_after[pid] / 2**20) for pid in heap_after}
    print(f"\nfuzz: {len(results)} bodies in {seconds:.1f} s; statuses {dict(sorted(histogram.items()))}; "
          f"respawns {respawns}; MiB before->after: "
          + ", ".join(f"worker {k[1]} RSS {a:.1f}->{b:.1f} ({(b - a) / a:+.1%})" for k, (a, b) in rss.items())
          + "; " + ", ".join(f"pid {pid} heap {a:.1f}->{b:.1f} ({(b - a) / a:+.1%})" for pid, (a, b) in heap.items()))
    print("by kind:", dict(sorted(by_kind.items())))

    assert len(results) >= bodies
    fives = [(kind, reply.status, reply.body[:200]) for kind, reply in results if reply.status >= 500]
    assert not fives, fives
    answer = "text/markdown" if "markdown" in query else "application/json"
    for kind, reply in results:
        expected = answer if reply.status == 200 else "application/json"
        assert reply.headers.get("content-type", "").startswith(expected), (kind, reply.status)
        if reply.status >= 400:
            assert reply.json()["error"]["message"], kind
    assert respawns == 0
    assert {k: w["pid"] for k, w in end.items()} == {k: w["pid"] for k, w in start_workers.items()}
    # Live blocks, not resident memory: the heap keeps the memory pages freed, by design
    # (service/ocr/allocator.py), so RSS follows fragmentation; a leak shows as live blocks.
    # Where glibc cannot count them (before 2.33), resident memory is all there is to bound.
    measured = heap if allocator.heap_in_use_bytes() is not None else {str(k): v for k, v in rss.items()}
    if measured is heap:
        assert heap.keys() == {str(w["pid"]) for w in end.values()}, (heap, end)
    for key, (before, after) in measured.items():
        # One-sided: a leak grows; caches evicting entries make live memory wander down.
        assert after - before <= 0.05 * before, (key, before, after)


def test_schemathesis(stack: Stack, tmp_path: Path) -> None:
    """schemathesis generates requests from /openapi.json through Nginx; every answer must be no
    5xx and match the document (status, content type, headers, schema)."""
    report = tmp_path / "schemathesis"
    cmd = [str(ROOT / ".venv" / "bin" / "schemathesis"), "run", f"{stack.url}/openapi.json",
           "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                       "response_headers_conformance,response_schema_conformance",
           "--max-examples", "25", "--workers", "1", "--request-timeout", "60",
           "--phases", "examples,coverage,fuzzing", "--suppress-health-check", "all",
           "--max-time", "60", "--report", "junit", "--report-dir", str(report)]
    started = time.monotonic()
    # cwd: schemathesis keeps its example caches (.schemathesis/, .hypothesis/) there, not in the repository.
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path,
                         env={**os.environ, "NO_COLOR": "1"})
    print(f"\nschemathesis: exit {run.returncode} in {time.monotonic() - started:.1f} s\n{run.stdout[-3000:]}")
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
