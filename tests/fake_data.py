"""Generated datasets for tests and the rehearsal (tests/ is on pytest's pythonpath; bench/rehearse.py imports it too):
a random prepared dataset, raw files in the real formats of NYU Depth V2 and SUN-RGBD at any size, their scenes
rendered by the synthetic generator (walls, floor, furniture, Kinect-like depth holes) so that HHA, training and
evaluation see plausible geometry, and tiny checkpoints in the released files' format."""

import zipfile
from pathlib import Path

import cv2
import h5py
import numpy as np
import scipy.io
import torch
from scipy import ndimage
from torch import nn

from primkd.data.layout import IGNORE_INDEX, write_split
from primkd.io import write_json, write_png
from primkd.models import CMX, cmx_to_official, teacher_to_official

REPO = Path(__file__).resolve().parents[1]
NYU_CLASS_MAPPING = REPO / "tests" / "fixtures" / "nyuv2" / "classMapping40.mat"  # the published file
SUNRGBD_SERVER = "/n/fs/sun3d/data/SUNRGBD"  # the prefix SUNRGBDMeta.mat gives every path
# SUN-RGBD's four sensors: (scene folder pattern, image height, width), as in the real archive.
SUNRGBD_SENSORS = (("kv2/kinect2data/{i:06d}_2014-05-26_14-23-37_260595134347_rgbf{i:06d}-resize", 530, 730),
                   ("kv1/NYUdata/NYU{i:04d}", 427, 561),
                   ("realsense/lg/2014_10_24-11_47_{i:02d}-1311000073", 531, 681),
                   ("xtion/xtion_align_data/2014_{i:02d}_01-test", 441, 591))


