"""Multi-process training with ``torchrun``: process group set-up, batch splitting and cross-rank reductions.

``torchrun --nproc_per_node=N -m primkd train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; a plain ``primkd train``
runs as a single process with the same code path (rank 0 of 1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from primkd.config import ConfigError


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

    Raises:
        ConfigError: the global batch does not split evenly.
    """
    micro = micro_batch or global_batch // world_size
    if micro < 1 or global_batch % (world_size * micro):
        raise ConfigError(f"train.batch_size = {global_batch} is not a multiple of {world_size} ranks x "
                          f"train.micro_batch = {micro}; in params.yaml make train.batch_size a multiple of ranks x "
                          f"train.micro_batch (train.micro_batch: 0 = batch size / ranks, no accumulation)")
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


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the whole batch over all ranks, for CPU ranks (gloo),
    where ``torch.nn.SyncBatchNorm`` does not run. Sums and sums of squares are all-reduced with autograd, so the
    gradients are those of one process holding the whole batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not (dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        C = x.shape[1]
        count = x.new_tensor([x.numel() / C])
        stats = all_reduce(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3)), count]))  # (2C + 1,)
        n = stats[-1]
        mean = stats[:C] / n
        var = stats[C : 2 * C] / n - mean * mean  # biased, as BatchNorm normalises with
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1))  # unbiased, as BatchNorm stores
        shape = (1, C, 1, 1)
        x_hat = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return x_hat * self.weight.view(shape) + self.bias.view(shape)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Synchronise every plain ``BatchNorm2d`` over the ranks: ``nn.SyncBatchNorm`` on GPUs,
    :class:`GlooSyncBatchNorm` on CPUs (weights and running statistics carried over; state-dict names unchanged).

    Subclasses are left alone: the fusion modules' per-image BatchNorms (``train.fusion_bn: per_image``,
    :class:`primkd.models.fusion.PerImageBatchNorm2d`) normalise each image by itself, as the released code's plain
    ``BatchNorm2d`` does on its one image per GPU, so only the decoder's BatchNorm spans the ranks there.
    """
    synced_type = nn.SyncBatchNorm if device.type == "cuda" else GlooSyncBatchNorm
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            synced = synced_type(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            synced.load_state_dict(child.state_dict())
            setattr(module, name, synced)
        else:
            convert_sync_batchnorm(child, device)
    return module
