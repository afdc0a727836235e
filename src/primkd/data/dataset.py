"""RGB-D segmentation dataset over the prepared layout, with the paper's augmentations.

Augmentation randomness is drawn from a generator seeded by ``(seed, epoch, index)``: the sampler hands the dataset
``(index, epoch)`` keys, so a run is reproducible whatever the number of DataLoader workers and can resume exactly
in the middle of training.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from primkd.data.layout import IGNORE_INDEX, Layout, invalid_labels, read_meta, read_split
from primkd.io import DataError, read_image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class Augment:
    """Training augmentation (DESIGN.md §3): random scale, horizontal flip, random crop with padding."""

    crop: tuple[int, int]
    scales: Sequence[float]
    flip: float


def normalize(image: np.ndarray, bgr: bool = False) -> torch.Tensor:
    """uint8 H×W×3 → float32 3×H×W normalised with the ImageNet mean/std (RGB and HHA alike)."""
    x = image.astype(np.float32) / 255.0
    if bgr:
        # The official code reads images as BGR and normalises them with the RGB statistics; mimic it exactly.
        x = x[..., ::-1]
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))  # (3, H, W)


def augment(images: list[np.ndarray], label: np.ndarray, aug: Augment, rng: np.random.Generator):
    """Apply scale → flip → pad/crop identically to every image and to the label.

    Args:
        images: H×W×3 uint8 arrays (RGB and, for RGB-D, HHA).
        label: H×W uint8.
        aug: augmentation settings.
        rng: generator for this sample.

    Returns:
        The augmented images (crop-sized) and label.
    """
    # 1. Random rescale: bilinear for images, nearest for labels.
    scale = float(rng.choice(np.asarray(aug.scales)))
    H, W = label.shape
    size = (max(1, round(W * scale)), max(1, round(H * scale)))  # cv2 wants (width, height)
    if scale != 1.0:
        images = [cv2.resize(im, size, interpolation=cv2.INTER_LINEAR) for im in images]
        label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
    # 2. Horizontal flip.
    if rng.random() < aug.flip:
        images = [im[:, ::-1] for im in images]
        label = label[:, ::-1]
    # 3. Pad to at least the crop size (0 for images, ignore for labels), then a random crop.
    ch, cw = aug.crop
    H, W = label.shape
    pad_h, pad_w = max(ch - H, 0), max(cw - W, 0)
    if pad_h or pad_w:
        images = [np.pad(im, ((0, pad_h), (0, pad_w), (0, 0))) for im in images]
        label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=IGNORE_INDEX)
        H, W = label.shape
    top = int(rng.integers(0, H - ch + 1))
    left = int(rng.integers(0, W - cw + 1))
    images = [im[top : top + ch, left : left + cw] for im in images]
    return images, label[top : top + ch, left : left + cw]


class RGBDDataset(Dataset):
    """Samples of a prepared dataset as dicts of tensors.

    Each item holds ``rgb`` (3×H×W, normalised), ``modal`` (3×H×W normalised HHA, when ``hha_root`` is given),
    ``label`` (H×W int64, 255 = ignore) and ``name``.

    Args:
        data_root: prepared dataset folder (see :mod:`primkd.data.layout`).
        split: ``"train"`` or ``"test"``.
        hha_root: folder of HHA PNGs, or None when only RGB is needed.
        augmentation: training augmentation, or None for evaluation (full images).
        seed: seed of the augmentation randomness.
        bgr: feed images in BGR order (official checkpoints expect it).
    """

    def __init__(self, data_root: str | os.PathLike, split: str, hha_root: str | os.PathLike | None = None,
                 augmentation: Augment | None = None, seed: int = 0, bgr: bool = False):
        self.layout = Layout(Path(data_root))
        self.names = read_split(data_root, split)
        self.meta = read_meta(data_root)
        self.classes = list(self.meta["classes"])
        self.hha_root = Path(hha_root) if hha_root is not None else None
        self.augmentation = augmentation
        self.seed = seed
        self.bgr = bgr
        self._check_files(split)

    def _check_files(self, split: str) -> None:
        """Fail now, not hours into training, when a listed sample lacks one of its files (all are named)."""
        missing = [path for name in self.names for path in self.paths(name) if not path.is_file()]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            shown = ", ".join(str(p) for p in missing[:5]) + more
            raise DataError(f"{self.layout.split_path(split)} lists samples whose files are missing: {shown}; re-run "
                            f"the stage that writes them (prepare, hha) or remove those names from the list")

    def paths(self, name: str) -> list[Path]:
        """The files sample ``name`` is read from: RGB, label and (when used) HHA."""
        paths = [self.layout.rgb(name), self.layout.label(name)]
        return paths + ([self.hha_root / f"{name}.png"] if self.hha_root is not None else [])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.names)

    def load(self, index: int) -> tuple[list[np.ndarray], np.ndarray]:
        """Raw uint8 images ([rgb] or [rgb, hha]) and label of sample ``index``, checked for consistency."""
        name = self.names[index]
        images = [read_image(self.layout.rgb(name), "rgb")]
        if self.hha_root is not None:
            images.append(read_image(self.hha_root / f"{name}.png", "rgb"))
        label_path = self.layout.label(name)
        label = read_image(label_path, "gray")
        size = images[0].shape[:2]
        if len(images) > 1 and images[1].shape[:2] != size:
            raise DataError(f"{self.hha_root / f'{name}.png'}: HHA size {images[1].shape[:2]} differs from the RGB "
                            f"image {size}; re-run the hha stage (if {self.layout.depth(name)} has that size too, the "
                            f"dataset itself is inconsistent: `primkd check-data` lists such samples)")
        if label.shape != size:
            raise DataError(f"{label_path}: label size {label.shape} differs from the RGB image {size}; re-prepare "
                            f"the dataset (`primkd check-data` lists every such sample)")
        bad = invalid_labels(label, self.num_classes)
        if bad:
            raise DataError(f"{label_path}: label values {bad[:10]} are outside 0..{self.num_classes - 1} (255 = "
                            f"ignore); fix the class mapping of this dataset (`primkd check-data` lists every such "
                            f"file)")
        return images, label

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        images, label = self.load(index)
        if self.augmentation is not None:
            rng = np.random.default_rng((self.seed, epoch, index))
            images, label = augment(images, label, self.augmentation, rng)
        item = {"rgb": normalize(images[0], self.bgr), "label": torch.from_numpy(label.astype(np.int64)),
                "name": self.names[index]}
        if len(images) > 1:
            item["modal"] = normalize(images[1], self.bgr)
        return item


class EpochSampler(Sampler):
    """Shuffled indices (paired with the epoch) for one rank; the order depends only on (seed, epoch).

    With ``world_size`` ranks each rank takes every ``world_size``-th index of the shared permutation, padded by
    wrapping so all ranks see the same number of samples. ``start`` skips the first samples of the epoch (resume).
    """

    def __init__(self, length: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.length, self.seed, self.shuffle = length, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return -(-self.length // self.world_size) - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = np.random.default_rng((self.seed, self.epoch)).permutation(self.length)
        else:
            order = np.arange(self.length)
        per_rank = -(-self.length // self.world_size)
        order = np.resize(order, per_rank * self.world_size)[self.rank :: self.world_size]
        for index in order[self.start :]:
            yield int(index), self.epoch
