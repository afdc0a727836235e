"""Import an already-prepared RGB-D folder (the CMX / DFormer / PrimKD layout) into the prepared layout.

Source layout::

    <src>/RGB/<name>.jpg|.png       colour image
    <src>/Depth/<name>.png          uint16 depth in millimetres (modality="depth"), or
    <src>/HHA/<name>.png|.jpg       HHA image, channels disparity, height, angle (modality="hha")
    <src>/Label/<name>.png          uint8, 0 = unlabelled, 1..K the classes (``labels/`` in the official
                                    PrimKD/DFormer SUN-RGBD folders)
    <src>/train.txt, test.txt       one image per line: ``name`` or ``RGB/name.jpg`` (further columns ignored)

Depth becomes HHA with the camera's intrinsics, recorded in ``meta.json``: one camera for the folder
(``intrinsics``: NYU Depth V2's by default for a 40-class folder) or one per image (``intrinsics_file``: a JSON
``{name: {fx, fy, cx, cy}}`` or a folder of ``<name>.txt`` files holding K row by row, SUN-RGBD's ``intrinsics.txt``
format). A 37-class (SUN-RGBD) depth folder needs one of them: its images come from four different cameras.
DFormer's ``Depth/`` images are 8-bit and normalised per image, not millimetres, so no HHA can be computed from
them: such a folder is refused with a message pointing at its ``HHA/`` folder (``modality="hha"``).

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

import cv2
import numpy as np
from tqdm import tqdm

from primkd.data.layout import IGNORE_INDEX, NYU40_CLASSES, NYU_INTRINSICS, SPLITS, Layout, write_split
from primkd.data.sunrgbd import SUNRGBD37_CLASSES, parse_intrinsics
from primkd.io import DataError, atomic_dir, read_image, read_json, write_json, write_png

_IMAGE_EXTS = (".png", ".jpg", ".jpeg")
_KNOWN_CLASSES = {len(NYU40_CLASSES): NYU40_CLASSES, len(SUNRGBD37_CLASSES): SUNRGBD37_CLASSES}
_CAMERAS = {"nyuv2": NYU_INTRINSICS}  # named cameras for data.folder.intrinsics
_LABEL_DIRS = ("Label", "labels")
_CAMERA_KEYS = ("fx", "fy", "cx", "cy")


def import_folder(src_dir: str | os.PathLike, out_dir: str | os.PathLike, num_classes: int, modality: str = "depth",
                  link: bool = True, *, hha_dir: str | os.PathLike | None = None, classes: list[str] | None = None,
                  intrinsics: dict[str, float] | str | None = None,
                  intrinsics_file: str | os.PathLike | None = None) -> Path:
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
        intrinsics: the folder's camera: fx, fy, cx, cy (1-based principal point), a named camera (``"nyuv2"``) or
            None / ``"auto"`` (NYU Depth V2's camera, refused for a 37-class depth folder: see the module docstring).
        intrinsics_file: per-image cameras (JSON or a folder of ``<name>.txt``), for every listed image.

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
    label_dir = next((d for d in _LABEL_DIRS if (src / d).is_dir()), None)
    if label_dir is None:
        raise DataError(f"{src}: no label folder (looked for {' and '.join(f'{d}/' for d in _LABEL_DIRS)})")
    splits = {split: _read_names(src, split, problems) for split in SPLITS}
    names = sorted(set(splits["train"]) | set(splits["test"]))
    camera, per_image = None, None
    if modality == "depth":
        _refuse_8bit_depth(src, names)
        camera, per_image = _cameras(src, num_classes, intrinsics, intrinsics_file, names, problems)
    both = sorted(set(splits["train"]) & set(splits["test"]))
    problems += [f"{src / 'test.txt'}: {n} is also in train.txt" for n in both]
    final_hha = Path(hha_dir) if hha_dir is not None else out_dir / "HHA"
    with contextlib.ExitStack() as stack:
        hha_tmp = stack.enter_context(atomic_dir(final_hha)) if modality == "hha" and hha_dir is not None else None
        tmp = stack.enter_context(atomic_dir(out_dir))
        layout = Layout(tmp)
        second = layout.depth_dir if modality == "depth" else (hha_tmp or tmp / "HHA")
        for name in tqdm(names, desc=f"import {src.name}", unit="img"):
            problems += _import_one(src, name, folder, label_dir, num_classes, link, layout, second)
        if problems:
            raise DataError(f"{src}: {len(problems)} problem(s) found, nothing was written; fix them and run again:\n"
                            + "\n".join(f"  - {p}" for p in problems))
        for split, split_names in splits.items():
            write_split(tmp, split, split_names)
        meta = {"name": src.name, "classes": classes, "ignore_index": IGNORE_INDEX,
                "intrinsics": dict(camera or NYU_INTRINSICS), "depth_scale": 1000, "source": str(src.resolve()),
                "modality": modality}
        if per_image:
            meta["intrinsics_per_image"] = per_image
        if modality == "hha":
            meta["hha_dir"] = str(final_hha.resolve())
        write_json(layout.meta_path, meta)
    return out_dir / "Depth" if modality == "depth" else final_hha


def _refuse_8bit_depth(src: Path, names: list[str]) -> None:
    """Refuse DFormer's depth (8-bit, normalised per image) from its first image: HHA needs metric depth."""
    first = next((p for n in names if (p := src / "Depth" / f"{n}.png").is_file()), None)
    image = cv2.imread(str(first), cv2.IMREAD_UNCHANGED) if first is not None else None
    if image is None or image.dtype != np.uint8:
        return  # 16-bit (or unreadable: reported with the other problems)
    fix = (f"this folder has {src / 'HHA'}/: set data.folder.modality: hha to use those images"
           if (src / "HHA").is_dir() else
           "point data.folder.path at a folder whose Depth/ holds uint16 millimetres, or at one with HHA/ and "
           "data.folder.modality: hha")
    raise DataError(f"{src / 'Depth'}: 8-bit depth images ({first.name}: uint8), as DFormer's per-image normalised "
                    f"depth; they are not millimetres, so no HHA can be computed from them: {fix}")


