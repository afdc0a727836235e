"""SUN-RGBD (10335 images, 37 classes, 5285 train / 5050 test) → the prepared layout (primkd.data.layout).

What this module assumes about the raw files. It was read from the SUN-RGBD toolbox's MATLAB code
(``readData/read3dPoints.m``, ``read_3d_pts_general.m``) and from public preparation scripts (e.g. TUI-NICR/ESANet
``src/datasets/sunrgbd/prepare_dataset.py``); no file of the real dataset is available here to check it against.

- ``SUNRGBD.zip`` holds ``SUNRGBD/<sensor>/<collection>/<scene>/`` folders (``kv1/NYUdata/NYU0001``,
  ``kv2/kinect2data/000002_...``, ``realsense/lg/...``, ``xtion/...``), each with ``image/<name>.jpg``,
  ``depth/<name>.png`` (raw sensor depth), ``depth_bfx/<name>.png`` (in-painted depth) and ``intrinsics.txt``.
- ``SUNRGBDtoolbox.zip`` holds ``SUNRGBDtoolbox/``:

  - ``Metadata/SUNRGBDMeta.mat`` (MAT v5/v7, read with scipy): struct array ``SUNRGBDMeta`` (1×10335) whose char
    fields ``rgbpath`` and ``depthpath`` are paths on the authors' server, such as
    ``/n/fs/sun3d/data/SUNRGBD/kv1/NYUdata/NYU0001/image/NYU0001.jpg``; everything up to ``SUNRGBD/`` is dropped.
  - ``Metadata/SUNRGBD2Dseg.mat`` (MATLAB v7.3, read with h5py; an older MAT file is read with scipy): struct array
    ``SUNRGBD2Dseg`` in the same order as ``SUNRGBDMeta``, field ``seglabel`` (H×W, 0 = unlabelled, 1..37).
    Through h5py ``SUNRGBD2Dseg/seglabel`` is an array of object references to W×H (transposed) arrays.
  - ``Metadata/seg37list.mat``: cell ``seg37list`` with the 37 class names (``SUNRGBD37_CLASSES`` if absent).
  - ``traintestSUNRGBD/allsplit.mat``: cells ``alltrain`` (5285) and ``alltest`` (5050) of scene folders, with the
    same server prefix (``/n/fs/sun3d/data/SUNRGBD/kv1/NYUdata/NYU0001``).

- Depth PNGs are uint16 whose bits are rotated: the toolbox reads ``bitor(bitshift(v, -3), bitshift(v, 13))``
  (in uint16, i.e. a right rotation by 3 bits) as millimetres and clips it at 8 m (``depthInpaint(depthInpaint > 8)
  = 8``). ``decode_depth`` does the same. ``Depth/`` holds the decoded ``depth_bfx`` and ``Missing/`` marks the
  pixels where the raw ``depth`` PNG is 0.
- ``intrinsics.txt`` holds K = [fx 0 cx; 0 fy cy; 0 0 1] as 9 numbers, row by row. The toolbox back-projects with
  ``meshgrid(1:W, 1:H)`` and ``x − cx``, so its principal point is already 1-based (our convention): it is copied
  unchanged into ``meta.json`` ``intrinsics_per_image``.

Image ``i`` (1-based position in ``SUNRGBDMeta``) is named ``f"{i:06d}"``; ``meta.json`` ``scenes`` maps each name
back to its scene folder. Images keep their own size (they differ between sensors).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import h5py
import numpy as np
import scipy.io
from tqdm import tqdm

from primkd.data.layout import IGNORE_INDEX, Layout, write_split
from primkd.io import DataError, atomic_dir, write_json, write_png

# Metadata/seg37list.mat, label k + 1 ↔ index k.
SUNRGBD37_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror", "floor_mat",
    "clothes", "ceiling", "books", "fridge", "tv", "paper", "towel", "shower_curtain", "box", "whiteboard",
    "person", "night_stand", "toilet", "sink", "lamp", "bathtub", "bag",
)
MAX_DEPTH_MM = 8000  # the toolbox clips depth at 8 m

_META = "Metadata/SUNRGBDMeta.mat"
_SEG = "Metadata/SUNRGBD2Dseg.mat"
_NAMES = "Metadata/seg37list.mat"
_SPLIT = "traintestSUNRGBD/allsplit.mat"


def decode_depth(raw: np.ndarray) -> np.ndarray:
    """Depth in millimetres (uint16, clipped at 8000) from a SUN-RGBD depth PNG (uint16, bits rotated left by 3)."""
    v = raw.astype(np.uint16)
    mm = np.right_shift(v, np.uint16(3)) | np.left_shift(v, np.uint16(13))  # rotate right by 3 bits in 16
    return np.minimum(mm, np.uint16(MAX_DEPTH_MM))


def parse_intrinsics(text: str, source: str) -> dict[str, float]:
    """fx, fy, cx, cy (1-based principal point, as the toolbox uses it) from the text of an ``intrinsics.txt``."""
    try:
        k = np.array(text.split(), dtype=np.float64)
    except ValueError as e:
        raise DataError(f"{source}: intrinsics.txt must hold 9 numbers (K row by row): {e}") from e
    if k.size != 9 or not np.allclose(k[[1, 3, 6, 7, 8]], [0, 0, 0, 0, 1]):
        raise DataError(f"{source}: expected K = [fx 0 cx; 0 fy cy; 0 0 1] as 9 numbers, found {text.split()}")
    return {"fx": float(k[0]), "fy": float(k[4]), "cx": float(k[2]), "cy": float(k[5])}


@dataclass(frozen=True)
class _Image:
    """Paths of one image inside SUNRGBD/ (POSIX, relative)."""

    scene: str
    rgb: str
    depth_raw: str

    @property
    def depth_bfx(self) -> str:
        return f"{self.scene}/depth_bfx/{PurePosixPath(self.depth_raw).name}"

    @property
    def intrinsics(self) -> str:
        return f"{self.scene}/intrinsics.txt"


def prepare_sunrgbd(sunrgbd_zip_or_dir: str | os.PathLike, toolbox_zip_or_dir: str | os.PathLike,
                    out_dir: str | os.PathLike, limit: int | None = None) -> Path:
    """Convert SUN-RGBD into the prepared layout at ``out_dir`` (written atomically).

    Args:
        sunrgbd_zip_or_dir: ``SUNRGBD.zip``, or the folder it was extracted to (holding ``SUNRGBD/``, or ``SUNRGBD``
            itself). Images are read from the zip member by member, without extracting it.
        toolbox_zip_or_dir: ``SUNRGBDtoolbox.zip`` or its extracted folder (the .mat files of a zip are extracted to
            a temporary folder, since HDF5 needs random access).
        out_dir: destination folder; replaced as a whole only once everything has been written.
        limit: keep only the first ``limit`` images of each split (in SUNRGBDMeta order), for quick runs.

    Returns:
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    with contextlib.ExitStack() as stack:
        data = stack.enter_context(_Archive(sunrgbd_zip_or_dir, "SUNRGBD"))
        toolbox = stack.enter_context(_Archive(toolbox_zip_or_dir, "SUNRGBDtoolbox"))
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sunrgbd_toolbox_")))
        images = _read_image_paths(toolbox.local_file(_META, scratch))
        splits = _assign_splits(images, toolbox.local_file(_SPLIT, scratch), limit)
        classes = _read_class_names(toolbox, scratch)
        labels = stack.enter_context(_SegLabels(toolbox.local_file(_SEG, scratch)))
        if len(labels) != len(images):
            raise DataError(f"{toolbox.path}: {_SEG} has {len(labels)} label images but {_META} lists "
                            f"{len(images)}; the toolbox is damaged, download it again")
        tmp = stack.enter_context(atomic_dir(out_dir))
        layout, per_image, scenes = Layout(tmp), {}, {}
        for index in tqdm(sorted(i for names in splits.values() for i in names), desc="SUN-RGBD", unit="img"):
            name, image = _name(index), images[index - 1]
            per_image[name] = _write_image(data, image, labels[index - 1], name, layout)
            scenes[name] = image.scene
        for split, indices in splits.items():
            write_split(tmp, split, [_name(i) for i in indices])
        write_json(layout.meta_path, {
            "name": "sunrgbd", "classes": classes, "ignore_index": IGNORE_INDEX,
            "intrinsics": _most_common(per_image), "intrinsics_per_image": per_image, "depth_scale": 1000,
            "scenes": scenes})
    return out_dir


