"""Where a training or evaluation runs: its device, its seeds, deterministic kernels, and the signals that stop a
training run at an iteration boundary. How many threads and worker processes a stage may use is
:mod:`primkd.resources`, below every layer, because the data stages plan theirs too.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from primkd.config import ConfigError
from primkd.io import DataError

log = logging.getLogger(__name__)

def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), NumPy's and Python's global generators."""
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (third-party code may draw from the legacy global generator)
    random.seed(seed)


def select_device(name: str, key: str = "train.device"):
    """``auto`` → CUDA when available, else CPU; returns a ``torch.device``.

    Raises:
        ConfigError: ``cuda`` asked for but none visible; the message names ``key``, where the value came from.
    """
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key} is 'cuda' but no CUDA device is visible; set {key} to auto or cpu")
    return torch.device(name)


# --- Determinism and signals (torch imported only when used) ----------------------------------------------


class TrainingInterrupted(SystemExit):
    """A signal stopped training after a checkpoint was saved; the process exits with status 128 + signal number."""

    def __init__(self, message: str, signum: int):
        super().__init__(128 + signum)
        self.message = message

    def __str__(self) -> str:
        return self.message


class StopRequest:
    """Set by the signal handler of :func:`stop_on_signal`; the loop polls it at iteration boundaries."""

    def __init__(self) -> None:
        self.signum: int | None = None


@contextlib.contextmanager
def stop_on_signal(*signums: int) -> Iterator[StopRequest]:
    """Turn each of ``signums`` (default SIGTERM) into a :class:`StopRequest` flag for the duration of the block (main
    thread only). A second Ctrl-C (SIGINT) stops at once, as Ctrl-C usually does."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(received: int, frame) -> None:
        request.signum = received
        again = " (Ctrl-C again to stop at once)" if received == signal.SIGINT else ""
        log.warning("received %s: stopping at the next iteration boundary%s", signal.Signals(received).name, again)
        if received == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = {signum: signal.signal(signum, handler) for signum in signums or (signal.SIGTERM,)}
    try:
        yield request
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: workers ignore SIGTERM (SLURM signals every process of the job) and SIGINT
    (Ctrl-C reaches the whole process group) so that the main process can finish its batch and save a checkpoint;
    they exit when the main process closes the loader."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


LOCK_FILE = ".lock"  # in a run's checkpoint folder: held by the process training the run


@contextlib.contextmanager
def checkpoint_lock(directory: Path, run: str) -> Iterator[None]:
    """Hold an exclusive lock on ``<directory>/.lock`` (which records the holder's process id) for the block.

    A trainer orphaned by a killed orchestrator keeps training and checkpointing; a second one on the same folder
    would interleave its checkpoints with the first's. Only rank 0 locks (every rank of a torchrun job shares the
    folder, and only rank 0 writes it). The lock goes with the process, however it ends.

    Raises:
        DataError: another process holds the lock (the message names it).
    """
    import fcntl

    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise DataError(f"{directory}: run {run!r} is being trained by process {holder}, which holds {path}; "
                            f"wait for it to finish, or stop it (kill {holder}) and run again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Within the block, use deterministic kernels when ``enabled`` (the previous settings are restored after).

    Sets ``torch.use_deterministic_algorithms``, cuDNN's deterministic/benchmark flags and the cuBLAS workspace
    (``CUBLAS_WORKSPACE_CONFIG``). CUDA has no deterministic kernel for some operations this network uses (the
    backward pass of bilinear upsampling, 2-D NLL loss): torch warns about them instead of failing, so CUDA runs
    stay close but not bit-identical; CPU runs are bit-identical.
    """
    import torch

    cudnn = torch.backends.cudnn
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              cudnn.deterministic, cudnn.benchmark)
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        cudnn.deterministic, cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        cudnn.deterministic, cudnn.benchmark = before[2], before[3]
