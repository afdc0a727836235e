"""The evaluation result of one run, ``eval/<run>.json``: one schema for its writer (``primkd evaluate``) and its
readers (the report, ``primkd compare``, the significance tests, bench/).

The file is ``{checkpoint: {mode: metrics}}`` beside four records of what was evaluated::

    {"model": "primkd", "split": "test", "num_test_images": 654,
     "last": {"single": {...}, "multi_scale_flip": {...}},
     "best": {"single": {...}},
     "per_image": {"file": "primkd_per_image.npz", "checkpoint": "last", "modes": ["single", "multi_scale_flip"]}}

- ``split``: the split of the prepared dataset that was scored, ``test`` or ``train`` (an older file without the key
  scored the test split), and ``num_<split>_images`` its size. The evaluate stages also score each run's training
  split (last epoch, single scale) into ``eval/<run>.train.json`` (:func:`evaluation_files`), the same schema without
  per-image counts: train − test mIoU tells a data-limited regime (the network fits its training images far better
  than unseen ones, as the paper's on NYU) from a compute-limited one;

- checkpoint ``last``: the model of the last epoch (``model.pt``); ``best``: the best test-split evaluation of the
  training curve (``model_best.pt``: test-set selection, the official practice), present when training kept one and,
  in ``multi_scale_flip``, only with ``eval.checkpoint: best``;
- mode ``single``: scale 1, no flip (the paper's ablations); ``multi_scale_flip``: ``eval.scales`` and ``eval.flip``
  (the paper's Table 2);
- metrics: ``miou_pct``, ``macc_pct``, ``pacc_pct``, each the mean over seeds and its sample standard deviation
  ``<key>_std`` (ddof 1, :func:`~primkd.engine.metrics.seed_spread`; null for a run trained once), ``scales``,
  ``flip``, ``per_seed`` (``{seed, epoch, miou_pct, macc_pct, pacc_pct}`` per model: ``seed`` null for a teacher,
  ``epoch`` that of the evaluated weights) and ``iou_pct`` (per class, mean over seeds; null for a class no seed
  saw or predicted).

Every metric in the file is a percentage, the unit in its key, as in the tables and in ``dvc metrics show`` (which
prints the nested keys as ``last.single.miou_pct``); in code they are fractions in [0, 1], as
:func:`~primkd.engine.metrics.metrics_from_confusion` computes them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from primkd.engine.metrics import seed_spread
from primkd.io import DataError, read_json, write_json

CHECKPOINTS = ("last", "best")
SPLITS = ("test", "train")  # the prepared dataset's splits an evaluation scores
MODES = ("single", "multi_scale_flip")
SCALARS = ("miou", "macc", "pacc")  # each seed's metrics; the file's keys are ``<name>_pct``
NOT_SCORED = ("missing", "skipped")  # ``status`` of a released checkpoint's file that holds no evaluation


def _pct(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else 100 * value


def _fraction(value: float | None, source: str, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError(f"{source}: {key} is {value!r}, not a number; re-run its evaluate stage")
    return value / 100


@dataclass(frozen=True)
class SeedResult:
    """One evaluated model: its seed (None for a run trained once), the epoch of its weights, metrics in [0, 1]."""

    seed: int | None
    miou: float | None
    macc: float | None
    pacc: float | None
    epoch: int | None = None

    def to_json(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, **{f"{k}_pct": _pct(getattr(self, k)) for k in SCALARS}}

    @classmethod
    def from_json(cls, data: Mapping, source: str) -> SeedResult:
        seed = data.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise DataError(f"{source}: per_seed has seed {seed!r}, not an integer; re-run its evaluate stage")
        return cls(seed, *(_fraction(data.get(f"{k}_pct"), source, f"{k}_pct") for k in SCALARS), data.get("epoch"))


@dataclass(frozen=True)
class ModeResult:
    """One checkpoint of a run in one evaluation mode: every seed's metrics and the per-class IoU (fractions)."""

    scales: tuple[float, ...]
    flip: bool
    per_seed: tuple[SeedResult, ...]
    iou: dict[str, float | None] = field(default_factory=dict)  # per class, mean over seeds

    def spread(self, key: str) -> tuple[float, float | None, int] | None:
        """Mean, sample std and count over seeds of one of :data:`SCALARS` (:func:`seed_spread`)."""
        return seed_spread(getattr(s, key) for s in self.per_seed)

    @property
    def seeds(self) -> list[int]:
        """The seeds of a student's run; empty for a run trained once."""
        return [s.seed for s in self.per_seed if s.seed is not None]

    def to_json(self) -> dict:
        out: dict = {}
        for key in SCALARS:
            mean, std, _ = self.spread(key) or (None, None, 0)
            out[f"{key}_pct"], out[f"{key}_pct_std"] = _pct(mean), _pct(std)
        return {**out, "scales": list(self.scales), "flip": self.flip,
                "per_seed": [s.to_json() for s in self.per_seed], "iou_pct": {c: _pct(v) for c, v in self.iou.items()}}

    @classmethod
    def from_json(cls, data: Mapping, source: str) -> ModeResult:
        iou = {c: _fraction(v, source, f"iou_pct.{c}") for c, v in (data.get("iou_pct") or {}).items()}
        return cls(tuple(data["scales"]), bool(data["flip"]),
                   tuple(SeedResult.from_json(e, source) for e in data["per_seed"]), iou)