def _cameras(src: Path, num_classes: int, intrinsics: dict | str | None, intrinsics_file: str | os.PathLike | None,
             names: list[str], problems: list[str]) -> tuple[dict | None, dict | None]:
    """The folder's camera and the per-image cameras (or None) for the HHA of a depth folder."""
    if intrinsics_file:
        per_image = _read_intrinsics_file(Path(intrinsics_file), names, problems)
        camera = _most_common_camera(per_image) if per_image else None
        return camera, per_image
    if isinstance(intrinsics, str) and intrinsics != "auto":
        if intrinsics not in _CAMERAS:
            raise DataError(f"data.folder.intrinsics: unknown camera {intrinsics!r}; use one of {sorted(_CAMERAS)}, "
                            f"auto, or {{fx, fy, cx, cy}}")
        return dict(_CAMERAS[intrinsics]), None
    if isinstance(intrinsics, dict):
        missing = [k for k in _CAMERA_KEYS if k not in intrinsics]
        if missing:
            raise DataError(f"data.folder.intrinsics lacks {missing}; give fx, fy, cx, cy in pixels (1-based cx, cy)")
        return {k: float(intrinsics[k]) for k in _CAMERA_KEYS}, None
    if num_classes == len(SUNRGBD37_CLASSES):
        raise DataError(f"{src}: a 37-class (SUN-RGBD) depth folder mixes four cameras, and HHA needs each image's: "
                        f"set data.folder.intrinsics_file to a JSON {{name: {{fx, fy, cx, cy}}}} or a folder of "
                        f"<name>.txt intrinsics (K row by row), or data.folder.intrinsics if one camera took them all")
    return dict(NYU_INTRINSICS), None


def _read_intrinsics_file(path: Path, names: list[str], problems: list[str]) -> dict[str, dict]:
    """Per-image cameras from a JSON file or a folder of ``<name>.txt``; a listed image without one is a problem."""
    cameras: dict[str, dict] = {}
    if path.is_dir():
        for name in names:
            txt = path / f"{name}.txt"
            if txt.is_file():
                cameras[name] = parse_intrinsics(txt.read_text(), str(txt))
    elif path.is_file():
        raw = read_json(path)
        if not isinstance(raw, dict):
            raise DataError(f"{path}: expected a JSON object {{name: {{fx, fy, cx, cy}}}}")
        for name, cam in raw.items():
            if not isinstance(cam, dict) or any(k not in cam for k in _CAMERA_KEYS):
                problems.append(f"{path}: entry {name!r} needs fx, fy, cx, cy")
            else:
                cameras[name] = {k: float(cam[k]) for k in _CAMERA_KEYS}
    else:
        raise DataError(f"data.folder.intrinsics_file: {path} is neither a JSON file nor a folder of <name>.txt")
    absent = [n for n in names if n not in cameras]
    if absent:
        more = f" and {len(absent) - 5} more" if len(absent) > 5 else ""
        problems.append(f"{path}: no intrinsics for {absent[:5]}{more}")
    return {n: cameras[n] for n in names if n in cameras}


def _most_common_camera(per_image: dict[str, dict]) -> dict:
    """The camera most images share: the dataset-level ``intrinsics`` of meta.json."""
    keys = [tuple(c[k] for k in _CAMERA_KEYS) for c in per_image.values()]
    best = max(set(keys), key=keys.count)
    return dict(zip(_CAMERA_KEYS, best))


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


def _import_one(src: Path, name: str, folder: str, label_dir: str, num_classes: int, link: bool, layout: Layout,
                second_dir: Path) -> list[str]:
    """Check one image's three files and write them; return the problems found (nothing is written if any)."""
    exts = {"RGB": _IMAGE_EXTS, folder: (".png",) if folder == "Depth" else _IMAGE_EXTS, "Label": (".png",)}
    dirs = {"RGB": "RGB", folder: folder, "Label": label_dir}
    paths = {key: _find(src / dirs[key], name, key_exts) for key, key_exts in exts.items()}
    problems = [f"{src / dirs[key] / name}.({'|'.join(e.lstrip('.') for e in exts[key])}): not found"
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
