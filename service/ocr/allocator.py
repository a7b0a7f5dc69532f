"""glibc's malloc, set up for inference: a page's tensors reuse memory the process already holds.

By default glibc serves every block over 32 MiB with a fresh mmap and unmaps it on free. A page's
activations are hundreds of MiB each (CRAFT's first layers on a receipt: 64 channels x 0.5 Mpx), so
every layer of every page would fault in and zero new memory from the kernel, in system time
(docs/benchmarks.md, "Memory", has what keeping it saves per family). Kept in the heap instead,
freed blocks serve the next layer and the next page. The cost is that a worker's resident memory
stays near its largest page, so
`release_above` hands the surplus back after a request past `[limits] worker_memory_mib`, the
same number at which uWSGI recycles a worker that stays above it (a leak). Elsewhere than glibc
(musl, macOS) this module does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

# mallopt(3) parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8
# Free memory at the top of the heap goes back on free only past this: the most mallopt takes
# (an int), 2 GiB, above a receipt's working set; `release_above` does the rest.
TRIM_THRESHOLD = 2**31 - 1

_PAGE = os.sysconf("SC_PAGE_SIZE")


class _MallInfo2(ctypes.Structure):
    """struct mallinfo2 (glibc 2.33+): sizes in bytes, summed over every arena."""

    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    if hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = _MallInfo2
    return libc


_LIBC = _glibc()


def keep_freed_memory() -> bool:
    """Serve large blocks from the heap and keep what is freed; True when glibc took the settings.

    One arena for every thread: a thread's own arena cannot grow past 64 MiB and would fall back to
    mmap for exactly the blocks this is about. Threads that already allocated keep their arena,
    so the process calls this before it starts serving (service/ocr/model.py:load_model).
    """
    if _LIBC is None:
        log.info("allocator: not glibc, left as it is")
        return False
    done = all(_LIBC.mallopt(param, value) == 1 for param, value in (
        (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_ARENA_MAX, 1)))
    log.info("allocator: glibc keeps freed memory for the next page%s", "" if done else " (a setting was refused)")
    return done


def limit_kernel_caches(entries: int = 32) -> None:
    """Keep few compiled convolution kernels: for models whose input shapes seldom repeat.

    oneDNN, and PyTorch's ideep layer above it, keep a kernel per input shape, 1024 each by
    default. What a cached kernel holds stays allocated between pages and pins the freed blocks
    around it apart, so the heap grows instead of reusing them, while the page and crop shapes
    rarely repeat: a few entries give the same speed for a fraction of the memory (docs/benchmarks.md,
    "Memory"). Both are environment
    variables read at the process's first convolution, so the caller runs this before its model's
    first forward; a value the operator already set wins.
    """
    os.environ.setdefault("LRU_CACHE_CAPACITY", str(entries))
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(entries))


def resident_bytes() -> int:
    """This process's resident set size now (not its peak)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * _PAGE


def heap_in_use_bytes() -> int | None:
    """Bytes in live malloc blocks (heap and mmap); None where glibc cannot tell.

    Resident memory is the wrong leak signal here: the heap keeps what pages freed (above), so
    resident memory follows the largest page seen and how the heap happened to fragment, while
    live blocks stay where the model and its caches are unless something leaks.
    """
    if _LIBC is None or not hasattr(_LIBC, "mallinfo2"):
        return None
    info = _LIBC.mallinfo2()
    return info.uordblks + info.hblkhd


def release_above(limit_bytes: int) -> bool:
    """Give freed memory back to the kernel when the process holds more than `limit_bytes`."""
    if _LIBC is None:
        return False
    held = resident_bytes()
    if held <= limit_bytes:
        return False
    _LIBC.malloc_trim(0)
    log.info("allocator: resident %d MiB > %d MiB, freed memory given back: now %d MiB",
             held >> 20, limit_bytes >> 20, resident_bytes() >> 20)
    return True
