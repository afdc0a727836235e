"""Worker pools of the data stages: started from a fresh server process, one thread per worker."""

import os

from primkd.data.workers import process_pool


def _worker_state() -> tuple[int, int, int]:
    import cv2
    from threadpoolctl import threadpool_info

    blas = {pool["num_threads"] for pool in threadpool_info()}
    return os.getppid(), cv2.getNumThreads(), max(blas, default=1)


def test_workers_are_not_forked_from_the_caller_and_run_one_thread():
    # A child forked from a process whose OpenCV/BLAS pools are live inherits them half-copied and can hang resizing
    # them (it did, once, inside the test suite); the pool's workers must come from the fork server instead.
    import cv2

    cv2.setNumThreads(2)
    try:
        with process_pool(2, "primkd.data.hha") as pool:
            states = [pool.submit(_worker_state).result() for _ in range(2)]
    finally:
        cv2.setNumThreads(-1)
    for parent, cv_threads, blas_threads in states:
        assert parent != os.getpid()  # a child of the fork server, not of this process
        assert cv_threads == 1 and blas_threads == 1
