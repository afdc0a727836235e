"""The prepare stage: produce the common layout from the source named in params (``data.source``)."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from primkd.config import ConfigError
from primkd.data.download import DEFAULT_SOURCES, fetch
from primkd.data.layout import read_meta, read_split
from primkd.io import DataError, atomic_dir

log = logging.getLogger(__name__)

# Files each real source needs, keyed as in DEFAULT_SOURCES and params `data.urls`.
SOURCE_FILES = {
    "nyuv2": ("nyuv2_labeled", "nyuv2_splits", "nyuv2_class_mapping"),
    "sunrgbd": ("sunrgbd", "sunrgbd_toolbox"),
}


def fetch_sources(data: dict) -> dict[str, Path]:
    """Download (or find, when placed by hand) the raw files of ``data.source`` into ``data.raw_dir``; none for the
    synthetic and folder sources.

    URLs come from ``data.urls`` (a mirror may replace any); checksums from ``data.checksums`` where one is given
    (files other than the published ones: the rehearsal's), else the published values.
    """
    paths = {}
    for key in SOURCE_FILES.get(data["source"], ()):
        known = DEFAULT_SOURCES[key]
        paths[key] = fetch(data["urls"][key], Path(data["raw_dir"]) / data["source"], known["filename"],
                           data["checksums"][key] or known["known_hash"])
    return paths


def link_raw_files(files: dict[str, Path], out_dir: str | os.PathLike) -> None:
    """Make ``out_dir`` hold exactly ``files`` (by file name): hard links where the file system allows, else
    symbolic links, so the download stage's outputs cost no second copy of a multi-GB archive."""
    with atomic_dir(out_dir) as tmp:
        for path in files.values():
            try:
                os.link(path, tmp / path.name)
            except OSError:
                os.symlink(path.resolve(), tmp / path.name)


def raw_files(data: dict, raw_dir: str | os.PathLike) -> dict[str, Path]:
    """The raw files of ``data.source`` in ``raw_dir`` (the download stage's output folder), checked to exist."""
    paths = {key: Path(raw_dir) / DEFAULT_SOURCES[key]["filename"] for key in SOURCE_FILES[data["source"]]}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more raw files)" if len(missing) > 1 else ""
        raise DataError(f"{missing[0]}: not found{more}; run the download stage (`primkd download`) first")
    return paths


def prepare_dataset(data: dict, out_dir: str | os.PathLike, raw_dir: str | os.PathLike | None = None) -> Path:
    """Write the prepared dataset for the ``data`` section of params into ``out_dir``.

    ``raw_dir`` holds the raw files of a real source (the download stage's output); without it they are fetched
    into ``data.raw_dir`` first.
    """
    from primkd.data import folder, nyuv2, sunrgbd, synthetic

    source, limit = data["source"], data["limit"] or None
    if source == "synthetic":
        s = data["synthetic"]
        return synthetic.generate_dataset(out_dir, num_train=s["num_train"], num_test=s["num_test"],
                                          height=s["height"], width=s["width"], seed=s["seed"],
                                          workers=data["workers"], knobs=synthetic.SceneParams.from_params(s))
    if source == "folder":
        f = data["folder"]
        if not f["path"]:
            raise ConfigError("data.source is 'folder' but data.folder.path is empty; in params.yaml set "
                              "data.folder.path to the folder to import (RGB/, Depth/ or HHA/, Label/, train.txt, "
                              "test.txt)")
        folder.import_folder(f["path"], out_dir, f["num_classes"], modality=f["modality"],
                             intrinsics=f["intrinsics"], intrinsics_file=f["intrinsics_file"] or None)
        return Path(out_dir)
    raw = raw_files(data, raw_dir) if raw_dir is not None else fetch_sources(data)
    if source == "nyuv2":
        return nyuv2.prepare_nyuv2(raw["nyuv2_labeled"], raw["nyuv2_splits"], raw["nyuv2_class_mapping"], out_dir,
                                   limit=limit)
    return sunrgbd.prepare_sunrgbd(raw["sunrgbd"], raw["sunrgbd_toolbox"], out_dir, limit=limit)


def link_imported_hha(data_root: str | os.PathLike, out_dir: str | os.PathLike) -> int:
    """For a folder imported with ready-made HHA images (``meta.json`` ``hha_dir``), place them as the HHA output.

    Files are hard-linked where the file system allows (no copy), else copied; returns the number of images.
    """
    meta = read_meta(data_root)
    src = Path(meta["hha_dir"])
    names = read_split(data_root, "train") + read_split(data_root, "test")
    with atomic_dir(out_dir) as tmp:
        for name in names:
            target = (src / f"{name}.png").resolve()
            try:
                os.link(target, tmp / f"{name}.png")
            except OSError:
                shutil.copy2(target, tmp / f"{name}.png")
    log.info("linked %d imported HHA images from %s", len(names), src)
    return len(names)
