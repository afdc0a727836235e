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

import numpy as np

from primkd.config import ConfigError

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
def stop_on_signal(signum: int = signal.SIGTERM) -> Iterator[StopRequest]:
    """Turn ``signum`` into a :class:`StopRequest` flag for the duration of the block (main thread only)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(received: int, frame) -> None:
        request.signum = received
        log.warning("received %s: stopping at the next iteration boundary", signal.Signals(received).name)

    previous = signal.signal(signum, handler)
    try:
        yield request
    finally:
        signal.signal(signum, previous)


def ignore_sigterm(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: workers ignore SIGTERM (SLURM signals every process of the job) so that the
    main process can finish its batch and save a checkpoint; they exit when the main process closes the loader."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


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
