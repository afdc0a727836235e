"""NYU Depth V2 (labeled subset, 1449 images) → the prepared layout (primkd.data.layout), 40 classes.

Inputs (docs/design.md §5):

- ``nyu_depth_v2_labeled.mat``: MATLAB v7.3, i.e. HDF5, read with h5py one image at a time. h5py shows MATLAB's
  axes reversed: ``images`` (N, 3, 640, 480) uint8, ``depths`` (N, 640, 480) float32 metres (in-painted),
  ``rawDepths`` (N, 640, 480) float32 metres (0 where the sensor had no reading), ``labels`` (N, 640, 480) with
  0 = unlabelled and 1..894 the fine classes.
- ``splits.mat`` (MAT v5): ``trainNdxs`` (795×1) and ``testNdxs`` (654×1), 1-based indices into the images.
- ``classMapping40.mat`` (MAT v5): ``mapClass`` (1×894, values 1..40) and ``className`` (the 40 names).

Output: ``RGB/``, ``Depth/`` (the in-painted depth, uint16 mm), ``Missing/`` (1 where ``rawDepths`` is 0),
``Label/`` (0..39, 255 = unlabelled), ``train.txt``, ``test.txt``, ``meta.json``. Image ``i`` (1-based, as in
splits.mat) is named ``f"{i:06d}"``.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from tqdm import tqdm

from primkd.data.layout import IGNORE_INDEX, NYU_INTRINSICS, Layout, write_split
from primkd.io import DataError, atomic_dir, write_json, write_png

_DATASETS = ("images", "depths", "rawDepths", "labels")


def read_splits(splits_mat: str | os.PathLike) -> dict[str, np.ndarray]:
    """The official split: ``{"train": 1-based indices (795,), "test": 1-based indices (654,)}`` in file order."""
    mat = _loadmat(splits_mat, ("trainNdxs", "testNdxs"))
    return {"train": mat["trainNdxs"].astype(np.int64), "test": mat["testNdxs"].astype(np.int64)}


def read_class_mapping(mapping_mat: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """Look-up table from the 894 fine labels to training labels, and the 40 class names.

    Returns:
        ``lut`` (895,) uint8 with ``lut[label894]`` = ``mapClass[label894] − 1`` (0..39) and ``lut[0]`` = 255
        (unlabelled), i.e. ``label40 = concat([0], mapClass)[label894]`` then ``label40 − 1`` with 0 → 255; and the
        ``className`` list (40 names, index k ↔ training label k).
    """
    mat = _loadmat(mapping_mat, ("mapClass", "className"))
    map_class = mat["mapClass"].astype(np.int64)  # (894,) values 1..40
    names = [str(n) for n in mat["className"]]
    if map_class.min() < 1 or map_class.max() > len(names):
        raise DataError(f"{mapping_mat}: mapClass values must lie in 1..{len(names)} (one per className); "
                        f"found {map_class.min()}..{map_class.max()}; re-download classMapping40.mat")
    label40 = np.concatenate([[0], map_class])  # (895,) 0 = unlabelled
    lut = np.where(label40 == 0, IGNORE_INDEX, label40 - 1).astype(np.uint8)
    return lut, names


def prepare_nyuv2(labeled_mat: str | os.PathLike, splits_mat: str | os.PathLike, mapping_mat: str | os.PathLike,
                  out_dir: str | os.PathLike, limit: int | None = None) -> Path:
    """Convert the labeled NYU Depth V2 .mat into the prepared layout at ``out_dir`` (written atomically).

    Args:
        labeled_mat: ``nyu_depth_v2_labeled.mat`` (MATLAB v7.3).
        splits_mat: ``splits.mat``.
        mapping_mat: ``classMapping40.mat``.
        out_dir: destination folder; replaced as a whole only once everything has been written.
        limit: keep only the first ``limit`` images of each split (in splits.mat order), for quick runs.

    Returns:
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    splits = {k: v[:limit] for k, v in read_splits(splits_mat).items()}
    lut, classes = read_class_mapping(mapping_mat)
    if not h5py.is_hdf5(labeled_mat):
        raise DataError(f"{labeled_mat}: not a MATLAB v7.3 (HDF5) file; download nyu_depth_v2_labeled.mat again "
                        f"(about 2.8 GB) from http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/")
    with h5py.File(labeled_mat, "r") as mat, atomic_dir(out_dir) as tmp:
        num_images = _check_labeled(mat, labeled_mat)
        indices = np.unique(np.concatenate(list(splits.values())))
        if indices.min() < 1 or indices.max() > num_images:
            raise DataError(f"{splits_mat}: indices must lie in 1..{num_images} (the images in {labeled_mat}); "
                            f"found {indices.min()}..{indices.max()}")
        layout = Layout(tmp)
        for index in tqdm(indices, desc="NYU Depth V2", unit="img"):
            _write_image(mat, int(index), lut, layout, labeled_mat)
        for split, split_indices in splits.items():
            write_split(tmp, split, [_name(int(i)) for i in split_indices])
        write_json(layout.meta_path, {"name": "nyuv2", "classes": classes, "ignore_index": IGNORE_INDEX,
                                      "intrinsics": dict(NYU_INTRINSICS), "depth_scale": 1000})
    return out_dir


