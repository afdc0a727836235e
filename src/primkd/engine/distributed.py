"""Multi-process training with ``torchrun``: process group set-up, batch splitting and cross-rank reductions.

``torchrun --nproc_per_node=N -m primkd train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; a plain ``primkd train``
runs as a single process with the same code path (rank 0 of 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank, the number of ranks, its local GPU index."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, writes checkpoints and outputs."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (NCCL on GPUs, gloo on CPU).

    Returns the rank information; without ``WORLD_SIZE`` > 1 nothing is initialised.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return info


def split_batch(global_batch: int, world_size: int, micro_batch: int) -> tuple[int, int]:
    """Per-rank micro-batch and gradient-accumulation steps so that ranks × micro × steps = the global batch.

    Args:
        global_batch: ``train.batch_size`` (images per optimiser step over all ranks).
        world_size: number of ranks.
        micro_batch: images per rank and forward pass (``train.micro_batch``); 0 = global / ranks (no accumulation).

    Returns:
        (micro batch, accumulation steps).
    """
    micro = micro_batch or global_batch // world_size
    if micro < 1 or global_batch % (world_size * micro):
        raise ValueError(f"train.batch_size = {global_batch} is not a multiple of {world_size} ranks x "
                         f"train.micro_batch = {micro}; choose values whose product divides the batch size")
    return micro, global_batch // (world_size * micro)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (a no-op in a single process); returns it."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group at the end of a run."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
