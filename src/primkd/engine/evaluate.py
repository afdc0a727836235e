"""Evaluation: one confusion matrix over the whole test split, single-scale or multi-scale + flip, predictions scored
as the official CMX/PrimKD evaluator does (:func:`predict_scores`)."""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from primkd.config import EvalConfig
from primkd.engine.distributed import all_reduce_sum
from primkd.engine.metrics import confusion_matrix, metrics_from_confusion
from primkd.engine.results import ModeResult, SeedResult

log = logging.getLogger(__name__)


class ShardSampler(Sampler):
    """Test indices of one rank: every ``world_size``-th image, without padding, so no image is counted twice."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1):
        self.indices = list(range(rank, length, world_size))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)


def model_inputs(batch: dict, inputs: Sequence[str], device: torch.device) -> list[Tensor]:
    """The tensors a model takes, in the order of its batch keys ``inputs`` (a model file's ``inputs``)."""
    return [batch[k].to(device, non_blocking=True) for k in inputs]


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


# MiT's smallest input: stage 1 reduces its keys/values 8× on a 4× patch grid, so a side under 32 pixels leaves the
# reduction convolution less than one kernel. Smaller network inputs are padded up to it (like any crop padding).
MIN_INPUT_SIZE = 32
WINDOW_MODES = ("official", "corrected")


def _centre_pad(x: Tensor, size: tuple[int, int]) -> tuple[Tensor, tuple[int, int, int, int]]:
    """Zero-pad B×C×H×W ``x`` to at least ``size``, centred (odd margins put the extra pixel below / right).

    Returns the padded tensor and its margins (top, bottom, left, right); 0 after normalisation is the mean colour.
    """
    margin = _margins(tuple(x.shape[-2:]), size)
    if any(margin):
        x = F.pad(x, (margin[2], margin[3], margin[0], margin[1]))
    return x, margin


def _margins(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int, int, int]:
    pad_h, pad_w = max(target[0] - size[0], 0), max(target[1] - size[1], 0)
    return pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2


def window_scores(model: nn.Module, xs: list[Tensor], crop: tuple[int, int] | None, flip: bool) -> Tensor:
    """exp(logits) of one network input, B×K×h×w at the size of ``xs``, as the official evaluator scores a window.

    The inputs are centred and zero-padded to ``crop`` (and to :data:`MIN_INPUT_SIZE`), the network runs on the padded
    tensors and the padding is cut from its output. With ``flip`` the logits of the flipped input, flipped back, are
    added **before** the exponential: exp(z + z_flipped), as the official code does (not exp(z) + exp(z_flipped)).
    """
    h, w = xs[0].shape[-2:]
    target = (max(crop[0] if crop else 0, MIN_INPUT_SIZE), max(crop[1] if crop else 0, MIN_INPUT_SIZE))
    padded = [_centre_pad(x, target)[0] for x in xs]
    top, _, left, _ = _margins((h, w), target)
    logits = model(*padded)["logits"].float()
    if flip:
        logits = logits + model(*[x.flip(-1) for x in padded])["logits"].float().flip(-1)
    return logits[..., top : top + h, left : left + w].exp()  # (B, K, h, w)


def sliding_windows(size: tuple[int, int], crop: tuple[int, int], stride_rate: float,
                    mode: str = "official") -> list[tuple[slice, slice]]:
    """(rows, columns) slices of the sliding windows over an H×W image larger than ``crop`` on both sides.

    Strides are ceil(crop · stride_rate) per axis and the last window of each axis is moved back to end at the image
    border. ``"official"`` reproduces the released index arithmetic of CMX's ``scale_process_rgbX``, which swaps the
    axes: windows are crop_w rows × crop_h columns, rows advance by the column stride and columns by the row stride,
    and a start that falls before 0 is a negative Python index (the window then covers only the last rows or columns;
    on a 600×800 image with a 480×640 crop only rows 560-599 are scored, on 720×960 columns 800-959 are not).
    ``"corrected"`` uses crop_h × crop_w windows with their own strides.
    """
    if mode not in WINDOW_MODES:
        raise ValueError(f"eval.windows {mode!r} is not one of {WINDOW_MODES}")
    H, W = size
    ch, cw = crop
    stride = (math.ceil(ch * stride_rate), math.ceil(cw * stride_rate))
    rows_n, cols_n = math.ceil((H - ch) / stride[0]) + 1, math.ceil((W - cw) / stride[1]) + 1
    windows = []
    for gy in range(rows_n):
        for gx in range(cols_n):
            if mode == "official":
                e_x, e_y = min(gx * stride[0] + ch, W), min(gy * stride[1] + cw, H)
                windows.append((slice(e_y - cw, e_y), slice(e_x - ch, e_x)))
            else:
                e_y, e_x = min(gy * stride[0] + ch, H), min(gx * stride[1] + cw, W)
                windows.append((slice(e_y - ch, e_y), slice(e_x - cw, e_x)))
    return windows


def scale_scores(model: nn.Module, xs: list[Tensor], crop: tuple[int, int] | None, flip: bool,
                 stride_rate: float = 2 / 3, windows: str = "official") -> Tensor:
    """Scores B×K×h×w of inputs already resized to one scale: one padded pass when a side is at most the crop's,
    else the sum (not the mean) of :func:`window_scores` over :func:`sliding_windows`."""
    h, w = xs[0].shape[-2:]
    if crop is None or h <= crop[0] or w <= crop[1]:
        return window_scores(model, xs, crop, flip)
    total = None
    for rows, cols in sliding_windows((h, w), crop, stride_rate, windows):
        part = window_scores(model, [x[..., rows, cols] for x in xs], crop, flip)
        if total is None:
            total = part.new_zeros((*part.shape[:2], h, w))  # (B, K, h, w)
        total[..., rows, cols] += part
    return total


@torch.no_grad()
def predict_scores(model: nn.Module, xs: list[Tensor], scales: Sequence[float] = (1.0,), flip: bool = False,
                   crop: tuple[int, int] | None = None, stride_rate: float = 2 / 3,
                   windows: str = "official") -> Tensor:
    """Class scores B×K×H×W at the input size, as the official evaluator (CMX ``sliding_eval_rgbX``) computes them.

    For each scale the (normalised) inputs are resized bilinearly to round(H·s)×round(W·s); at sizes up to the crop
    the network sees them centred and zero-padded to the crop, above it sliding windows whose scores are summed where
    they overlap (see :func:`scale_scores`); the scores are exp(logits) (with flip exp(z + z_flipped)), resized back
    bilinearly and summed over scales. Take the argmax over K for the prediction; the scores are not probabilities.

    Args:
        model: segmentation network returning ``{"logits": B×K×h×w}`` at its input size.
        xs: its inputs, B×3×H×W each (normalised).
        scales: test scales.
        flip: add the horizontally flipped pass.
        crop: (height, width) of the network input (the official test crop is the training crop); None pads only
            to :data:`MIN_INPUT_SIZE` and never slides.
        stride_rate: window stride as a fraction of the crop (official 2/3).
        windows: ``"official"`` or ``"corrected"`` window arithmetic (:func:`sliding_windows`).
    """
    H, W = xs[0].shape[-2:]
    total = None
    for scale in scales:
        size = (max(1, round(H * scale)), max(1, round(W * scale)))
        scaled = [x if size == (H, W) else _resize(x, size) for x in xs]
        scores = scale_scores(model, scaled, crop, flip, stride_rate, windows)
        scores = (scores if size == (H, W) else _resize(scores, (H, W))).double()  # summed in float64, as official
        total = scores if total is None else total + scores
    return total


predict_probs = predict_scores  # the former name, still used by primkd.infer and bench/


def per_image_counts(pred: Tensor, label: Tensor, num_classes: int,
                     ignore_index: int = 255) -> tuple[Tensor, Tensor]:
    """Per-image per-class intersection and union pixel counts (B×K int64 each) of B×H×W predictions and labels.

    Pixels are counted as :func:`primkd.engine.metrics.confusion_matrix` counts them (labels outside 0..K-1 or equal
    to ``ignore_index`` are skipped), so summed over images they are the diagonal and row + column − diagonal of the
    test set's confusion matrix. They are what the paired bootstrap of :mod:`primkd.report.significance` resamples.
    """
    b = pred.shape[0]
    image = torch.arange(b, device=pred.device).view(b, *([1] * (pred.dim() - 1))).expand_as(pred)
    pred, label, image = pred.reshape(-1).long(), label.reshape(-1).long(), image.reshape(-1)
    valid = (label >= 0) & (label < num_classes) & (label != ignore_index)
    pred, label, image = pred[valid], label[valid], image[valid]
    size = b * num_classes

    def count(cls: Tensor, keep: Tensor | None = None) -> Tensor:
        idx = image * num_classes + cls
        return torch.bincount(idx if keep is None else idx[keep], minlength=size).reshape(b, num_classes)

    inter = count(label, pred == label)
    return inter, count(label) + count(pred) - inter


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, num_classes: int, inputs: Sequence[str], device: torch.device,
             scales: Sequence[float] = (1.0,), flip: bool = False, progress: bool = True,
             crop: Sequence[int] | None = None, windows: str = "official", per_image: bool = False) -> dict:
    """Segmentation metrics of ``model`` over ``loader``, predictions by :func:`predict_scores` (``scales``, ``flip``,
    ``crop``, ``windows`` as there).

    Under ``torchrun`` each rank evaluates its shard of the test set (see :class:`ShardSampler`) and the confusion
    matrices are summed over ranks, so every rank returns the metrics of the whole test set.

    Returns:
        :func:`primkd.engine.metrics.metrics_from_confusion` of the accumulated matrix, plus ``confusion``
        (K×K int64 tensor, rows = ground truth); with ``per_image`` also ``per_image``: ``{"intersection",
        "union"}`` (N×K int64 tensors, :func:`per_image_counts` of each test image, in the dataset's order, summed
        over ranks like the matrix) and ``images`` (the dataset's ``names``).
    """
    was_training = model.training
    model.eval()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    names = list(getattr(loader.dataset, "names", range(len(loader.dataset))))
    position = {str(n): i for i, n in enumerate(names)}
    inter = torch.zeros(len(names) if per_image else 0, num_classes, dtype=torch.int64, device=device)
    union = torch.zeros_like(inter)
    seen = 0  # datasets without names: images in loader order (one rank)
    for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not progress, leave=False):
        scores = predict_scores(model, model_inputs(batch, inputs, device), scales, flip,
                                tuple(crop) if crop is not None else None, windows=windows)
        pred, label = scores.argmax(1), batch["label"].to(device)
        conf += confusion_matrix(pred, label, num_classes)
        if per_image:
            rows = ([position[str(n)] for n in batch["name"]] if "name" in batch
                    else list(range(seen, seen + len(pred))))
            seen += len(pred)
            i, u = per_image_counts(pred, label, num_classes)
            inter[rows] += i
            union[rows] += u
    model.train(was_training)
    conf = all_reduce_sum(conf)
    metrics = metrics_from_confusion(conf.cpu())
    metrics["confusion"] = conf.cpu()
    if per_image:
        metrics["per_image"] = {"intersection": all_reduce_sum(inter).cpu(), "union": all_reduce_sum(union).cpu(),
                                "images": [str(n) for n in names]}
    return metrics


