"""The common prepared-dataset layout that every source (synthetic, NYU Depth V2, SUN-RGBD, folders) produces.

::

    <root>/RGB/<name>.png      uint8 H×W×3, RGB order on disk as PNG
    <root>/Depth/<name>.png    uint16 H×W, millimetres, 0 = missing
    <root>/Label/<name>.png    uint8 H×W, 0..K-1, 255 = ignore
    <root>/Missing/<name>.png  optional uint8 H×W, 1 where the raw sensor had no depth (NYU's Depth holds the
                               in-painted depth; without this folder, missing = Depth == 0)
    <root>/train.txt           one name per line
    <root>/test.txt
    <root>/meta.json           {"name", "classes": [K names], "ignore_index": 255,
                                "intrinsics": {"fx", "fy", "cx", "cy"} (1-based principal point, pixels),
                                "intrinsics_per_image": optional {name: {...}}, "depth_scale": 1000, ...}

HHA images live in a separate folder (``<hha_root>/<name>.png``, channels disparity, height, angle in PNG order)
because the HHA stage is a pipeline stage of its own and DVC does not allow one stage's output inside another's.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from primkd.io import DataError, read_json

IGNORE_INDEX = 255
SPLITS = ("train", "test")

# The 40 NYU Depth V2 classes of Gupta et al. (classMapping40.mat ``className``), label k ↔ index k-1.
NYU40_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor mat",
    "clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel", "shower curtain", "box",
    "whiteboard", "person", "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop",
)

# NYU Depth V2 RGB camera; the principal point is 1-based (MATLAB convention, docs/design.md §4).
NYU_INTRINSICS = {"fx": 518.857901, "fy": 519.469611, "cx": 325.582449, "cy": 253.736166}
NYU_SIZE = (480, 640)  # (H, W) for which NYU_INTRINSICS are defined
DEPTH_SCALE = 1000.0  # depth PNG units per metre (millimetres) where meta.json does not say otherwise


@dataclass(frozen=True)
class Layout:
    """Paths of a prepared dataset."""

    root: Path

    @property
    def rgb_dir(self) -> Path:
        return self.root / "RGB"

    @property
    def depth_dir(self) -> Path:
        return self.root / "Depth"

    @property
    def label_dir(self) -> Path:
        return self.root / "Label"

    @property
    def meta_path(self) -> Path:
        return self.root / "meta.json"

    def split_path(self, split: str) -> Path:
        return self.root / f"{split}.txt"

    def rgb(self, name: str) -> Path:
        return self.rgb_dir / f"{name}.png"

    def depth(self, name: str) -> Path:
        return self.depth_dir / f"{name}.png"

    def label(self, name: str) -> Path:
        return self.label_dir / f"{name}.png"

    def missing(self, name: str) -> Path:
        return self.root / "Missing" / f"{name}.png"


def read_split(root: str | os.PathLike, split: str, repeats: bool = False) -> list[str]:
    """Names listed in ``<root>/<split>.txt``.

    Args:
        repeats: accept names listed more than once (``check-data`` reports them with the other problems).

    Raises:
        DataError: the list is missing or empty, a line is not a bare image name (see :func:`is_plain_name`), or a
            name is listed more than once.
    """
    path = Layout(Path(root)).split_path(split)
    if not path.is_file():
        raise DataError(f"{path}: split file not found; run the prepare stage for this dataset first")
    lines = [(number, line.strip()) for number, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    if not lines:
        raise DataError(f"{path}: the split list is empty; it must name one image per line")
    bad = [(number, name) for number, name in lines if not is_plain_name(name)]
    if bad:
        number, name = bad[0]
        more = f" (and {len(bad) - 1} more lines)" if len(bad) > 1 else ""
        raise DataError(f"{path}, line {number}: {name!r} is not an image name{more}; a split list names images of "
                        f"its own dataset by their bare file name without extension (no folders, '..' or absolute "
                        f"paths), e.g. 'img_0001' for RGB/img_0001.png")
    names = [name for _, name in lines]
    problem = None if repeats else repeated_names(path, names)
    if problem:
        raise DataError(problem)
    return names


def repeated_names(path: Path, names: list[str]) -> str | None:
    """The problem of a split list that names an image more than once (it would weigh twice in training or in the
    test mIoU), or None."""
    repeated = sorted(n for n, count in Counter(names).items() if count > 1)
    return (f"{path}: names listed more than once: {repeated[:10]}{' …' if len(repeated) > 10 else ''}; keep one "
            f"line per image" if repeated else None)


def shared_names(root: Path, train: list[str], test: list[str]) -> str | None:
    """The problem of a training and a test split that share images (the test mIoU would score training images), or
    None."""
    both = sorted(set(train) & set(test))
    return (f"{root}: {len(both)} images are in both train.txt and test.txt (e.g. {both[:5]}); the test split must "
            f"be disjoint from the training split: remove them from one of the lists" if both else None)


def check_disjoint(root: str | os.PathLike) -> None:
    """Raise :class:`DataError` when the dataset's split lists (those that exist) share images."""
    layout = Layout(Path(root))
    if all(layout.split_path(s).is_file() for s in SPLITS):
        problem = shared_names(layout.root, read_split(root, "train"), read_split(root, "test"))
        if problem:
            raise DataError(problem)


