"""File I/O at the edges: atomic writes and image reads that fail with a message naming the file.

Every stage writes through these helpers so that an interrupted stage never leaves a half-written file that DVC or
Snakemake would take as complete: data goes to a temporary file in the same folder, is flushed to disk, then renamed
over the target (rename is atomic on POSIX file systems).
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)
_warned: set[str] = set()  # files already warned about (once per process)
_LOW_SPACE = 1 << 20  # bytes; below this a failed write is put down to a full disk


class DataError(ValueError):
    """A problem with an input file or dataset; the message names the file and says how to fix it."""


class DiskFullError(DataError):
    """An output could not be written because its file system is full; the message names the file."""


def _disk_full(error: BaseException, folder: Path) -> bool:
    """Whether a failed write is down to a full disk: ENOSPC, or (writers such as torch.save and OpenCV report it
    in their own words) almost no space left where the file was being written."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    try:
        return shutil.disk_usage(folder).free < _LOW_SPACE
    except OSError:
        return False


def _umask() -> int:
    """The process's file-creation mask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it over ``path``, on error delete it.

    Args:
        path: final destination.
        suffix: suffix of the temporary file (defaults to the destination's, so writers that pick a format from
            the extension, such as ``cv2.imwrite``, still work).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=suffix if suffix is not None else path.suffix,
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes the file private; give it the usual permissions
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except (OSError, RuntimeError) as e:
        tmp_path.unlink(missing_ok=True)
        if _disk_full(e, path.parent):
            raise DiskFullError(f"{path}: no space left on device while writing it; free space on the disk of "
                                f"{path.parent} (or write the outputs elsewhere) and run again") from e
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (so a rename survives a power loss); a file system that cannot is left alone."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


OUTPUT_MARKER = ".primkd-output"  # in every folder atomic_dir writes: the files it holds, one per line


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` (an old ``path`` is removed).

    The folder is the command's own: it records the files it wrote in :data:`OUTPUT_MARKER`, and a ``path`` that
    holds anything else (a folder the command did not write, files added to one it did, the current folder) is
    refused before any work, so an ``--out`` never deletes what the command did not write. Files and folders get
    the user's umask (writers such as safetensors create their files private).
    """
    path = Path(path)
    _check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        written = _files_below(tmp)
        (tmp / OUTPUT_MARKER).write_text("".join(f"{name}\n" for name in written))
        _share(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _files_below(folder: Path) -> list[str]:
    """Relative paths of the files and links under ``folder`` (links to folders not followed), sorted."""
    found = []
    for top, dirs, names in os.walk(folder):
        found += [Path(top, n) for n in names] + [Path(top, d) for d in dirs if Path(top, d).is_symlink()]
    return sorted(p.relative_to(folder).as_posix() for p in found)


def _check_replaceable(path: Path) -> None:
    """Raise :class:`DataError` unless replacing ``path`` as a whole loses nothing the command did not write."""
    fix = "give the output a new or empty folder, or move those files away"
    resolved, here = path.resolve(), Path.cwd().resolve()
    if resolved == here or resolved in here.parents:
        raise DataError(f"{path}: is the current folder or one that holds it, and an output folder is replaced as a "
                        f"whole; give the output a folder of its own, e.g. {path / 'out'}")
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise DataError(f"{path}: exists and is not a folder; {fix.replace('those files', 'it')}")
    present = _files_below(path) if path.is_dir() else []
    if not present:
        return
    marker = path / OUTPUT_MARKER
    written = set(marker.read_text().splitlines()) if marker.is_file() else None
    foreign = [name for name in present if name != OUTPUT_MARKER and (written is None or name not in written)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        whose = "is not a folder primkd wrote" if written is None else "holds files primkd did not write"
        raise DataError(f"{path}: {whose} ({shown}), and an output folder is replaced as a whole; {fix}")


def _share(folder: Path) -> None:
    """Give ``folder`` and everything in it the permissions the user's umask asks for."""
    mask = _umask()
    os.chmod(folder, 0o777 & ~mask)
    for top, dirs, names in os.walk(folder):
        for d in dirs:
            if not Path(top, d).is_symlink():
                os.chmod(Path(top, d), 0o777 & ~mask)
        for n in names:
            file = Path(top, n)
            if not file.is_symlink() and file.stat().st_nlink == 1:  # a hard link's mode is its other name's too
                os.chmod(file, 0o666 & ~mask)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def csv_text(rows: list[dict]) -> str:
    """Rows of equal keys as CSV text with LF line endings (header from the first row): the one CSV writer."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (NaN is written as null so every JSON reader accepts it)."""
    write_text(path, json.dumps(_nan_to_none(obj), indent=2, sort_keys=False) + "\n")


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nan_to_none(v) for v in obj]
    return obj


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing or malformed file raises :class:`DataError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the path, or re-run the stage that writes it")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e}); regenerate it or fix it by hand") from e


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a file's contents (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files_digest(paths: Iterable[Path], root: Path | None = None) -> str:
    """One SHA-256 over the names (relative to ``root``) and contents of ``paths``, in the given order."""
    digest = hashlib.sha256()
    for path in paths:
        name = path.relative_to(root) if root is not None and path.is_relative_to(root) else path.name
        digest.update(f"{name}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def file_digests(paths: Iterable[str], root: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of each file named in ``paths`` (relative to ``root``), keyed by that name."""
    return {str(name): sha256_file(Path(root) / name) for name in paths}


def tree_files(root: str | os.PathLike) -> list[Path]:
    """Every file under ``root``, symlinked folders followed (a dataset folder is often a tree of links), sorted by
    relative path so the order does not depend on the file system."""
    root = Path(root)
    found = [Path(folder) / name for folder, _, names in os.walk(root, followlinks=True) for name in names]
    return sorted((p for p in found if p.is_file()), key=lambda p: p.relative_to(root).as_posix())


def tree_digest(root: str | os.PathLike) -> str:
    """:func:`files_digest` of every file under ``root`` (:func:`tree_files`): changes when a file is added, removed,
    renamed or edited, and is equal for two folders with the same files."""
    root = Path(root)
    return files_digest(tree_files(root), root)


def path_digest(path: str | os.PathLike) -> str:
    """:func:`tree_digest` of a folder, :func:`files_digest` of a file (its name and contents)."""
    path = Path(path)
    return tree_digest(path) if path.is_dir() else files_digest([path])


# --- Content records of pipeline outputs -------------------------------------------------------------------------
# Snakemake decides by modification times, and a folder output's time is that of its .snakemake_timestamp: an
# in-place edit of a prepared, HHA or label image, or a teacher model.pt replaced by an older file, goes unseen.
# OutputRecords keeps each output's files (size, times, SHA-256) as the pipeline wrote them, hashes only files whose
# size or times changed since (the status-change time too, which no one can set back), and names the outputs whose
# contents differ, so that their jobs rerun, as in DVC.

_NOT_CONTENT = {".snakemake_timestamp"}  # Snakemake's own marker in folder outputs


class OutputRecords:
    """What a pipeline wrote, kept in a JSON file: for each output path its files (relative name → [size, mtime_ns,
    ctime_ns, sha256]) and a *token*, a job parameter that changes when the output was changed by someone else.

    :meth:`changed` (when the workflow is read) names the outputs whose contents differ from the record, gives each
    a new token (so the job that writes it reruns: Snakemake reruns a job whose parameters changed) and records
    outputs it has not seen; :meth:`record_rewritten` (after the run) records the outputs the run rewrote and keeps
    their new tokens. An output the run left alone keeps its record, so a change is reported until its job reran.
    """

    def __init__(self, store: str | os.PathLike):
        self.store = Path(store)
        saved = {}
        if self.store.is_file():
            with contextlib.suppress(ValueError, OSError):
                saved = json.loads(self.store.read_text())
        self.files: dict[str, dict[str, list]] = saved.get("files", {})
        self.tokens: dict[str, str] = saved.get("tokens", {})
        # tokens of the outputs found changed, kept once their job rewrote them; saved, so that the job processes of
        # a cluster run, which read the workflow again without looking, give their jobs the same parameter
        self.pending: dict[str, str] = saved.get("pending", {})
        self.seen: dict[str, dict[str, list]] = {}  # stats when changed() looked, to find what the run rewrote

    @staticmethod
    def _files(path: Path) -> list[Path]:
        files = tree_files(path) if path.is_dir() else [path] if path.is_file() else []
        return [p for p in files if p.name not in _NOT_CONTENT]

    def _stats(self, output: str) -> dict[str, list]:
        root, stats = Path(output), {}
        for p in self._files(root):
            st, name = p.stat(), p.relative_to(root).as_posix() if p != root else p.name
            stats[name] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        return stats

    @staticmethod
    def _digest(output: str, name: str) -> str:
        root = Path(output)
        return sha256_file(root if root.is_file() else root / name)

    def changed(self, outputs: Iterable[str]) -> dict[str, str]:
        """Outputs (that exist) whose files differ in content from the record, each with the first difference."""
        found, self.pending = {}, {}
        for output in dict.fromkeys(map(str, outputs)):
            stats = self.seen[output] = self._stats(output)
            record = self.files.get(output)
            if not stats or record is None:
                if stats:
                    self._record(output, stats)
                continue
            for name in sorted(set(stats) | set(record)):
                if name not in stats or name not in record:
                    found[output] = f"{name} {'removed' if name not in stats else 'added'}"
                    break
                if stats[name] != record[name][:3]:
                    digest = self._digest(output, name)
                    if digest != record[name][3]:
                        found[output] = f"{name} edited"
                        break
                    record[name] = [*stats[name], digest]  # touched, same bytes: no need to hash it again
        for output, why in found.items():
            log.warning("%s: %s since the pipeline wrote it; its job and everything after it rerun", output, why)
            self.pending[output] = hashlib.sha256(f"{self.tokens.get(output, '')}{why}".encode()).hexdigest()[:16]
        self._save()
        return found

    def token(self, outputs: Iterable[str]) -> str:
        """The parameter of the job that writes ``outputs``: it changes when one of them was changed by others."""
        return ",".join(self.pending.get(o) or self.tokens.get(o, "") for o in map(str, outputs))

    def record_rewritten(self) -> None:
        """Record the outputs whose files changed since :meth:`changed` looked (the run rewrote them)."""
        for output, before in self.seen.items():
            stats = self._stats(output)
            if stats and stats != before:
                self._record(output, stats)
                if output in self.pending:
                    self.tokens[output] = self.pending.pop(output)
        self._save()

    def _record(self, output: str, stats: dict[str, list]) -> None:
        self.files[output] = {name: [*stat, self._digest(output, name)] for name, stat in stats.items()}

    def _save(self) -> None:
        write_text(self.store, json.dumps({"files": self.files, "tokens": self.tokens, "pending": self.pending},
                                          sort_keys=True))


# Training-state checkpoints (written by primkd.engine.checkpoint) are named here, below every layer, because the stage
# log (primkd.runlog) names the checkpoint a run resumes from without importing the engine.
STATE_PREFIX = "step-"


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """Training-state checkpoints in ``directory``, oldest (lowest iteration) first."""
    directory = Path(directory)
    return sorted(directory.glob(f"{STATE_PREFIX}*.pt")) if directory.is_dir() else []


# What matplotlib would stamp into a figure file that is not the figure: the time of writing (PDF, SVG) and a random
# salt of the SVG element ids. Without them the same figure gives the same bytes, so rebuilding a report from the
# same results changes no file that DVC or a reviewer compares.
_FIGURE_METADATA = {"pdf": {"CreationDate": None}, "svg": {"Date": None}, "png": {}}


def save_figure(fig: Any, *paths: str | os.PathLike) -> None:
    """Write a matplotlib figure atomically to each of ``paths``, in the format of its extension (png, pdf, svg),
    without a creation date: the one place figures are saved."""
    import matplotlib

    for path in paths:
        fmt = Path(path).suffix.lstrip(".").lower()
        if fmt not in _FIGURE_METADATA:
            raise DataError(f"{path}: a figure is written as PNG, PDF or SVG by its file name; name it .png, .pdf or "
                            f".svg")
        with matplotlib.rc_context({"svg.hashsalt": "primkd"}), atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, metadata=_FIGURE_METADATA[fmt])


def write_png(path: str | os.PathLike, image: np.ndarray, rgb: bool = True) -> None:
    """Write a uint8 or uint16 image as PNG atomically.

    Args:
        path: destination ``.png``.
        image: H×W (grey) or H×W×3 array.
        rgb: whether a 3-channel ``image`` is in RGB order (OpenCV writes BGR, so it is reversed here).
    """
    if image.ndim == 3 and rgb:
        image = image[..., ::-1]
    with atomic_path(path, suffix=".png") as tmp:
        if not cv2.imwrite(str(tmp), np.ascontiguousarray(image)):
            raise OSError(f"{path}: OpenCV could not write the image")


def read_image(path: str | os.PathLike, kind: str = "rgb") -> np.ndarray:
    """Read an image with a clear error for a missing, corrupt or wrongly typed file.

    Args:
        path: image file.
        kind: ``"rgb"`` (H×W×3 uint8, RGB order), ``"gray"`` (H×W uint8, e.g. labels) or ``"depth"`` (H×W uint16,
            millimetres; an 8-bit file is rejected because it cannot hold metric depth).

    Returns:
        The decoded array.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the path, or re-run the stage that writes it")
    flags = {"rgb": cv2.IMREAD_COLOR, "gray": cv2.IMREAD_UNCHANGED, "depth": cv2.IMREAD_UNCHANGED}[kind]
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise DataError(f"{path}: cannot decode the image (corrupt or truncated file); re-create or re-download it")
    if kind == "rgb":
        _warn_if_not_colour(path, data)
        return image[..., ::-1].copy()
    if image.ndim == 3:
        if kind == "gray" and image.shape[2] >= 3 and (image[..., 1:3] == image[..., :1]).all():
            return image[..., 0].copy()
        raise DataError(f"{path}: expected a single-channel {kind} image, found {image.shape[2]} channels; "
                        f"save it as a one-channel PNG")
    if kind == "depth" and image.dtype != np.uint16:
        raise DataError(f"{path}: depth must be a 16-bit PNG in millimetres, found {image.dtype}; re-export it as "
                        f"uint16 millimetres (0 = missing)")
    if kind == "gray" and image.dtype != np.uint8:
        raise DataError(f"{path}: labels must be an 8-bit PNG (0..K-1, 255 = ignore), found {image.dtype}; re-export "
                        f"it as uint8")
    return image


_NOT_COLOUR = {
    "grey": "a greyscale image read as RGB (its grey value in all three channels)",
    "grey+alpha": "a greyscale image with an alpha channel read as RGB (grey value in all three channels, alpha "
                  "dropped)",
    "rgba": "an RGBA image read as RGB (the alpha channel is dropped)",
}


def _warn_if_not_colour(path: Path, data: np.ndarray) -> None:
    """Warn (once per file) when an image read as RGB is stored as grey or with alpha: OpenCV converts it silently."""
    kind = _stored_channels(data[:65536].tobytes())
    if kind in _NOT_COLOUR and str(path) not in _warned:
        _warned.add(str(path))
        log.warning("%s: %s; convert it to a 3-channel RGB file if that is not intended", path, _NOT_COLOUR[kind])


def _stored_channels(head: bytes) -> str | None:
    """What a PNG or JPEG header says the file stores: "grey", "grey+alpha", "rgba", "rgb", or None if unknown."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) > 25:
        return {0: "grey", 2: "rgb", 3: "rgb", 4: "grey+alpha", 6: "rgba"}.get(head[25])
    if head[:2] == b"\xff\xd8":  # JPEG: walk the segments to the start of frame, which gives the component count
        i = 2
        while i + 9 < len(head) and head[i] == 0xFF:
            marker, length = head[i + 1], int.from_bytes(head[i + 2:i + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                return {1: "grey", 3: "rgb"}.get(head[i + 9])
            i += 2 + length
    return None
