"""Seed statistics and paired bootstrap intervals of mIoU differences (pure numpy).

mIoU is a dataset-level quantity: each class's IoU is its intersection summed over the test images divided by its
union summed over them, then the classes are averaged. It is not a mean over images, so the bootstrap resamples
*images*, sums their per-image per-class counts and recomputes mIoU from the sums (Efron & Tibshirani 1993, ch. 13,
percentile interval). The two runs compared are scored on the same resampled images (paired), which removes the
variance that the choice of test images would add to each run separately.

Inputs are per-image counts: ``inter[s, n, k]`` and ``union[s, n, k]`` for seed s, test image n and class k, where
union = ground truth + prediction − intersection pixels (both additive over images, so summing them over any subset
of images gives that subset's dataset-level counts). A run may have one seed (a teacher) or several (students); its
mIoU is the mean over its seeds, and the statistic bootstrapped is

    Δ = mean_s mIoU_b(s) − mean_s mIoU_a(s)

with one image resample shared by every seed of both runs ("pooled over seeds"). On disk (written by the evaluate
stage, read by :func:`read_counts`) a run's counts are one ``.npz`` file with ``intersection`` and ``union``
(S×N×K int64), ``seeds`` (S,) and ``images`` (N,) test image names in split order.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from primkd.io import DataError


@dataclass(frozen=True)
class Counts:
    """Per-image per-class pixel counts of one run: S seeds × N test images × K classes."""

    intersection: np.ndarray  # (S, N, K) int64
    union: np.ndarray  # (S, N, K) int64
    seeds: tuple[int, ...] = ()
    images: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        inter, union = np.asarray(self.intersection), np.asarray(self.union)
        if inter.ndim == 2:  # a single seed given as N×K
            inter, union = inter[None], union[None]
        if inter.ndim != 3 or inter.shape != union.shape:
            raise ValueError(f"per-image counts must be S×N×K (or N×K) with equal shapes, got intersection "
                             f"{inter.shape} and union {union.shape}")
        if (inter < 0).any() or (inter > union).any():
            raise ValueError("per-image counts need 0 <= intersection <= union for every image and class")
        object.__setattr__(self, "intersection", inter.astype(np.int64))
        object.__setattr__(self, "union", union.astype(np.int64))

    @property
    def num_images(self) -> int:
        return self.intersection.shape[1]


def counts_from_confusion(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intersection and union (…×K each) from confusion matrices (…×K×K, rows ground truth, columns prediction)."""
    conf = np.asarray(conf, dtype=np.int64)
    diag = np.diagonal(conf, axis1=-2, axis2=-1)  # (..., K)
    return diag, conf.sum(axis=-1) + conf.sum(axis=-2) - diag


def miou_from_counts(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """mIoU from summed counts (…×K): mean IoU over the classes with a non-empty union (NaN if there is none)."""
    inter, union = np.asarray(inter, dtype=np.float64), np.asarray(union, dtype=np.float64)
    present = union > 0
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=present)
    n = present.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, iou.sum(axis=-1) / n, np.nan)


def seed_mious(counts: Counts) -> np.ndarray:
    """mIoU of each seed over all test images (S,)."""
    return miou_from_counts(counts.intersection.sum(axis=1), counts.union.sum(axis=1))


@dataclass(frozen=True)
class Comparison:
    """Run b against run a (e.g. PrimKD against CMX); mIoU as fractions in [0, 1]."""

    miou_a: float  # mean over a's seeds
    std_a: float  # standard deviation over a's seeds (ddof 0, as the evaluate stage reports; 0 for one seed)
    miou_b: float
    std_b: float
    delta: float  # miou_b − miou_a on all test images
    ci_low: float  # percentile bootstrap interval of delta over test images
    ci_high: float
    confidence: float
    num_images: int
    num_boot: int

    @property
    def significant(self) -> bool:
        """Whether the interval excludes 0."""
        return self.ci_low > 0 or self.ci_high < 0


