"""Inference: segment RGB(-D) images with a trained, imported or exported model and write coloured label maps.

Inputs follow the training conventions: RGB uint8 in RGB order, HHA uint8 in on-disk order (disparity, height,
angle), both normalised with the ImageNet mean/std; models whose metadata says ``info["bgr"]`` (the official
checkpoints) get both images in reversed channel order, as the official code feeds them. When only depth is given,
HHA is computed on the fly from metric depth and the camera intrinsics (1-based principal point).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from primkd.data.dataset import DEPTH_KEY, normalize, reads_depth
from primkd.data.hha import compute_hha, read_depth
from primkd.data.layout import scaled_intrinsics
from primkd.data.viz import label_palette
from primkd.engine.evaluate import predict_probs
from primkd.io import DataError, read_image, write_png

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEPTH_SUFFIXES = (".png", ".npy")


def prepare_inputs(meta: dict, rgb: np.ndarray, hha: np.ndarray | None = None) -> list[Tensor]:
    """The network's input tensors, in ``meta["inputs"]`` order, each ``1×3×H×W`` float32 (normalised).

    Args:
        meta: model metadata (``load_model`` / ``load_exported``): ``inputs`` and ``info["bgr"]``.
        rgb: H×W×3 uint8, RGB order.
        hha: H×W×3 uint8 HHA (disparity, height, angle), required when the model reads depth.
    """
    bgr = bool(meta["info"].get("bgr", False))
    images = {"rgb": rgb, DEPTH_KEY: hha}
    missing = [k for k in meta["inputs"] if images[k] is None]
    if missing:
        raise ValueError(f"the model reads {meta['inputs']}; give the HHA image or the depth map for {missing}")
    if hha is not None and hha.shape[:2] != rgb.shape[:2]:
        raise ValueError(f"HHA size {hha.shape[:2]} differs from the RGB size {rgb.shape[:2]}")
    return [normalize(images[k], bgr)[None] for k in meta["inputs"]]  # (1, 3, H, W)


def segment(model: nn.Module, meta: dict, rgb: np.ndarray, depth_m: np.ndarray | None = None,
            hha: np.ndarray | None = None, intrinsics: dict | None = None, scales: Sequence[float] = (1.0,),
            flip: bool = False) -> np.ndarray:
    """Label map of one image.

    Args:
        model: network in eval mode (its device is used).
        meta: its metadata (``inputs``, ``info["bgr"]``).
        rgb: H×W×3 uint8, RGB order.
        depth_m: H×W depth in metres (0 = missing); turned into HHA when the model reads depth and ``hha`` is None.
        hha: H×W×3 uint8 HHA image, used as is when given.
        intrinsics: {"fx", "fy", "cx", "cy"} in pixels (1-based principal point), needed to compute HHA.
        scales: test scales; probabilities are summed over them (see ``predict_probs``).
        flip: also add the horizontally flipped prediction.

    Returns:
        H×W uint8 class indices 0..K-1 (K ≤ 256).
    """
    if reads_depth(meta["inputs"]) and hha is None and depth_m is not None:
        if intrinsics is None:
            raise ValueError("computing HHA from depth needs the camera intrinsics fx, fy, cx, cy (1-based)")
        hha = compute_hha(depth_m, intrinsics)
    device = next(model.parameters()).device
    xs = [x.to(device) for x in prepare_inputs(meta, rgb, hha)]
    probs = predict_probs(model, xs, scales, flip)  # (1, K, H, W)
    return probs.argmax(1)[0].to(torch.uint8).cpu().numpy()


def colorize(label: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """H×W label map → H×W×3 uint8 colours (RGB); ``palette`` is 256×3 uint8, default ``label_palette()``."""
    palette = label_palette() if palette is None else palette
    return palette[label]


def overlay(rgb: np.ndarray, colour: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend ``(1 − alpha)·rgb + alpha·colour``, both H×W×3 uint8, rounded to uint8."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay alpha must lie in [0, 1], got {alpha}")
    blend = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colour.astype(np.float32)
    return np.rint(blend).astype(np.uint8)


def write_prediction(out_png: str | os.PathLike, label: np.ndarray, rgb: np.ndarray,
                     overlay_alpha: float | None = None, palette: np.ndarray | None = None) -> list[Path]:
    """Write the coloured label map to ``out_png`` and, with ``overlay_alpha``, ``<stem>_overlay.png`` beside it.

    Returns:
        The files written (atomically).
    """
    out_png = Path(out_png)
    colour = colorize(label, palette)
    write_png(out_png, colour)
    written = [out_png]
    if overlay_alpha is not None:
        written.append(out_png.with_name(f"{out_png.stem}_overlay.png"))
        write_png(written[-1], overlay(rgb, colour, overlay_alpha))
    return written


def _find(folder: Path, stem: str, suffixes: Sequence[str], what: str) -> Path:
    for suffix in suffixes:
        if (folder / f"{stem}{suffix}").is_file():
            return folder / f"{stem}{suffix}"
    raise DataError(f"{folder}: no {what} for {stem!r} (looked for {stem}{{{','.join(suffixes)}}}); give each RGB "
                    "image a file with the same name")


def infer_one(model: nn.Module, meta: dict, rgb_path: str | os.PathLike, out_png: str | os.PathLike,
              depth_path: str | os.PathLike | None = None, hha_path: str | os.PathLike | None = None,
              intrinsics: dict | None = None, depth_scale: float = 1000.0, scales: Sequence[float] = (1.0,),
              flip: bool = False, overlay_alpha: float | None = None) -> list[Path]:
    """Segment one RGB(-D) pair and write its colour map (and overlay); arguments as for :func:`infer_folder`.

    HHA, when given, is used instead of depth; depth is read only by models that take it.

    Returns:
        The files written.
    """
    rgb = read_image(rgb_path, "rgb")
    depth_read = reads_depth(meta["inputs"])
    hha = read_image(hha_path, "rgb") if depth_read and hha_path is not None else None
    depth = None
    if depth_read and hha is None and depth_path is not None:
        depth = read_depth(depth_path, depth_scale)
        if depth.shape != rgb.shape[:2]:
            raise DataError(f"{depth_path}: depth size {depth.shape} differs from the RGB image {rgb.shape[:2]}")
    camera = intrinsics or scaled_intrinsics(*rgb.shape[:2])
    label = segment(model, meta, rgb, depth, hha, camera, scales, flip)
    return write_prediction(out_png, label, rgb, overlay_alpha)


def infer_folder(model: nn.Module, meta: dict, rgb_dir: str | os.PathLike, out_dir: str | os.PathLike,
                 depth_dir: str | os.PathLike | None = None, hha_dir: str | os.PathLike | None = None,
                 intrinsics: dict | None = None, depth_scale: float = 1000.0, scales: Sequence[float] = (1.0,),
                 flip: bool = False, overlay_alpha: float | None = None, progress: bool = True) -> list[str]:
    """Segment every RGB image of a folder and write ``<out_dir>/<name>.png`` colour maps (and overlays).

    Args:
        model, meta: as for :func:`segment`.
        rgb_dir: RGB images (``.png``/``.jpg``); ``<name>`` is the file stem.
        out_dir: destination folder.
        depth_dir: depth per image, ``<name>.png`` (uint16, 1/``depth_scale`` m) or ``<name>.npy`` (float metres);
            needed by models that read depth unless ``hha_dir`` is given.
        hha_dir: precomputed HHA PNGs ``<name>.png``, used instead of depth when given.
        intrinsics: camera {"fx", "fy", "cx", "cy"} (1-based); None = the NYU camera scaled to each image's size.
        depth_scale: PNG depth units per metre.
        scales, flip: test-time augmentation (see ``predict_probs``).
        overlay_alpha: also write ``<name>_overlay.png`` blending the colours over the RGB image with this weight.
        progress: show a progress bar.

    Returns:
        The image names processed, sorted.
    """
    rgb_dir, out_dir = Path(rgb_dir), Path(out_dir)
    files = sorted(p for p in rgb_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if rgb_dir.is_dir() else []
    if not files:
        raise DataError(f"{rgb_dir}: no RGB images ({', '.join(IMAGE_SUFFIXES)}) found")
    by_stem: dict[str, list[str]] = {}
    for path in files:
        by_stem.setdefault(path.stem, []).append(path.name)
    clash = next((found for found in by_stem.values() if len(found) > 1), None)
    if clash:
        raise DataError(f"{rgb_dir}: {' and '.join(clash)} would both be written as {Path(clash[0]).stem}.png; "
                        f"rename one of them (each image's file name without extension names its outputs)")
    names = sorted(by_stem)
    depth_read = reads_depth(meta["inputs"])
    if depth_read and depth_dir is None and hha_dir is None:
        raise DataError(f"the model reads {meta['inputs']}: give a depth folder or an HHA folder")
    if depth_read and hha_dir is None and intrinsics is None:
        log.info("no intrinsics given: using the NYU Depth V2 camera scaled to each image's size")
    for name in tqdm(names, desc="infer", unit="img", disable=not progress):
        rgb_path = _find(rgb_dir, name, IMAGE_SUFFIXES, "RGB image")
        hha_path = _find(Path(hha_dir), name, (".png",), "HHA image") if depth_read and hha_dir is not None else None
        depth_path = (_find(Path(depth_dir), name, DEPTH_SUFFIXES, "depth map") if depth_read and hha_path is None
                      else None)
        infer_one(model, meta, rgb_path, out_dir / f"{name}.png", depth_path, hha_path, intrinsics, depth_scale,
                  scales, flip, overlay_alpha)
    return names