def _name(index: int) -> str:
    """Image name of the 1-based position ``index`` in SUNRGBDMeta."""
    return f"{index:06d}"


def _relative(server_path: str, source: str) -> str:
    """``kv1/NYUdata/NYU0001/...`` from ``/n/fs/sun3d/data/SUNRGBD/kv1/NYUdata/NYU0001/...`` (no trailing ``/``)."""
    parts = PurePosixPath(str(server_path).strip()).parts
    if "SUNRGBD" not in parts:
        raise DataError(f"{source}: path {server_path!r} has no 'SUNRGBD/' component; is this the SUN-RGBD toolbox?")
    return "/".join(parts[parts.index("SUNRGBD") + 1:])


def _loadmat(path: Path, key: str, source: str) -> np.ndarray:
    """Variable ``key`` of a MAT v5/v7 file as a 1-D object array (structs as attribute objects)."""
    if h5py.is_hdf5(path):
        raise DataError(f"{source}: {path.name} is a MATLAB v7.3 file; this reader expects the v5/v7 file of the "
                        f"official SUNRGBDtoolbox.zip")
    mat = scipy.io.loadmat(path, variable_names=[key], squeeze_me=True, struct_as_record=False)
    if key not in mat:
        raise DataError(f"{source}: variable {key!r} not found in {path.name}; is this the official toolbox?")
    return np.atleast_1d(mat[key])


