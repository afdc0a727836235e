"""Semantic segmentation metrics from one confusion matrix accumulated over a whole test set.

Convention: ``conf[i, j]`` counts pixels whose ground truth is class i and whose prediction is class j (rows = ground
truth, columns = prediction). IoU = diag / (row + col − diag); mIoU = nanmean of IoU over classes whose union is
non-empty; mean accuracy = nanmean(diag / row); pixel accuracy = trace / total.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # no torch at import: the report stage reads seed_spread and must run without it
    from torch import Tensor


def confusion_matrix(pred: Tensor, label: Tensor, num_classes: int, ignore_index: int = 255) -> Tensor:
    """Count (ground truth, prediction) pairs with one ``bincount``.

    Args:
        pred: predicted class indices in 0..K-1, any shape (e.g. B×H×W), on CPU or CUDA.
        label: ground-truth labels of the same shape; pixels whose label is outside 0..K-1 or equals
            ``ignore_index`` are not counted.
        num_classes: K.
        ignore_index: label value to skip (255 in the prepared datasets).

    Returns:
        K×K int64 tensor on the inputs' device.
    """
    if pred.shape != label.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} and label shape {tuple(label.shape)} differ; "
                         f"resize the prediction to the label resolution first")
    pred, label = pred.reshape(-1).long(), label.reshape(-1).long()  # (N,)
    valid = (label >= 0) & (label < num_classes) & (label != ignore_index)
    pred, label = pred[valid], label[valid]
    if pred.numel() and (pred.min() < 0 or pred.max() >= num_classes):
        raise ValueError(f"predicted class indices must lie in 0..{num_classes - 1}, got "
                         f"{int(pred.min())}..{int(pred.max())}; pass argmax over the K class logits")
    counts = (label * num_classes + pred).bincount(minlength=num_classes * num_classes)  # (K·K,)
    return counts.reshape(num_classes, num_classes)  # (K, K): rows ground truth, columns prediction


def seed_spread(values: Iterable[float | None]) -> tuple[float, float | None, int] | None:
    """Mean, sample standard deviation (ddof 1) and count of the finite ``values`` (one per seed).

    The one definition of "mean ± std over seeds" that the evaluation JSON, ``primkd compare``, the report's tables and
    the significance block share, so that one run never shows two spreads. The std is ``None`` for a single value (one
    seed has no spread, and 0 would read as a measured one); the result is ``None`` when no value is finite.
    """
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    mean = math.fsum(finite) / len(finite)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in finite) / (len(finite) - 1)) if len(finite) > 1 else None
    return mean, std, len(finite)


def _nan_to_none(values: np.ndarray) -> list[float | None]:
    return [None if np.isnan(v) else float(v) for v in values]


def _nanmean(values: np.ndarray) -> float:
    """Mean over non-NaN entries; NaN when every entry is NaN (no warning)."""
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def metrics_from_confusion(conf: Tensor | np.ndarray) -> dict[str, Any]:
    """mIoU, mean accuracy, pixel accuracy and per-class IoU / accuracy from a K×K confusion matrix.

    Args:
        conf: K×K counts, rows = ground truth, columns = prediction.

    Returns:
        ``miou``, ``macc``, ``pacc`` (floats in [0, 1]; NaN only for an empty matrix); ``iou`` and ``acc``: per-class
        lists with None where undefined (IoU: class neither present nor predicted; accuracy: class absent from the
        ground truth). Undefined classes are excluded from the means.
    """
    if hasattr(conf, "detach"):  # a torch tensor, on any device
        conf = conf.detach().cpu().numpy()
    conf = np.asarray(conf, dtype=np.float64)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"confusion matrix must be K×K, got shape {conf.shape}")
    diag, rows, cols = np.diag(conf), conf.sum(axis=1), conf.sum(axis=0)
    union = rows + cols - diag
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, diag / union, np.nan)
        acc = np.where(rows > 0, diag / rows, np.nan)
    total = conf.sum()
    return {
        "miou": _nanmean(iou),
        "macc": _nanmean(acc),
        "pacc": float(np.trace(conf) / total) if total > 0 else float("nan"),
        "iou": _nan_to_none(iou),
        "acc": _nan_to_none(acc),
    }