@dataclass(frozen=True)
class Evaluation:
    """The evaluation JSON of one run (see the module docstring): ``results[checkpoint][mode]``."""

    model: str | None
    num_images: int  # of the split scored
    results: dict[str, dict[str, ModeResult]]
    per_image: dict | None = None  # the per-image counts file: ``file``, ``checkpoint``, ``modes``
    split: str = "test"

    def get(self, checkpoint: str = "last", mode: str = "single") -> ModeResult | None:
        """One checkpoint in one mode; None when the run has none (no best-epoch model, or not evaluated so)."""
        return self.results.get(checkpoint, {}).get(mode)

    def to_json(self) -> dict:
        results = {c: {m: r.to_json() for m, r in modes.items()} for c, modes in self.results.items()}
        return {"model": self.model, "split": self.split, f"num_{self.split}_images": self.num_images, **results,
                "per_image": self.per_image}

    @classmethod
    def from_json(cls, data: Mapping, source: str = "evaluation") -> Evaluation:
        """Raises DataError on a file of another layout (e.g. one written before this schema). A released
        checkpoint that was not scored (``status`` missing or skipped, :mod:`primkd.engine.released`) has no
        results."""
        if data.get("status") in NOT_SCORED:
            return cls(data.get("model"), 0, {})
        split = data.get("split", "test")
        if split not in SPLITS:
            raise DataError(f"{source}: split {split!r} is not one of {SPLITS}; re-run its evaluate stage")
        if "single" not in (data.get("last") or {}):
            raise DataError(f"{source}: not an evaluation of this version (no `last.single` block: written before the "
                            f"evaluation schema of primkd.engine.results, or not by `primkd evaluate`); re-run its "
                            f"evaluate stage")
        try:
            results = {c: {m: ModeResult.from_json(data[c][m], source) for m in MODES if m in data[c]}
                       for c in CHECKPOINTS if c in data}
        except (KeyError, TypeError) as err:
            raise DataError(f"{source}: incomplete evaluation ({type(err).__name__}: {err}); re-run its evaluate "
                            f"stage") from err
        return cls(data.get("model"), data.get(f"num_{split}_images"), results, data.get("per_image"), split)

    @classmethod
    def read(cls, path: str | os.PathLike) -> Evaluation:
        return cls.from_json(read_json(path), str(path))

    def write(self, path: str | os.PathLike) -> None:
        write_json(path, self.to_json())


def evaluation_files(folder: str | os.PathLike, split: str = "test") -> dict[str, Path]:
    """The evaluations of ``split`` in an ``eval/`` folder by run name, sorted: ``<run>.json`` for the test split (the
    headline of the tables and of ``dvc metrics show``), ``<run>.<split>.json`` for another."""
    out = {}
    for path in sorted(Path(folder).glob("*.json")):
        run, dot, suffix = path.stem.rpartition(".")
        named = bool(dot) and suffix in SPLITS
        if (suffix if named else "test") == split:
            out[run if named else path.stem] = path
    return out
