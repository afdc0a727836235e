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

from primkd.data.layout import IGNORE_INDEX, Layout, check_disjoint, invalid_labels, read_meta, read_split
from primkd.io import DataError, read_image

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclass(frozen=True)
class Augment:
    """Training augmentation (docs/design.md §3): random scale, horizontal flip, random crop, centred mean padding."""

    crop: tuple[int, int]
    scales: Sequence[float]
    flip: float


# The second modality is depth, which the networks read as its HHA image (the `hha` stage's folder). In a batch and
# in a model file's `inputs` its key is "modal": a name of the model-file format (like CMX's weight names,
# `encoder_modal`), kept so that every model file written stays readable.
DEPTH_KEY = "modal"
MODALITY_INPUTS = {"rgb": ("rgb",), "depth": (DEPTH_KEY,)}  # a teacher's modality (params: teacher: rgb | depth)
STUDENT_INPUTS = ("rgb", DEPTH_KEY)  # CMX and the PrimKD students


def reads_depth(inputs: Sequence[str]) -> bool:
    """Whether a network of batch keys ``inputs`` (a model file's ``inputs``) reads depth (its HHA image)."""
    return DEPTH_KEY in inputs


def hha_input(hha_root: str | os.PathLike | None, needed: bool, reader: str) -> Path | None:
    """The HHA folder a network needs: ``hha_root`` when ``needed``, else None (an RGB-only network ignores it).

    Raises:
        DataError: HHA needed but no folder given; names ``reader`` (the model or run) and the flag to pass.
    """
    if not needed:
        return None
    if hha_root is None:
        raise DataError(f"{reader} reads depth: pass its HHA folder with --hha (the hha stage's output, "
                        f"data/<preset>/hha)")
    return Path(hha_root)


def normalize(image: np.ndarray, bgr: bool = False) -> torch.Tensor:
    """uint8 H×W×3 → float32 3×H×W normalised with the ImageNet mean/std (RGB and HHA alike)."""
    x = image.astype(np.float32) / 255.0
    if bgr:
        # The official code reads images as BGR and normalises them with the RGB statistics; mimic it exactly.
        x = x[..., ::-1]
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))  # (3, H, W)


def centre_pad(x: np.ndarray, size: tuple[int, int], value: float) -> np.ndarray:
    """Pad H×W(×C) ``x`` with ``value`` to at least ``size`` (height, width), the image centred (an odd margin puts
    the extra pixel below / to the right), as the official CMX/PrimKD code pads crops and test windows."""
    pad_h, pad_w = max(size[0] - x.shape[0], 0), max(size[1] - x.shape[1], 0)
    if not (pad_h or pad_w):
        return x
    width = [(pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2)] + [(0, 0)] * (x.ndim - 2)
    return np.pad(x, width, constant_values=value)


def augment(images: list[np.ndarray], label: np.ndarray, aug: Augment, rng: np.random.Generator,
            bgr: bool = False) -> tuple[list[torch.Tensor], np.ndarray]:
    """Apply scale → flip → normalise → crop/pad identically to every image and to the label.

    The padding follows the official code: it comes after normalisation with 0 (so it is the mean colour, for RGB and
    HHA alike), the image centred in the crop; labels are padded with the ignore index. A crop position is drawn only
    along an axis where the image is larger than the crop.

    Args:
        images: H×W×3 uint8 arrays (RGB and, for RGB-D, HHA).
        label: H×W uint8.
        aug: augmentation settings.
        rng: generator for this sample.
        bgr: feed the images in BGR order (see :func:`normalize`).

    Returns:
        The normalised crop-sized images (3×h×w float32 tensors) and the h×w uint8 label.
    """
    # 1. Random rescale: bilinear for images, nearest for labels (on the uint8 images, as the official code).
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
    # 3. Random crop window (axes larger than the crop), then centred padding to the crop size.
    ch, cw = aug.crop
    H, W = label.shape
    top = int(rng.integers(0, max(H - ch, 0) + 1))
    left = int(rng.integers(0, max(W - cw, 0) + 1))
    window = (slice(top, top + ch), slice(left, left + cw))
    crops = [centre_pad(normalize(im[window], bgr).numpy().transpose(1, 2, 0), (ch, cw), 0.0) for im in images]
    label = centre_pad(np.ascontiguousarray(label[window]), (ch, cw), IGNORE_INDEX)
    return [torch.from_numpy(np.ascontiguousarray(c.transpose(2, 0, 1))) for c in crops], label  # (3, ch, cw)


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
        self.split = split
        self.names = read_split(data_root, split)
        check_disjoint(data_root)
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
        # A prepared folder may link its images to the folder source it was prepared from (meta.json `source`,
        # `hha_dir`), nowhere else: a link out of those reads files no pipeline stage tracks.
        roots = [Path(r).resolve() for r in (self.layout.root, self.hha_root, self.meta.get("source"),
                                             self.meta.get("hha_dir")) if r is not None]
        for path in (p for name in self.names for p in self.paths(name) if p.is_symlink()):
            target = path.resolve()
            if not any(target.is_relative_to(root) for root in roots):
                raise DataError(f"{path}: a link to {target}, outside the dataset and the folder it was prepared from; "
                                f"copy the file into the dataset, or prepare it again from a folder that holds it")

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
            tensors, label = augment(images, label, self.augmentation, rng, self.bgr)
        else:
            tensors = [normalize(im, self.bgr) for im in images]
        item = {"rgb": tensors[0], "label": torch.from_numpy(label.astype(np.int64)), "name": self.names[index]}
        if len(tensors) > 1:
            item[DEPTH_KEY] = tensors[1]
        return item


class EpochSampler(Sampler):
    """Shuffled indices (paired with the epoch) for one rank; the order depends only on (seed, epoch).

    With ``world_size`` ranks each rank takes every ``world_size``-th index of the shared permutation, padded by
    wrapping so all ranks see the same number of samples. ``start`` skips the first samples of the epoch (resume).
    ``total`` > ``length`` fills the epoch up to ``total`` samples with distinct images drawn at random after the
    permutation (the official loader's epoch of batch × (N // batch + 1) samples, its last batch filled with random
    repeats).
    """

    def __init__(self, length: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1,
                 total: int = 0):
        self.length, self.seed, self.shuffle = length, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.total = max(total, length)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return -(-self.total // self.world_size) - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng((self.seed, self.epoch))
        order = rng.permutation(self.length) if self.shuffle else np.arange(self.length)
        if self.total > self.length:  # whole passes over the data, then the remainder drawn without replacement
            extra = self.total - self.length
            repeats = [rng.permutation(self.length) for _ in range(extra // self.length)]
            order = np.concatenate([order, *repeats, rng.permutation(self.length)[: extra % self.length]])
        per_rank = -(-self.total // self.world_size)
        order = np.resize(order, per_rank * self.world_size)[self.rank :: self.world_size]
        for index in order[self.start :]:
            yield int(index), self.epoch