def paired_bootstrap(a: Counts, b: Counts, num_boot: int = 10000, confidence: float = 0.95, seed: int = 0,
                     chunk: int = 1000) -> Comparison:
    """Mean ± std over seeds of both runs and a paired bootstrap interval of their mIoU difference.

    Args:
        a: reference run (counts on the same N test images, in the same order, as ``b``).
        b: compared run.
        num_boot: bootstrap resamples of the N test images (with replacement).
        confidence: coverage of the two-sided percentile interval.
        seed: seed of the resampling; the same inputs and seed give the same interval.
        chunk: resamples evaluated per matrix product (memory: chunk × N floats).

    Returns:
        A :class:`Comparison`; ``delta`` is the difference on the full data, whatever the resamples.
    """
    if a.num_images != b.num_images or a.intersection.shape[2] != b.intersection.shape[2]:
        raise ValueError(f"the two runs must be scored on the same test images and classes, got N×K = "
                         f"{a.intersection.shape[1:]} and {b.intersection.shape[1:]}")
    if a.images and b.images and a.images != b.images:
        raise ValueError("the two runs list different test images (or another order); evaluate both on one split")
    if num_boot < 1 or not 0 < confidence < 1:
        raise ValueError(f"need num_boot >= 1 and 0 < confidence < 1, got {num_boot} and {confidence}")
    ma, mb = seed_mious(a), seed_mious(b)
    n = a.num_images
    rng = np.random.default_rng(seed)
    deltas = np.empty(num_boot)
    for start in range(0, num_boot, chunk):
        size = min(chunk, num_boot - start)
        picks = rng.integers(0, n, size=(size, n))  # (B, N) resampled image indices
        flat = (np.arange(size)[:, None] * n + picks).ravel()
        weights = np.bincount(flat, minlength=size * n).reshape(size, n).astype(np.float64)  # (B, N) draws per image
        deltas[start:start + size] = _resampled_miou(b, weights) - _resampled_miou(a, weights)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(deltas, [alpha, 1 - alpha])
    return Comparison(miou_a=float(ma.mean()), std_a=float(ma.std()), miou_b=float(mb.mean()), std_b=float(mb.std()),
                      delta=float(mb.mean() - ma.mean()), ci_low=float(low), ci_high=float(high),
                      confidence=confidence, num_images=n, num_boot=num_boot)


def _resampled_miou(counts: Counts, weights: np.ndarray) -> np.ndarray:
    """Seed-mean mIoU of each resample (B,) from image weights (B×N)."""
    inter = np.einsum("bn,snk->bsk", weights, counts.intersection.astype(np.float64))  # (B, S, K)
    union = np.einsum("bn,snk->bsk", weights, counts.union.astype(np.float64))
    return miou_from_counts(inter, union).mean(axis=1)  # (B, S) -> (B,)


def direction_agreement(ours: Comparison, paper_delta: float | None) -> str:
    """Whether the demo's difference goes the paper's way: "agrees", "disagrees", "n.s." or "–" (no paper value).

    A difference whose interval contains 0 is "n.s." whatever its sign; a significant one agrees when it has the
    sign of the paper's Δ (a paper Δ of exactly 0 is agreed with by no significant difference).
    """
    if paper_delta is None or (isinstance(paper_delta, float) and math.isnan(paper_delta)):
        return "–"
    if not ours.significant:
        return "n.s."
    return "agrees" if np.sign(ours.delta) == np.sign(paper_delta) else "disagrees"


def read_counts(path: str | os.PathLike) -> Counts:
    """Load a run's per-image counts (.npz with intersection, union, seeds, images; see the module docstring)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"intersection", "union", "seeds", "images"} - set(z.files)
            if missing:
                raise DataError(f"{path}: missing arrays {sorted(missing)}; rerun its evaluate stage")
            return Counts(z["intersection"], z["union"], tuple(int(s) for s in z["seeds"]),
                          tuple(str(i) for i in z["images"]))
    except (OSError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: not a per-image counts file ({err}); rerun its evaluate stage") from err