def _read_image_paths(meta_mat: Path) -> list[_Image]:
    """The images of SUNRGBDMeta.mat, in file order."""
    images = []
    for record in _loadmat(meta_mat, "SUNRGBDMeta", _META):
        rgb = _relative(record.rgbpath, _META)
        images.append(_Image(scene=str(PurePosixPath(rgb).parent.parent), rgb=rgb,
                             depth_raw=_relative(record.depthpath, _META)))
    return images


def _assign_splits(images: list[_Image], split_mat: Path, limit: int | None) -> dict[str, list[int]]:
    """1-based image indices per split, from the scene folders listed in allsplit.mat (alltrain, alltest)."""
    scenes = {split: {_relative(p, _SPLIT) for p in _loadmat(split_mat, f"all{split}", _SPLIT)}
              for split in ("train", "test")}
    splits: dict[str, list[int]] = {"train": [], "test": []}
    unassigned = []
    for index, image in enumerate(images, start=1):
        found = [split for split in splits if image.scene in scenes[split]]
        if len(found) != 1:
            unassigned.append(f"{image.scene} ({'both lists' if found else 'neither list'})")
            continue
        splits[found[0]].append(index)
    if unassigned:
        raise DataError(f"{_SPLIT}: {len(unassigned)} images of {_META} are not in exactly one of alltrain/alltest, "
                        f"e.g. {unassigned[:5]}; the two files come from different toolbox versions")
    return {split: indices[:limit] for split, indices in splits.items()}


def _read_class_names(toolbox: _Archive, scratch: Path) -> list[str]:
    if not toolbox.exists(_NAMES):
        return list(SUNRGBD37_CLASSES)
    names = [str(n) for n in _loadmat(toolbox.local_file(_NAMES, scratch), "seg37list", _NAMES)]
    if len(names) != len(SUNRGBD37_CLASSES):
        raise DataError(f"{toolbox.path}: {_NAMES} lists {len(names)} classes, expected 37")
    return names


def _most_common(per_image: dict[str, dict[str, float]]) -> dict[str, float]:
    """The most frequent camera: the dataset-level ``intrinsics`` (every image also has its own entry)."""
    counts = Counter(tuple(k.items()) for k in per_image.values())
    return dict(counts.most_common(1)[0][0])