def mode_result(per_seed: dict[int | None, tuple[dict, int | None]], classes: Sequence[str], scales: Sequence[float],
                flip: bool) -> ModeResult:
    """One checkpoint in one mode over seeds from each seed's ``(metrics, epoch)`` (metrics of :func:`evaluate`),
    with the per-class IoU averaged over the seeds that define it."""
    seeds = tuple(SeedResult(s, m["miou"], m["macc"], m["pacc"], epoch) for s, (m, epoch) in per_seed.items())
    iou = np.array([[np.nan if v is None else v for v in m["iou"]] for m, _ in per_seed.values()], dtype=np.float64)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # classes absent from every seed stay NaN
        mean_iou = np.nanmean(iou, axis=0)
    iou_by_class = {c: None if np.isnan(v) else float(v) for c, v in zip(classes, mean_iou)}
    return ModeResult(tuple(scales), flip, seeds, iou_by_class)


def evaluation_modes(ev: EvalConfig) -> dict[str, tuple[list[float], bool]]:
    """The two modes every evaluated run is scored in: ``single`` (scale 1, no flip: the paper's ablations) and
    ``multi_scale_flip`` (``eval.scales`` and ``eval.flip``: the paper's Table 2)."""
    return {"single": ([1.0], False), "multi_scale_flip": (list(ev.scales), ev.flip)}


