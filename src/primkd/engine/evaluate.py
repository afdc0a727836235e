"""Evaluation: one confusion matrix over the whole test split, single-scale or multi-scale + flip."""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from primkd.engine.distributed import all_reduce_sum
from primkd.engine.metrics import confusion_matrix, metrics_from_confusion
from primkd.io import DataError


class ShardSampler(Sampler):
    """Test indices of one rank: every ``world_size``-th image, without padding, so no image is counted twice."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, length, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


def model_inputs(batch: dict, inputs: Sequence[str], device: torch.device) -> list[Tensor]:
    """The tensors a model takes, in order: ``("rgb",)``, ``("modal",)`` or ``("rgb", "modal")``."""
    return [batch[k].to(device, non_blocking=True) for k in inputs]


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def predict_probs(model: nn.Module, xs: list[Tensor], scales: Sequence[float], flip: bool) -> Tensor:
    """Class probabilities summed over scales (and flips), B×K×H×W at the input size.

    Each scaled input is resized bilinearly (align_corners False), its logits are resized back to H×W and turned
    into probabilities before summing, as the official multi-scale evaluation does.
    """
    H, W = xs[0].shape[-2:]
    total = None
    for scale in scales:
        size = (max(1, round(H * scale)), max(1, round(W * scale)))
        scaled = [x if size == (H, W) else _resize(x, size) for x in xs]
        variants = [scaled, [x.flip(-1) for x in scaled]] if flip else [scaled]
        for i, v in enumerate(variants):
            logits = model(*v)["logits"].float()
            if i == 1:
                logits = logits.flip(-1)
            probs = _resize(logits, (H, W)).softmax(dim=1) if logits.shape[-2:] != (H, W) else logits.softmax(1)
            total = probs if total is None else total + probs
    return total


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, num_classes: int, inputs: Sequence[str], device: torch.device,
             scales: Sequence[float] = (1.0,), flip: bool = False, progress: bool = True) -> dict:
    """Segmentation metrics of ``model`` over ``loader``.

    Under ``torchrun`` each rank evaluates its shard of the test set (see :class:`ShardSampler`) and the confusion
    matrices are summed over ranks, so every rank returns the metrics of the whole test set.

    Returns:
        :func:`primkd.engine.metrics.metrics_from_confusion` of the accumulated matrix, plus ``confusion``
        (K×K int64 tensor, rows = ground truth).
    """
    was_training = model.training
    model.eval()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not progress, leave=False):
        probs = predict_probs(model, model_inputs(batch, inputs, device), scales, flip)
        conf += confusion_matrix(probs.argmax(1), batch["label"].to(device), num_classes)
    model.train(was_training)
    conf = all_reduce_sum(conf)
    metrics = metrics_from_confusion(conf.cpu())
    metrics["confusion"] = conf.cpu()
    return metrics


def model_files(path: Path) -> dict[int | None, Path]:
    """Model files of one run: ``path`` itself (a single model) or ``path/seed<k>/model.pt`` (one per seed)."""
    path = Path(path)
    if path.is_file():
        return {None: path}
    seeds = {int(p.parent.name[4:]): p for p in path.glob("seed*/model.pt") if p.parent.name[4:].isdigit()}
    if not seeds:
        raise DataError(f"{path}: neither a model file nor a folder of seed<k>/model.pt; run its training stage")
    return dict(sorted(seeds.items()))


def summarize_seeds(per_seed: dict[int | None, dict], classes: Sequence[str]) -> dict:
    """Mean and standard deviation (ddof 0; 0 for one seed) over seeds of the scalar metrics, mean per-class IoU."""
    out: dict = {}
    for key in ("miou", "macc", "pacc"):
        values = np.array([m[key] for m in per_seed.values()], dtype=np.float64)
        out[key], out[f"{key}_std"] = float(values.mean()), float(values.std())
    iou = np.array([[np.nan if v is None else v for v in m["iou"]] for m in per_seed.values()], dtype=np.float64)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # classes absent from every seed stay NaN
        mean_iou = np.nanmean(iou, axis=0)
    out["iou"] = {c: None if np.isnan(v) else float(v) for c, v in zip(classes, mean_iou)}
    out["seeds"] = [s for s in per_seed if s is not None]
    out["per_seed"] = [{"seed": s, **{k: m[k] for k in ("miou", "macc", "pacc")}} for s, m in per_seed.items()]
    return out