def _write_image(data: _Archive, image: _Image, seglabel: np.ndarray, name: str, layout: Layout) -> dict:
    """Decode one image's files, check that their sizes agree, write the PNGs; return its intrinsics."""
    rgb = _decode(data, image.rgb, cv2.IMREAD_COLOR)[..., ::-1]  # BGR -> RGB
    depth = decode_depth(_decode(data, image.depth_bfx, cv2.IMREAD_UNCHANGED))
    missing = _decode(data, image.depth_raw, cv2.IMREAD_UNCHANGED) == 0
    seglabel = seglabel.astype(np.int64)
    shapes = {"image": rgb.shape[:2], "depth_bfx": depth.shape, "depth": missing.shape, "seglabel": seglabel.shape}
    if len(set(shapes.values())) != 1:
        raise DataError(f"{data.path}: {image.scene}: sizes disagree {shapes}; the archive and toolbox do not match")
    if seglabel.min() < 0 or seglabel.max() > len(SUNRGBD37_CLASSES):
        raise DataError(f"{_SEG}: seglabel of {image.scene} holds {seglabel.min()}..{seglabel.max()}, "
                        f"expected 0..{len(SUNRGBD37_CLASSES)}")
    write_png(layout.rgb(name), np.ascontiguousarray(rgb))
    write_png(layout.depth(name), depth)
    write_png(layout.missing(name), missing.astype(np.uint8))
    write_png(layout.label(name), np.where(seglabel == 0, IGNORE_INDEX, seglabel - 1).astype(np.uint8))
    return parse_intrinsics(data.read_bytes(image.intrinsics).decode(), f"{data.path}: {image.intrinsics}")


def _decode(data: _Archive, rel: str, flags: int) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data.read_bytes(rel), np.uint8), flags)
    if image is None:
        raise DataError(f"{data.path}: {rel}: cannot decode the image (corrupt file); download the archive again")
    if flags == cv2.IMREAD_UNCHANGED and (image.ndim != 2 or image.dtype != np.uint16):
        raise DataError(f"{data.path}: {rel}: a depth PNG must be single-channel uint16, found {image.dtype} "
                        f"with shape {image.shape}")
    return image


class _Archive:
    """Files of ``<top>.zip`` or of the folder it extracts to, addressed by their path below ``<top>/``."""

    def __init__(self, path: str | os.PathLike, top: str) -> None:
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        if self.path.is_dir():
            self._base = self.path / top if (self.path / top).is_dir() else self.path
        elif zipfile.is_zipfile(self.path):
            self._zip = zipfile.ZipFile(self.path)
            self._members = set(self._zip.namelist())
            self._prefix = f"{top}/" if any(n.startswith(f"{top}/") for n in self._members) else ""
        else:
            raise DataError(f"{self.path}: neither a folder nor a zip file; give {top}.zip or the folder it was "
                            f"extracted to (fetch it with primkd.data.download)")

    def __enter__(self) -> _Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._zip is not None:
            self._zip.close()

    def exists(self, rel: str) -> bool:
        if self._zip is None:
            return (self._base / rel).is_file()
        return f"{self._prefix}{rel}" in self._members

    def read_bytes(self, rel: str) -> bytes:
        if not self.exists(rel):
            raise DataError(f"{self.path}: {rel} not found; the archive is incomplete, download it again")
        if self._zip is None:
            return (self._base / rel).read_bytes()
        return self._zip.read(f"{self._prefix}{rel}")

    def local_file(self, rel: str, scratch: Path) -> Path:
        """A path on disk holding ``rel`` (extracted into ``scratch`` when reading from a zip)."""
        if not self.exists(rel):
            raise DataError(f"{self.path}: {rel} not found; the archive is incomplete, download it again")
        if self._zip is None:
            return self._base / rel
        return Path(self._zip.extract(f"{self._prefix}{rel}", scratch))


class _SegLabels:
    """``seglabel`` of SUNRGBD2Dseg.mat image by image (h5py for MATLAB v7.3, else scipy), each H×W."""

    def __init__(self, path: Path) -> None:
        self._h5: h5py.File | None = None
        if h5py.is_hdf5(path):
            self._h5 = h5py.File(path, "r")
            if "SUNRGBD2Dseg/seglabel" not in self._h5:
                raise DataError(f"{_SEG}: no SUNRGBD2Dseg/seglabel in {path.name}; is this the official toolbox?")
            self._refs = self._h5["SUNRGBD2Dseg/seglabel"][()].ravel()  # (N,) object references
        else:
            self._labels = [np.asarray(s.seglabel) for s in _loadmat(path, "SUNRGBD2Dseg", _SEG)]

    def __enter__(self) -> _SegLabels:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._h5 is not None:
            self._h5.close()

    def __len__(self) -> int:
        return len(self._refs) if self._h5 is not None else len(self._labels)

    def __getitem__(self, i: int) -> np.ndarray:
        if self._h5 is not None:
            return self._h5[self._refs[i]][()].T  # (W, H) -> (H, W)
        return self._labels[i]
