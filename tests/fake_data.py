"""A random prepared dataset for tests that train, evaluate or check data, and tiny checkpoints in the released
files' format (tests/ is on pytest's pythonpath)."""

from pathlib import Path

import numpy as np
import torch
from torch import nn

from primkd.data.layout import IGNORE_INDEX, write_split
from primkd.io import write_json, write_png
from primkd.models import CMX, cmx_to_official, teacher_to_official

REPO = Path(__file__).resolve().parents[1]


def make_dataset(root: Path, n_train: int = 4, n_test: int = 2, size=(32, 48), classes: int = 3) -> Path:
    """A random prepared dataset with a matching HHA folder (``root/hha``)."""
    rng = np.random.default_rng(0)
    H, W = size
    names = {"train": [f"tr{i}" for i in range(n_train)], "test": [f"te{i}" for i in range(n_test)]}
    for name in names["train"] + names["test"]:
        label = rng.integers(0, classes, (H, W)).astype(np.uint8)
        label[0, :] = IGNORE_INDEX
        write_png(root / "RGB" / f"{name}.png", rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
        write_png(root / "Depth" / f"{name}.png", rng.integers(500, 4000, (H, W)).astype(np.uint16))
        write_png(root / "Label" / f"{name}.png", label)
        write_png(root / "hha" / f"{name}.png", rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    for split, items in names.items():
        write_split(root, split, items)
    write_json(root / "meta.json", {"name": "random", "classes": [f"c{i}" for i in range(classes)],
                                    "intrinsics": {"fx": 50.0, "fy": 50.0, "cx": 24.5, "cy": 16.5}})
    return root


def fake_mode(per_seed: dict, macc: float = 0.6, pacc: float = 0.7, scales=(1.0,), flip: bool = False,
              epochs: dict | None = None):
    """One checkpoint × mode of an evaluation from ``{seed: miou}`` or ``{seed: (miou, macc, pacc)}`` (metrics in
    [0, 1]; two classes, IoU 0.4 and 0.6); ``epochs``: ``{seed: epoch}``."""
    from primkd.engine.results import ModeResult, SeedResult

    rows = {s: v if isinstance(v, tuple) else (v, macc, pacc) for s, v in per_seed.items()}
    seeds = tuple(SeedResult(s, *v, (epochs or {}).get(s)) for s, v in rows.items())
    return ModeResult(tuple(scales), flip, seeds, {"c0": 0.4, "c1": 0.6})


def write_evaluation(path: Path, last: dict, best: dict | None = None, per_image: dict | None = None,
                     model: str = "x") -> None:
    """``eval/<run>.json`` as ``primkd evaluate`` writes it, from ``{mode: fake_mode(...)}`` per checkpoint."""
    from primkd.engine.results import Evaluation

    Evaluation(model, 4, {"last": last, **({"best": best} if best else {})}, per_image).write(path)


# The released checkpoints' format (engine/engine.py `save_checkpoint` of CMX e251d86 and PrimKD c816fd7, which writes
# PrimKD's RGB teacher nyu-rgb.pth and CMX's NYU model): {"model": state dict with the official names, "module."
# removed, "optimizer": AdamW state, "epoch", "iteration"}.
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
