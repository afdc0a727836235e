"""Tiny checkpoints in the formats of the released files, for tests: PrimKD's RGB teacher (``nyu-rgb.pth``) and
CMX's NYU model, as their engines save them (``engine/engine.py`` ``save_checkpoint`` of CMX e251d86 and PrimKD
c816fd7): ``{"model": state dict with the official names (``module.`` removed), "optimizer": AdamW state,
"epoch", "iteration"}``."""

from pathlib import Path

import torch
from torch import nn

from primkd.models import CMX, cmx_to_official, teacher_to_official


def save_released(path: Path, model: nn.Module) -> Path:
    """Write ``model`` (a ``SegFormer`` teacher or a ``CMX``) as its released checkpoint would be written."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-5, weight_decay=0.0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # an optimiser state with moments, as a trained run saves; zero gradients leave the weights
    names = cmx_to_official if isinstance(model, CMX) else teacher_to_official
    torch.save({"model": names(model.state_dict()), "optimizer": optimizer.state_dict(), "epoch": 500,
                "iteration": 99500}, path)
    return path