def evaluate_modes(model: nn.Module, loader: DataLoader, num_classes: int, inputs: Sequence[str], device: torch.device,
                   ev: EvalConfig, crop: Sequence[int] | None, progress: bool = True,
                   modes: Sequence[str] | None = None, per_image: bool = False) -> dict[str, dict]:
    """:func:`evaluate` in each of :func:`evaluation_modes` (or the ``modes`` named), with its per-image counts when
    ``per_image``; a multi-scale mode equal to the single one is not rerun."""
    out: dict[str, dict] = {}
    for mode, (scales, flip) in evaluation_modes(ev).items():
        if modes is not None and mode not in modes:
            continue
        if mode != "single" and (scales, flip) == ([1.0], False):
            out[mode] = out["single"]
            continue
        start = time.perf_counter()
        out[mode] = evaluate(model, loader, num_classes, inputs, device, scales, flip, progress, crop,
                             ev.windows, per_image)
        seconds = time.perf_counter() - start  # the rehearsal reads it (bench/rehearse.py: evaluation per image)
        log.info("%s mode: %d %s images in %.2f s (%.3f s per image)", mode, len(loader.dataset),
                 getattr(loader.dataset, "split", "test"), seconds, seconds / max(len(loader.dataset), 1))
    return out


def evaluation_report(results: dict[str, dict], classes: Sequence[str],
                      ev: EvalConfig) -> dict[str, dict[str, ModeResult]]:
    """The results of one run by checkpoint and mode (:attr:`primkd.engine.results.Evaluation.results`) from
    :func:`evaluate_modes` results per checkpoint and seed.

    Args:
        results: ``{"last": {seed: (modes, epoch)}, "best": {...}}`` (``best`` only when training kept one); a mode
            missing from a seed's results is left out.
        classes: class names.
        ev: the ``eval`` settings (its scales and flip define the multi-scale mode).
    """
    out: dict[str, dict[str, ModeResult]] = {}
    for checkpoint, per_seed in results.items():
        for mode, (scales, flip) in evaluation_modes(ev).items():
            if per_seed and all(mode in m for m, _ in per_seed.values()):
                by_seed = {s: (m[mode], epoch) for s, (m, epoch) in per_seed.items()}
                out.setdefault(checkpoint, {})[mode] = mode_result(by_seed, classes, scales, flip)
    return out
