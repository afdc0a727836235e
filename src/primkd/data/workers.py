"""Worker processes for the data stages (synthetic scenes, HHA): one thread each, started from a clean process."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor


def _single_thread_worker() -> None:
    """Process-pool initializer: one OpenCV and one BLAS/OpenMP thread per worker process, so that workers do not
    oversubscribe the cores (two workers each spinning two BLAS threads tripled the CPU time per HHA image,
    docs/BENCHMARKS.md)."""
    import cv2
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(1)
    threadpool_limits(1)


def process_pool(workers: int, preload: str) -> ProcessPoolExecutor:
    """A pool of ``workers`` single-threaded processes forked from a fresh server process that imported ``preload``.

    Not forked from the caller: a forked child inherits the parent's OpenCV and BLAS thread pools in whatever state
    their (absent) threads left them, and resizing such a pool can wait forever on a condition variable (seen as a
    hang of the HHA pool inside the test suite, after other tests had run OpenCV multi-threaded).
    """
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([preload])  # workers start from the imported module, not a bare interpreter
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_single_thread_worker)
