"""Check a prepared dataset (:mod:`primkd.data.layout`) and list every problem at once (``primkd check-data``).

Each problem is one line that names the file (or the sample) and says how to fix it. Checked: ``meta.json`` (class
names, intrinsics), the split lists (present, not empty, no repeated names, no image in both splits), and for every
listed sample that its RGB, Depth, Label (and Missing mask, and HHA image when an HHA folder is given) files exist
and decode, have the expected type, share one size, that labels lie in 0..K-1 or 255, and that depth is not all
missing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from tqdm import tqdm

from primkd.data.layout import (
    IGNORE_INDEX,
    SPLITS,
    Layout,
    invalid_labels,
    read_meta,
    read_split,
    repeated_names,
    shared_names,
)
from primkd.io import DataError, read_image

INTRINSICS = ("fx", "fy", "cx", "cy")


def check_meta(layout: Layout) -> tuple[int | None, list[str]]:
    """Number of classes in ``meta.json`` (None when unusable) and the problems of the file."""
    try:
        meta = read_meta(layout.root)
    except DataError as e:
        return None, [str(e)]
    path, problems = layout.meta_path, []
    classes = meta["classes"]
    if not isinstance(classes, list) or not 0 < len(classes) <= IGNORE_INDEX:
        problems.append(f"{path}: `classes` must list 1..{IGNORE_INDEX} class names (label k names class k); "
                        f"fix meta.json or re-run the prepare stage")
        classes = None
    cameras = {"intrinsics": meta["intrinsics"], **{f"intrinsics_per_image.{k}": v
                                                    for k, v in (meta.get("intrinsics_per_image") or {}).items()}}
    for key, camera in cameras.items():
        bad = [k for k in INTRINSICS if not (isinstance(camera, Mapping) and _positive(camera.get(k)))]
        if bad:
            problems.append(f"{path}: `{key}` needs positive numbers {', '.join(bad)} (pixels, 1-based principal "
                            f"point); fix meta.json")
    if "depth_scale" in meta and not _positive(meta["depth_scale"]):
        problems.append(f"{path}: `depth_scale` must be a positive number of PNG units per metre (1000 = mm)")
    return (len(classes) if classes else None), problems


def _positive(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def check_splits(layout: Layout) -> tuple[dict[str, list[str]], list[str]]:
    """Names of each readable split list (in order) and the problems of the lists."""
    splits, problems = {}, []
    for split in SPLITS:
        try:
            names = read_split(layout.root, split, repeats=True)
        except DataError as e:
            problems.append(str(e))
            continue
        problems += filter(None, [repeated_names(layout.split_path(split), names)])
        splits[split] = list(dict.fromkeys(names))
    if len(splits) == len(SPLITS):
        problems += filter(None, [shared_names(layout.root, splits["train"], splits["test"])])
    return splits, problems


def check_sample(layout: Layout, name: str, num_classes: int | None, hha_root: Path | None = None,
                 listed_in: str = "a split list") -> list[str]:
    """Problems of sample ``name``: missing, undecodable or wrongly typed files, sizes, label values, empty depth."""
    files = {"RGB": (layout.rgb(name), "rgb"), "Depth": (layout.depth(name), "depth"),
             "Label": (layout.label(name), "gray")}
    if layout.missing(name).is_file():
        files["Missing"] = (layout.missing(name), "gray")
    if hha_root is not None:
        files["HHA"] = (hha_root / f"{name}.png", "rgb")
    arrays, problems = {}, []
    for key, (path, kind) in files.items():
        if not path.is_file():
            problems.append(f"{path}: missing ({name!r} is listed in {listed_in}); add the file, or remove the name "
                            f"from the list")
            continue
        try:
            arrays[key] = read_image(path, kind)
        except DataError as e:
            problems.append(str(e))
    if arrays:
        ref_key = next(iter(arrays))  # RGB when it could be read
        (H, W) = arrays[ref_key].shape[:2]
        for key, a in arrays.items():
            if a.shape[:2] != (H, W):
                problems.append(f"{files[key][0]}: size {a.shape[0]}×{a.shape[1]} differs from the {ref_key} image "
                                f"{files[ref_key][0].name} ({H}×{W}); every file of a sample must have the same size: "
                                f"re-export it or re-prepare the dataset")
    if "Label" in arrays and num_classes is not None:
        bad = invalid_labels(arrays["Label"], num_classes)
        if bad:
            problems.append(f"{layout.label(name)}: label values {bad[:10]} are outside 0..{num_classes - 1} "
                            f"(255 = ignore); fix the class mapping of this dataset")
    if "Depth" in arrays and not np.any(arrays["Depth"]):
        problems.append(f"{layout.depth(name)}: every depth pixel is 0 (missing); HHA needs valid depth: re-export "
                        f"the depth map or drop the sample")
    return problems


def check_dataset(root: str | os.PathLike, hha_root: str | os.PathLike | None = None,
                  progress: bool = False) -> list[str]:
    """Every problem of a prepared dataset (and of its HHA folder, when given), one message each.

    Args:
        root: prepared dataset folder.
        hha_root: HHA folder of that dataset, or None to skip the HHA images.
        progress: show a progress bar over the samples.

    Returns:
        The problems, each naming the file or key and the fix; empty when the dataset is sound.
    """
    layout = Layout(Path(root))
    if not layout.root.is_dir():
        return [f"{layout.root}: dataset folder not found; run the prepare stage or pass the right folder"]
    num_classes, problems = check_meta(layout)
    splits, split_problems = check_splits(layout)
    problems += split_problems
    hha = Path(hha_root) if hha_root is not None else None
    if hha is not None and not hha.is_dir():
        problems.append(f"{hha}: HHA folder not found; run the hha stage for this dataset")
        hha = None
    listed: dict[str, list[str]] = {}
    for split, names in splits.items():
        for name in names:
            listed.setdefault(name, []).append(f"{split}.txt")
    for name, where in tqdm(listed.items(), desc="check", unit="img", disable=not progress):
        problems += check_sample(layout, name, num_classes, hha, " and ".join(where))
    return problems