def make_dataset(root: Path, n_train: int = 4, n_test: int = 2, size=(32, 48), classes: int = 3) -> Path:
    """A random prepared dataset with a matching HHA folder (``root/hha``)."""
    rng = np.random.default_rng(0)
    H, W = size
    names = {"train": [f"tr{i}" for i in range(n_train)], "test": [f"te{i}" for i in range(n_test)]}
    for name in names["train"] + names["test"]:
        label = rng.integers(0, classes, (H, W)).astype(np.uint8)
        label[0, :] = IGNORE_INDEX
        write_png(root / "RGB" / f"{name}.png", rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
        write_png(root / "Depth" / f"{name}.png", rng.integers(500, 4000, (H, W)).astype(np.uint16))
        write_png(root / "Label" / f"{name}.png", label)
        write_png(root / "hha" / f"{name}.png", rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    for split, items in names.items():
        write_split(root, split, items)
    write_json(root / "meta.json", {"name": "random", "classes": [f"c{i}" for i in range(classes)],
                                    "intrinsics": {"fx": 50.0, "fy": 50.0, "cx": 24.5, "cy": 16.5}})
    return root


def fake_mode(per_seed: dict, macc: float = 0.6, pacc: float = 0.7, scales=(1.0,), flip: bool = False,
              epochs: dict | None = None):
    """One checkpoint × mode of an evaluation from ``{seed: miou}`` or ``{seed: (miou, macc, pacc)}`` (metrics in
    [0, 1]; two classes, IoU 0.4 and 0.6); ``epochs``: ``{seed: epoch}``."""
    from primkd.engine.results import ModeResult, SeedResult

    rows = {s: v if isinstance(v, tuple) else (v, macc, pacc) for s, v in per_seed.items()}
    seeds = tuple(SeedResult(s, *v, (epochs or {}).get(s)) for s, v in rows.items())
    return ModeResult(tuple(scales), flip, seeds, {"c0": 0.4, "c1": 0.6})


def write_evaluation(path: Path, last: dict, best: dict | None = None, per_image: dict | None = None,
                     model: str = "x", split: str = "test") -> None:
    """``eval/<run>.json`` (or ``<run>.train.json`` of ``split`` train) as ``primkd evaluate`` writes it, from
    ``{mode: fake_mode(...)}`` per checkpoint."""
    from primkd.engine.results import Evaluation

    Evaluation(model, 4, {"last": last, **({"best": best} if best else {})}, per_image, split).write(path)


# The released checkpoints' format (engine/engine.py `save_checkpoint` of CMX e251d86 and PrimKD c816fd7, which writes
# PrimKD's RGB teacher nyu-rgb.pth and CMX's NYU model): {"model": state dict with the official names, "module."
# removed, "optimizer": AdamW state, "epoch", "iteration"}.
def save_released(path: Path, model: nn.Module) -> Path:
    """Write ``model`` (a ``SegFormer`` teacher or a ``CMX``) as its released checkpoint would be written."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=6e-5, weight_decay=0.0)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # an optimiser state with moments, as a trained run saves; zero gradients leave the weights
    names = cmx_to_official if isinstance(model, CMX) else teacher_to_official
    torch.save({"model": names(model.state_dict()), "optimizer": optimizer.state_dict(), "epoch": 500,
                "iteration": 99500}, path)
    return path


def _rendered(seed: int, height: int, width: int) -> dict:
    """A synthetic scene: RGB, raw depth in metres (0 = no reading), the depth filled as NYU's toolbox fills it
    (here by the nearest reading), NYU-40 labels (0..39) and the camera."""
    from primkd.data.synthetic import render_scene

    scene = render_scene(seed, height, width)
    raw = scene["depth_mm"].astype(np.float32) / 1000
    nearest = ndimage.distance_transform_edt(raw == 0, return_distances=False, return_indices=True)
    return {"rgb": scene["rgb"], "raw": raw, "depth": raw[tuple(nearest)], "label40": scene["label"],
            "intrinsics": scene["intrinsics"]}


def _test_indices(n: int, n_test: int) -> np.ndarray:
    """0-based indices of the ``n_test`` test images among ``n``, spread out (the real splits interleave)."""
    return np.arange(n)[::max(n // max(n_test, 1), 1)][:n_test]


def write_nyuv2_raw(root: Path, n_train: int, n_test: int, size=(480, 640), seed: int = 0) -> dict[str, Path]:
    """``nyu_depth_v2_labeled.mat`` (MATLAB v7.3 = HDF5, the real axis order and dtypes, 894-class labels with 0 =
    unlabelled where the sensor had no reading), a ``splits.mat`` of these images (1-based, test and train
    interleaved as in the real one) and the published ``classMapping40.mat``, under ``root``; by data.urls key."""
    from primkd.data.nyuv2 import read_class_mapping

    root.mkdir(parents=True, exist_ok=True)
    lut, _ = read_class_mapping(NYU_CLASS_MAPPING)  # label894 -> label40 - 1
    label894_of = np.array([int(np.flatnonzero(lut == c)[0]) for c in range(40)], np.uint16)  # one per class
    n = n_train + n_test
    labeled = root / "nyu_depth_v2_labeled.mat"
    with h5py.File(labeled, "w", userblock_size=512) as f:
        h, w = size
        images = f.create_dataset("images", (n, 3, w, h), np.uint8)
        depths = f.create_dataset("depths", (n, w, h), np.float32)
        raw_depths = f.create_dataset("rawDepths", (n, w, h), np.float32)
        labels = f.create_dataset("labels", (n, w, h), np.uint16)
        for i in range(n):
            s = _rendered(seed + i, h, w)
            label = label894_of[s["label40"]]
            label[(s["raw"] == 0) & (np.arange(w)[None, :] % 2 == 0)] = 0  # some unlabelled pixels
            images[i] = s["rgb"].transpose(2, 1, 0)
            depths[i], raw_depths[i], labels[i] = s["depth"].T, s["raw"].T, label.T
    test = _test_indices(n, n_test) + 1
    train = np.setdiff1d(np.arange(1, n + 1), test)
    splits = root / "splits.mat"
    scipy.io.savemat(splits, {"trainNdxs": train[:, None].astype(np.uint16),
                              "testNdxs": test[:, None].astype(np.uint16)})
    mapping = root / "classMapping40.mat"
    mapping.write_bytes(NYU_CLASS_MAPPING.read_bytes())
    return {"nyuv2_labeled": labeled, "nyuv2_splits": splits, "nyuv2_class_mapping": mapping}


def rotate_left3(mm: np.ndarray) -> np.ndarray:
    """How SUN-RGBD stores depth in mm: uint16 rotated left by 3 bits (inverse of the toolbox's reading)."""
    return (np.left_shift(mm, np.uint16(3)) | np.right_shift(mm, np.uint16(13))).astype(np.uint16)


def write_sunrgbd_archive(root: Path, scenes, arrays: list[dict]) -> dict:
    """SUNRGBD/<scene>/{image,depth,depth_bfx,intrinsics.txt} under ``root`` for ``scenes`` (scene folder, file stem,
    H, W, split, intrinsics.txt text) with ``arrays`` ({rgb, stored_raw, stored_bfx}); returns the decoded RGB."""
    decoded = {}
    for (scene, stem, _, _, _, intrinsics), a in zip(scenes, arrays):
        folder = root / "SUNRGBD" / scene
        for sub in ("image", "depth", "depth_bfx"):
            (folder / sub).mkdir(parents=True)
        _, jpg = cv2.imencode(".jpg", a["rgb"][..., ::-1])
        (folder / "image" / f"{stem}.jpg").write_bytes(jpg.tobytes())
        decoded[scene] = cv2.imdecode(jpg, cv2.IMREAD_COLOR)[..., ::-1]
        cv2.imwrite(str(folder / "depth" / f"{stem}.png"), a["stored_raw"])
        cv2.imwrite(str(folder / "depth_bfx" / f"{stem}.png"), a["stored_bfx"])
        (folder / "intrinsics.txt").write_text(intrinsics)
    return decoded


def write_sunrgbd_toolbox(root: Path, scenes, arrays: list[dict], seg_format: str, with_names: bool) -> None:
    """SUNRGBDtoolbox/{Metadata,traintestSUNRGBD} under ``root``, as scipy.io.savemat (or h5py for v7.3) writes;
    ``arrays`` give each scene's ``seglabel`` (H×W, 0..37)."""
    from primkd.data.sunrgbd import SUNRGBD37_CLASSES

    meta_dir, split_dir = root / "SUNRGBDtoolbox" / "Metadata", root / "SUNRGBDtoolbox" / "traintestSUNRGBD"
    meta_dir.mkdir(parents=True)
    split_dir.mkdir(parents=True)
    meta = np.zeros((1, len(scenes)), dtype=[("rgbpath", object), ("depthpath", object), ("sequenceName", object)])
    for i, (scene, stem, *_) in enumerate(scenes):
        meta[0, i] = (f"{SUNRGBD_SERVER}/{scene}/image/{stem}.jpg", f"{SUNRGBD_SERVER}/{scene}/depth/{stem}.png",
                      f"SUNRGBD/{scene}")
    scipy.io.savemat(meta_dir / "SUNRGBDMeta.mat", {"SUNRGBDMeta": meta})
    cells = {f"all{split}": np.array([f"{SUNRGBD_SERVER}/{s[0]}" for s in scenes if s[4] == split], dtype=object)[None]
             for split in ("train", "test")}
    scipy.io.savemat(split_dir / "allsplit.mat", cells)
    if with_names:
        scipy.io.savemat(meta_dir / "seg37list.mat", {"seg37list": np.array(SUNRGBD37_CLASSES, dtype=object)[None]})
    if seg_format == "v5":
        seg = np.zeros((1, len(scenes)), dtype=[("seglabel", object)])
        for i, a in enumerate(arrays):
            seg["seglabel"][0, i] = a["seglabel"]
        scipy.io.savemat(meta_dir / "SUNRGBD2Dseg.mat", {"SUNRGBD2Dseg": seg})
        return
    with h5py.File(meta_dir / "SUNRGBD2Dseg.mat", "w", userblock_size=512) as f:  # MATLAB v7.3 layout
        refs = [f.create_dataset(f"#refs#/l{i}", data=a["seglabel"].T).ref for i, a in enumerate(arrays)]
        f.create_dataset("SUNRGBD2Dseg/seglabel", data=np.array(refs, dtype=h5py.ref_dtype).reshape(-1, 1))


def zip_folder(folder: Path, zip_path: Path) -> Path:
    """``folder``'s contents in a zip, with paths relative to it."""
    with zipfile.ZipFile(zip_path, "w") as z:
        for path in sorted(folder.rglob("*")):
            z.write(path, path.relative_to(folder).as_posix())
    return zip_path


def write_sunrgbd_raw(root: Path, n_train: int, n_test: int, seed: int = 0) -> dict[str, Path]:
    """``SUNRGBD.zip`` and ``SUNRGBDtoolbox.zip`` (v7.3 labels, class names) under ``root``, by data.urls key: the
    images cycle through the four sensors' folders and sizes, each with its camera in intrinsics.txt; depth in the
    toolbox's rotated encoding, 0 where the sensor had no reading (and in depth_bfx too, which the toolbox fills)."""
    scenes, arrays, test = [], [], set(_test_indices(n_train + n_test, n_test).tolist())
    for i in range(n_train + n_test):
        pattern, h, w = SUNRGBD_SENSORS[i % len(SUNRGBD_SENSORS)]
        s = _rendered(seed + i, h, w)
        k = s["intrinsics"]
        intrinsics = f"{k['fx']} 0 {k['cx']}\n0 {k['fy']} {k['cy']}\n0 0 1\n"
        split = "test" if i in test else "train"
        scenes.append((pattern.format(i=i + 1), f"{i + 1:07d}", h, w, split, intrinsics))
        seglabel = (s["label40"].astype(np.uint16) % 37) + 1
        seglabel[(s["raw"] == 0) & (np.arange(w)[None, :] % 2 == 0)] = 0
        raw_mm = np.round(s["raw"] * 1000).astype(np.uint16)
        filled_mm = np.round(s["depth"] * 1000).astype(np.uint16)
        arrays.append({"rgb": s["rgb"], "stored_raw": rotate_left3(raw_mm), "stored_bfx": rotate_left3(filled_mm),
                       "seglabel": seglabel})
    root.mkdir(parents=True, exist_ok=True)
    write_sunrgbd_archive(root / "data", scenes, arrays)
    write_sunrgbd_toolbox(root / "tb", scenes, arrays, seg_format="v73", with_names=True)
    return {"sunrgbd": zip_folder(root / "data", root / "SUNRGBD.zip"),
            "sunrgbd_toolbox": zip_folder(root / "tb", root / "SUNRGBDtoolbox.zip")}
