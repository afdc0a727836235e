"""Import an already-prepared RGB-D folder (the CMX / DFormer / PrimKD layout) into the prepared layout.

Source layout::

    <src>/RGB/<name>.jpg|.png       colour image
    <src>/Depth/<name>.png          uint16 depth in millimetres (modality="depth"), or
    <src>/HHA/<name>.png|.jpg       HHA image, channels disparity, height, angle (modality="hha")
    <src>/Label/<name>.png          uint8, 0 = unlabelled, 1..K the classes
    <src>/train.txt, test.txt       one image per line: ``name`` or ``RGB/name.jpg`` (further columns ignored)

Files that need no conversion (PNG colour images, PNG depth, PNG HHA) are symlinked (or copied with
``link=False``); JPEG images are decoded and written as PNG; labels are always rewritten as label − 1 with 0 → 255.
Every file is read and checked first, and all problems (missing or unreadable files, sizes that differ between
RGB, depth/HHA and label, label values above K, names listed in both splits) are reported together in one
DataError.

HHA images are not depth, so they do not go to ``Depth/``: they go to their own folder (``hha_dir``, by default
``<out_dir>/HHA``), which the HHA stage of the pipeline would otherwise produce from ``Depth/``; ``import_folder``
returns that folder and ``meta.json`` records it under ``"hha_dir"``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from primkd.data.layout import IGNORE_INDEX, NYU40_CLASSES, NYU_INTRINSICS, SPLITS, Layout, write_split
from primkd.data.sunrgbd import SUNRGBD37_CLASSES
from primkd.io import DataError, atomic_dir, read_image, write_json, write_png

_IMAGE_EXTS = (".png", ".jpg", ".jpeg")
_KNOWN_CLASSES = {len(NYU40_CLASSES): NYU40_CLASSES, len(SUNRGBD37_CLASSES): SUNRGBD37_CLASSES}


def import_folder(src_dir: str | os.PathLike, out_dir: str | os.PathLike, num_classes: int, modality: str = "depth",
                  link: bool = True, *, hha_dir: str | os.PathLike | None = None, classes: list[str] | None = None,
                  intrinsics: dict[str, float] | None = None) -> Path:
    """Check and import ``src_dir`` into the prepared layout at ``out_dir`` (both outputs written atomically).

    Args:
        src_dir: folder in the CMX/DFormer/PrimKD layout (module docstring).
        out_dir: destination of the prepared dataset.
        num_classes: K; source labels are 0..K (0 = unlabelled).
        modality: ``"depth"`` (``Depth/``, uint16 mm) or ``"hha"`` (``HHA/``).
        link: symlink the files that need no conversion instead of copying them.
        hha_dir: where HHA images go when ``modality="hha"`` (default ``<out_dir>/HHA``).
        classes: the K class names (default: the NYU-40 or SUN-RGBD-37 names for K = 40 or 37, else
            ``class_1`` ... ``class_K``).
        intrinsics: camera fx, fy, cx, cy (1-based principal point); default: NYU Depth V2's camera.

    Returns:
        The folder of the second modality: ``<out_dir>/Depth``, or the HHA folder.
    """
    if modality not in ("depth", "hha"):
        raise DataError(f"modality must be 'depth' or 'hha', got {modality!r}")
    src, out_dir = Path(src_dir), Path(out_dir)
    classes = list(classes or _KNOWN_CLASSES.get(num_classes) or [f"class_{k}" for k in range(1, num_classes + 1)])
    if len(classes) != num_classes:
        raise DataError(f"{len(classes)} class names given for num_classes={num_classes}")
    folder = "Depth" if modality == "depth" else "HHA"
    problems: list[str] = []
    if not (src / folder).is_dir():
        other = "HHA" if modality == "depth" else "Depth"
        hint = f" (it has {other}/: use modality={other.lower()!r})" if (src / other).is_dir() else ""
        raise DataError(f"{src}: no {folder}/ folder{hint}")
    splits = {split: _read_names(src, split, problems) for split in SPLITS}
    both = sorted(set(splits["train"]) & set(splits["test"]))
    problems += [f"{src / 'test.txt'}: {n} is also in train.txt" for n in both]
    final_hha = Path(hha_dir) if hha_dir is not None else out_dir / "HHA"
    with contextlib.ExitStack() as stack:
        hha_tmp = stack.enter_context(atomic_dir(final_hha)) if modality == "hha" and hha_dir is not None else None
        tmp = stack.enter_context(atomic_dir(out_dir))
        layout = Layout(tmp)
        second = layout.depth_dir if modality == "depth" else (hha_tmp or tmp / "HHA")
        names = sorted(set(splits["train"]) | set(splits["test"]))
        for name in tqdm(names, desc=f"import {src.name}", unit="img"):
            problems += _import_one(src, name, folder, num_classes, link, layout, second)
        if problems:
            raise DataError(f"{src}: {len(problems)} problem(s) found, nothing was written; fix them and run again:\n"
                            + "\n".join(f"  - {p}" for p in problems))
        for split, split_names in splits.items():
            write_split(tmp, split, split_names)
        meta = {"name": src.name, "classes": classes, "ignore_index": IGNORE_INDEX,
                "intrinsics": dict(intrinsics or NYU_INTRINSICS), "depth_scale": 1000, "source": str(src.resolve()),
                "modality": modality}
        if modality == "hha":
            meta["hha_dir"] = str(final_hha.resolve())
        write_json(layout.meta_path, meta)
    return out_dir / "Depth" if modality == "depth" else final_hha


def _read_names(src: Path, split: str, problems: list[str]) -> list[str]:
    """Names of ``<src>/<split>.txt`` (first column; ``RGB/name.jpg`` → ``name``); problems are appended."""
    path = src / f"{split}.txt"
    if not path.is_file():
        problems.append(f"{path}: split file not found")
        return []
    names = []
    for line in path.read_text().splitlines():
        token = line.split()[0] if line.strip() else ""
        if token:
            is_path = "/" in token or token.lower().endswith(_IMAGE_EXTS)
            names.append(Path(token).stem if is_path else token)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        problems.append(f"{path}: names listed more than once: {duplicates}")
    if not names:
        problems.append(f"{path}: no image listed")
    return list(dict.fromkeys(names))


def _find(folder: Path, name: str, exts: tuple[str, ...]) -> Path | None:
    return next((folder / f"{name}{e}" for e in exts if (folder / f"{name}{e}").is_file()), None)


def _import_one(src: Path, name: str, folder: str, num_classes: int, link: bool, layout: Layout,
                second_dir: Path) -> list[str]:
    """Check one image's three files and write them; return the problems found (nothing is written if any)."""
    exts = {"RGB": _IMAGE_EXTS, folder: (".png",) if folder == "Depth" else _IMAGE_EXTS, "Label": (".png",)}
    paths = {key: _find(src / key, name, key_exts) for key, key_exts in exts.items()}
    problems = [f"{src / key / name}.({'|'.join(e.lstrip('.') for e in exts[key])}): not found"
                for key, path in paths.items() if path is None]
    images = {}
    for key, path in paths.items():
        if path is not None:
            try:
                images[key] = read_image(path, {"RGB": "rgb", "Depth": "depth", "HHA": "rgb", "Label": "gray"}[key])
            except DataError as e:
                problems.append(str(e))
    sizes = {key: image.shape[:2] for key, image in images.items()}
    if len(set(sizes.values())) > 1:
        problems.append(f"{name}: sizes differ: " + ", ".join(f"{k} {h}×{w}" for k, (h, w) in sizes.items()))
    if "Label" in images and images["Label"].max() > num_classes:
        bad = np.unique(images["Label"][images["Label"] > num_classes])
        problems.append(f"{paths['Label']}: label values {bad.tolist()} outside 0..{num_classes}")
    if problems:
        return problems
    _place(paths["RGB"], images["RGB"], layout.rgb(name), link)
    _place(paths[folder], images[folder], second_dir / f"{name}.png", link)
    label = images["Label"].astype(np.int64)
    write_png(layout.label(name), np.where(label == 0, IGNORE_INDEX, label - 1).astype(np.uint8))
    return []


def _place(src: Path, image: np.ndarray, dest: Path, link: bool) -> None:
    """Put ``src`` at ``dest`` (.png): a symlink or copy of a PNG, else ``image`` (RGB order) written as PNG."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.suffix.lower() != ".png":
        write_png(dest, image)
    elif link:
        os.symlink(src.resolve(), dest)
    else:
        shutil.copyfile(src, dest)
