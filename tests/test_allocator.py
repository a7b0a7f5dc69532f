"""service/ocr/allocator.py on this machine's glibc: freed large blocks stay resident, and go back on demand.

Each case runs in a fresh interpreter, so its resident-memory readings are its own and the
settings start from glibc's defaults.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from service.ocr import allocator
from service.settings import ROOT

BLOCK_MIB = 256

# Allocates and frees one 256 MiB block (touched, so it is resident), reporting RSS in MiB at each step.
PROBE = f"""
import json, sys
import numpy as np
from service.ocr import allocator
kept = allocator.keep_freed_memory() if sys.argv[1] == "keep" else None
rss = lambda: allocator.resident_bytes() >> 20
before = rss()
block = np.ones({BLOCK_MIB} << 20, dtype=np.uint8)
during = rss()
del block
after_free = rss()
released_high = allocator.release_above(1 << 50)
after_high = rss()
released_zero = allocator.release_above(0)
print(json.dumps(dict(kept=kept, before=before, during=during, after_free=after_free,
                      released_high=released_high, after_high=after_high,
                      released_zero=released_zero, after_zero=rss())))
"""

pytestmark = [pytest.mark.unit, pytest.mark.skipif(allocator._LIBC is None, reason="not glibc: service/ocr/allocator.py does nothing here")]


def probe(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_glibc_default_unmaps_large_blocks_on_free():
    """The behaviour the module changes: without it, a freed 256 MiB block leaves at once."""
    r = probe("default")
    assert r["during"] - r["before"] >= BLOCK_MIB * 0.9
    assert r["after_free"] - r["before"] < BLOCK_MIB * 0.1


def test_freed_memory_is_kept_until_released():
    r = probe("keep")
    assert r["kept"] is True
    assert r["during"] - r["before"] >= BLOCK_MIB * 0.9
    # Freed, the block stays resident for the next page ...
    assert r["after_free"] - r["before"] >= BLOCK_MIB * 0.9
    # ... and a limit above what the process holds releases nothing ...
    assert r["released_high"] is False and r["after_high"] >= r["after_free"] - 2
    # ... while one below it gives the block back to the kernel.
    assert r["released_zero"] is True
    assert r["after_zero"] - r["before"] < BLOCK_MIB * 0.1


def test_heap_in_use_counts_live_blocks_not_kept_memory():
    """The leak signal: a live block counts whether malloc took it from the heap or from mmap, and a
    freed one stops counting while its memory stays resident."""
    script = f"""
import json, sys
import numpy as np
from service.ocr import allocator
allocator.keep_freed_memory()
heap = lambda: allocator.heap_in_use_bytes() >> 20
before = heap()
block = np.ones({BLOCK_MIB} << 20, dtype=np.uint8)
during = heap()
del block
print(json.dumps(dict(before=before, during=during, after=heap(), resident=allocator.resident_bytes() >> 20)))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, check=True, capture_output=True, text=True)
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["during"] - r["before"] >= BLOCK_MIB
    assert abs(r["after"] - r["before"]) < 4
    assert r["resident"] >= BLOCK_MIB  # kept: resident memory is no measure of what is live