def is_plain_name(name: str) -> bool:
    """Whether ``name`` is a bare image name, so that ``RGB/<name>.png`` (and every other folder's file) stays
    inside the dataset: no path separator, not ``.`` or ``..``, no NUL."""
    return bool(name) and not any(c in name for c in "/\\\0") and name not in (".", "..")


def write_split(root: str | os.PathLike, split: str, names: list[str]) -> None:
    """Write ``<root>/<split>.txt`` (one name per line)."""
    from primkd.io import write_text

    write_text(Layout(Path(root)).split_path(split), "".join(f"{n}\n" for n in names))


def read_meta(root: str | os.PathLike) -> dict:
    """Read and check ``<root>/meta.json``."""
    path = Layout(Path(root)).meta_path
    meta = read_json(path)
    for key in ("classes", "intrinsics"):
        if key not in meta:
            raise DataError(f"{path}: missing key {key!r}; re-run the prepare stage")
    return meta


def intrinsics_for(meta: dict, name: str) -> dict:
    """Camera intrinsics (fx, fy, cx, cy; 1-based principal point) of image ``name``."""
    per_image = meta.get("intrinsics_per_image") or {}
    return per_image.get(name, meta["intrinsics"])


def depth_scale(meta: dict) -> float:
    """Depth PNG units per metre of a prepared dataset (``meta["depth_scale"]``)."""
    return float(meta.get("depth_scale", DEPTH_SCALE))


def scaled_intrinsics(height: int, width: int) -> dict[str, float]:
    """NYU intrinsics rescaled to an ``height``×``width`` image, keeping the 1-based principal point.

    Pixel centres scale about the image corner: a 0-based centre c0 = c − 1 maps to (c0 + 0.5)·s − 0.5, so the
    1-based c' = (c − 0.5)·s + 0.5, with s = width / 640 horizontally and height / 480 vertically.
    """
    sy, sx = height / NYU_SIZE[0], width / NYU_SIZE[1]
    return {
        "fx": NYU_INTRINSICS["fx"] * sx,
        "fy": NYU_INTRINSICS["fy"] * sy,
        "cx": (NYU_INTRINSICS["cx"] - 0.5) * sx + 0.5,
        "cy": (NYU_INTRINSICS["cy"] - 0.5) * sy + 0.5,
    }


def invalid_labels(label: np.ndarray, num_classes: int) -> list[int]:
    """Sorted label values outside 0..K-1 that are not the ignore index (255)."""
    bad = (label != IGNORE_INDEX) & (label >= num_classes)
    return sorted(np.unique(label[bad]).tolist())
