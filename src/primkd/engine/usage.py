"""What a training process spends: wall time per optimiser step and peak memory, for train.json (the rehearsal's
projections, docs/BENCHMARKS.md). Measured in the process itself, so a run under DVC or Snakemake reports the same."""

from __future__ import annotations

import contextlib
import resource
import statistics
import time
from collections.abc import Iterator

import torch


class StepClock:
    """Wall seconds of each optimiser step of this process. The first is reported apart: it pays for lazy
    initialisation (allocator, cuDNN autotuning, compilation) that the later steps do not."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    @contextlib.contextmanager
    def step(self, device: torch.device) -> Iterator[None]:
        start = time.perf_counter()
        yield
        if device.type == "cuda":  # kernels run asynchronously: the step ends when the GPU is done
            torch.cuda.synchronize(device)
        self.seconds.append(time.perf_counter() - start)

    def summary(self) -> dict:
        """``{steps, first, median_after_first}`` in seconds (None where there are too few steps)."""
        rest = self.seconds[1:]
        return {"steps": len(self.seconds), "first": round(self.seconds[0], 4) if self.seconds else None,
                "median_after_first": round(statistics.median(rest), 4) if rest else None}


def peak_memory(device: torch.device) -> dict:
    """Peak resident memory of this process (DataLoader workers not included) and, on a GPU, the peak of tensors
    allocated on it, in MiB."""
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux reports KiB
    cuda = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"rss_mib": round(rss_kib / 1024, 1), "cuda_allocated_mib": None if cuda is None else round(cuda, 1)}