def _name(index: int) -> str:
    """Image name of the 1-based index ``index``."""
    return f"{index:06d}"


def _loadmat(path: str | os.PathLike, keys: tuple[str, ...]) -> dict:
    """Load ``keys`` of a MAT v5 file as 1-D arrays (MATLAB's 1×n and n×1 alike); a missing file or key raises."""
    if not Path(path).is_file():
        raise DataError(f"{path}: file not found; fetch it first (primkd.data.download.DEFAULT_SOURCES)")
    mat = scipy.io.loadmat(path, variable_names=list(keys), squeeze_me=True)
    missing = [k for k in keys if k not in mat]
    if missing:
        raise DataError(f"{path}: variables {missing} not found; is this the right file?")
    return {k: np.atleast_1d(mat[k]) for k in keys}


def _check_labeled(mat: h5py.File, path: str | os.PathLike) -> int:
    """Check the datasets of the labeled .mat and return the number of images."""
    missing = [k for k in _DATASETS if k not in mat]
    if missing:
        raise DataError(f"{path}: datasets {missing} not found; is this nyu_depth_v2_labeled.mat?")
    num_images, _, width, height = mat["images"].shape
    for key in _DATASETS[1:]:
        if mat[key].shape != (num_images, width, height):
            raise DataError(f"{path}: {key} has shape {mat[key].shape}, expected {(num_images, width, height)} "
                            f"to match images {mat['images'].shape}; the file is damaged, download it again")
    return num_images


def _write_image(mat: h5py.File, index: int, lut: np.ndarray, layout: Layout, path: str | os.PathLike) -> None:
    """Convert image ``index`` (1-based) and write its RGB, Depth, Missing and Label PNGs."""
    i = index - 1
    rgb = mat["images"][i].transpose(2, 1, 0)  # (3, W, H) -> (H, W, 3)
    depth_m = mat["depths"][i].T  # (W, H) -> (H, W)
    raw_m = mat["rawDepths"][i].T  # (W, H) -> (H, W)
    label894 = mat["labels"][i].T  # (W, H) -> (H, W)
    if label894.max() >= len(lut):
        raise DataError(f"{path}: labels of image {index} reach {label894.max()}, beyond the {len(lut) - 1} classes "
                        f"of classMapping40.mat")
    name = _name(index)
    depth_mm = np.clip(np.round(np.nan_to_num(depth_m) * 1000.0), 0, np.iinfo(np.uint16).max).astype(np.uint16)
    missing = ~(np.isfinite(raw_m) & (raw_m > 0))
    write_png(layout.rgb(name), np.ascontiguousarray(rgb))
    write_png(layout.depth(name), depth_mm)
    write_png(layout.missing(name), missing.astype(np.uint8))
    write_png(layout.label(name), lut[label894])
