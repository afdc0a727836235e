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

with one image resample shared by every seed of both runs ("pooled over seeds"). The file ``primkd evaluate``
writes them to is described in :mod:`primkd.engine.counts`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from primkd.engine.counts import Counts, counts_checkpoint, read_counts
from primkd.engine.metrics import seed_spread
from primkd.engine.results import Evaluation
from primkd.io import DataError


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
    std_a: float | None  # sample std over a's seeds (engine.metrics.seed_spread: ddof 1; None for one seed)
    miou_b: float
    std_b: float | None
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
    return Comparison(miou_a=float(ma.mean()), std_a=seed_spread(ma)[1], miou_b=float(mb.mean()),
                      std_b=seed_spread(mb)[1],
                      delta=float(mb.mean() - ma.mean()), ci_low=float(low), ci_high=float(high),
                      confidence=confidence, num_images=n, num_boot=num_boot)


def _resampled_miou(counts: Counts, weights: np.ndarray) -> np.ndarray:
    """Seed-mean mIoU of each resample (B,) from image weights (B×N)."""
    inter = np.einsum("bn,snk->bsk", weights, counts.intersection.astype(np.float64))  # (B, S, K)
    union = np.einsum("bn,snk->bsk", weights, counts.union.astype(np.float64))
    return miou_from_counts(inter, union).mean(axis=1)  # (B, S) -> (B,)


def direction_agreement(ours: Comparison, paper_delta: float | None) -> str:
    """Whether the demo's difference goes the paper's way: "agrees", "disagrees", "n.s." or "no paper value".

    A difference whose interval contains 0 is "n.s." whatever its sign; a significant one agrees when it has the
    sign of the paper's Δ (a paper Δ of exactly 0 is agreed with by no significant difference).
    """
    if paper_delta is None or (isinstance(paper_delta, float) and math.isnan(paper_delta)):
        return "no paper value"
    if not ours.significant:
        return "n.s."
    return "agrees" if np.sign(ours.delta) == np.sign(paper_delta) else "disagrees"


# The report's bootstrap: fixed, so a rerun on the same evaluations prints the same intervals.
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95


def counts_path(results_dir: str | os.PathLike, run: str) -> Path:
    """The per-image counts file of ``run``: the one ``eval/<run>.json`` names, else ``eval/<run>_per_image.npz``."""
    folder = Path(results_dir) / "eval"
    evaluation = folder / f"{run}.json"
    if evaluation.is_file():
        named = (Evaluation.read(evaluation).per_image or {}).get("file")
        if named:
            return folder / named
    return folder / f"{run}_per_image.npz"


def load_run_counts(results_dir: str | os.PathLike, run: str, mode: str = "single",
                    checkpoint: str | None = None) -> tuple[Counts | None, str | None]:
    """``run``'s counts in ``mode`` (and of ``checkpoint`` when given), or None and the note that says why not."""
    path = counts_path(results_dir, run)
    if not path.is_file():
        return None, f"`{run}`: no per-image counts ({path}): rerun its evaluate stage for the interval"
    written = counts_checkpoint(path)
    if checkpoint is not None and written != checkpoint:
        return None, (f"`{run}`: its per-image counts are of the {written} checkpoint, the tables show the "
                      f"{checkpoint} one: rerun its evaluate stage with this eval.checkpoint for the interval")
    try:
        return read_counts(path, mode), None
    except DataError as err:
        return None, str(err)


def compare_runs(reference: Counts, other: Counts) -> Comparison:
    """:func:`paired_bootstrap` of ``other`` against ``reference`` with the report's fixed resamples, seed, level."""
    return paired_bootstrap(reference, other, BOOTSTRAP_RESAMPLES, CONFIDENCE, BOOTSTRAP_SEED)


def interval_text(c: Comparison, digits: int = 1) -> str:
    """Δ and its interval in percentage points: ``+1.2 [+0.4, +2.0]``."""
    return f"{100 * c.delta:+.{digits}f} [{100 * c.ci_low:+.{digits}f}, {100 * c.ci_high:+.{digits}f}]"
