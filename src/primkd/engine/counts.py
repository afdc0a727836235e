"""Per-image pixel counts of an evaluated run: what ``primkd evaluate`` writes beside its metrics so that the report
can compute paired bootstrap intervals (:mod:`primkd.report.significance`) without evaluating again.

A run's counts are one compressed ``.npz`` (``eval/<run>_per_image.npz``, named by the ``per_image`` key of
``eval/<run>.json``) with, per evaluation mode (``single``, ``multi_scale_flip``), ``<mode>_intersection`` and
``<mode>_union`` (S×N×K uint32: seed, test image, class; union = ground truth + prediction − intersection pixels,
additive over images), ``seeds`` (S,; −1 for a run trained once, the teachers), ``images`` (N,) test image names in
split order, and ``checkpoint`` (``last`` or ``best``: the model the counts are of, the one ``eval.checkpoint``
selects).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from primkd.engine.results import MODES
from primkd.io import DataError, atomic_path


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

NO_SEED = -1  # ``seeds`` entry of a run trained once (a teacher)


def counts_by_mode(per_seed: Mapping[int | None, Mapping[str, Mapping]]) -> dict[str, Counts]:
    """Stack the ``per_image`` results of :func:`primkd.engine.evaluate.evaluate` into one :class:`Counts` per mode.

    Args:
        per_seed: ``{seed (None for a run trained once): {mode: metrics with per_image}}``; a mode is kept when
            every seed has it.
    """
    seeds = tuple(NO_SEED if s is None else int(s) for s in per_seed)
    out = {}
    for mode in MODES:
        blocks = [modes[mode]["per_image"] for modes in per_seed.values() if "per_image" in modes.get(mode, {})]
        if not blocks or len(blocks) != len(per_seed):
            continue
        images = tuple(blocks[0]["images"])
        if any(tuple(b["images"]) != images for b in blocks):
            raise ValueError("the seeds of one run were evaluated on different test images; evaluate them together")
        out[mode] = Counts(np.stack([np.asarray(b["intersection"]) for b in blocks]),
                           np.stack([np.asarray(b["union"]) for b in blocks]), seeds, images)
    return out


def write_counts(path: str | os.PathLike, counts: Mapping[str, Counts], checkpoint: str) -> None:
    """Write one run's counts per mode (:func:`counts_by_mode`) as a compressed ``.npz``, atomically."""
    if not counts:
        raise ValueError("no per-image counts to write")
    first = next(iter(counts.values()))
    arrays: dict[str, np.ndarray] = {"seeds": np.asarray(first.seeds, dtype=np.int64),
                                     "images": np.asarray(first.images, dtype=str),
                                     "checkpoint": np.asarray(checkpoint)}
    for mode, c in counts.items():
        if c.union.max(initial=0) > np.iinfo(np.uint32).max:
            raise ValueError(f"{mode}: a per-image count exceeds uint32")
        arrays[f"{mode}_intersection"] = c.intersection.astype(np.uint32)
        arrays[f"{mode}_union"] = c.union.astype(np.uint32)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def read_counts(path: str | os.PathLike, mode: str = "single") -> Counts:
    """Load a run's per-image counts in one evaluation ``mode`` (see the module docstring for the file)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {f"{mode}_intersection", f"{mode}_union", "seeds", "images"} - set(z.files)
            if missing:
                raise DataError(f"{path}: missing arrays {sorted(missing)}; rerun its evaluate stage")
            return Counts(z[f"{mode}_intersection"], z[f"{mode}_union"],
                          tuple(int(s) for s in z["seeds"]), tuple(str(i) for i in z["images"]))
    except (OSError, ValueError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{path}: not a per-image counts file ({err}); rerun its evaluate stage") from err


def counts_checkpoint(path: str | os.PathLike) -> str | None:
    """The checkpoint (``last`` or ``best``) a counts file was written for; None when unreadable or unrecorded."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return str(z["checkpoint"]) if "checkpoint" in z.files else None
    except (OSError, ValueError):
        return None
