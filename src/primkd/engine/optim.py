"""AdamW with decay on conv/linear weights only, and the warm-up + poly learning-rate schedule (docs/design.md §3)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from primkd.config import TrainConfig


def param_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict]:
    """Two AdamW groups: conv/linear weights (≥ 2-D) decay; biases and norm affine parameters (1-D) do not."""
    decay, no_decay = [], []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(modules: Iterable[nn.Module], train: TrainConfig) -> torch.optim.AdamW:
    """AdamW over ``modules`` with the learning rate, betas and weight decay of the ``train`` settings."""
    return torch.optim.AdamW(param_groups(modules, train.weight_decay), lr=train.lr, betas=train.betas)


def warmup_poly_factor(iteration: int, total_iters: int, warmup_iters: int, warmup_ratio: float, power: float) -> float:
    """Learning-rate multiplier at ``iteration`` (0-based).

    Linear warm-up from ``warmup_ratio`` to 1 over ``warmup_iters`` iterations, then ``(1 − it / total) ** power``
    as the official CMX/PrimKD schedule computes it (the poly term counts from iteration 0, not from the end of the
    warm-up).
    """
    if iteration < warmup_iters:
        return max(warmup_ratio, iteration / warmup_iters)
    return max(0.0, 1.0 - iteration / total_iters) ** power


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainConfig, iters_per_epoch: int):
    """Per-iteration LambdaLR implementing :func:`warmup_poly_factor` for the ``train`` settings."""
    total = train.epochs * iters_per_epoch
    warmup = round(train.warmup_epochs * iters_per_epoch)
    ratio, power = train.warmup_ratio, train.poly_power
    if train.first_step_full_lr:
        # The official loop sets the rate after each step: step 1 runs at the optimiser's initial (full) rate and
        # step k + 1 at the schedule's value for iteration k - 1.
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda it: 1.0 if it == 0 else warmup_poly_factor(it - 1, total, warmup, ratio, power))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: warmup_poly_factor(it, total, warmup, ratio, power))
