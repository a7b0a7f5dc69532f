"""Recognizer and classifier batches on several threads of one intra-op thread each, instead of one stream.

PyTorch's eager CPU path ends every operator in an OpenMP barrier, and the recognizer's small
tensors run hundreds of operators per batch: two intra-op threads wait on each other far more
than they compute, and on shared cores a barrier waits for whichever thread is descheduled. The
width-bucket batches are independent of each other (recognize.width_buckets), so a worker given
N threads reads N of them at once, each on one thread, with the same bits
(docs/benchmarks.md, "CPU speed of the ppocr default").
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch


def single_threaded_pool(streams: int) -> ThreadPoolExecutor | None:
    """`streams` threads, each running PyTorch at one intra-op thread; None for one stream.

    OpenMP's thread count is per thread, but PyTorch also keeps a process-wide count that threads
    started later take up: it is restored here, so that request threads keep the worker's count.
    """
    if streams < 2:
        return None
    caller = torch.get_num_threads()
    started = threading.Barrier(streams + 1)

    def one_thread() -> None:
        torch.get_num_threads()  # PyTorch sets a thread's count on its first call: before ours
        torch.set_num_threads(1)
        started.wait()

    pool = ThreadPoolExecutor(streams, thread_name_prefix="rec", initializer=one_thread)
    for _ in range(streams):
        pool.submit(lambda: None)  # every thread starts (and runs one_thread) now
    started.wait()
    torch.set_num_threads(caller)
    return pool
