"""Downloads of the real datasets: checksummed, retried, never half-written, with a clear message when offline.

``fetch`` is the only entry point. A file that is already at its destination (downloaded earlier or placed there by
hand on a machine without internet) is used as is once its checksum checks out. Where the publisher gives no
checksum, the sha256 of the first copy is recorded in ``<dest_dir>/checksums.json`` and every later use is checked
against it, so a file that changes on disk afterwards is noticed.

HTTP(S) downloads stream into ``<dest_dir>/<filename>.part`` and are moved into place only once the transfer is
complete (as long as the Content-Length the server announced) and the checksum matches, so an interrupted or
truncated download never leaves a file that looks finished. A broken transfer resumes where it stopped: the next
attempt (a retry, or the next run of the stage) asks for the missing bytes with an HTTP range request, so a
connection lost at 8 of 9 GB costs 1 GB, not 9; a server that ignores ranges sends the whole file again. Other URL
schemes (``file://``, ``ftp://``) go through pooch.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pooch
import requests
from pooch.hashes import hash_matches
from tqdm import tqdm

from primkd.io import DataError, read_json, write_json

CHECKSUMS_FILE = "checksums.json"

# The raw dataset files, by their key in params.yaml ``data.urls`` (which says where to download each: the URLs live
# there only, so a mirror is one edit). ``known_hash`` is ``None`` where the publisher gives no checksum
# (``fetch`` then records one at the first download). The two NYU metadata hashes are those of the published files
# (fixtures/README.md, ``nyuv2/``); the SUN-RGBD toolbox MD5 is the one mmdetection3d's data/sunrgbd/README.md gives.
DEFAULT_SOURCES: dict[str, dict[str, str | None]] = {
    "nyuv2_labeled": {
        "filename": "nyu_depth_v2_labeled.mat",
        "known_hash": None,
    },
    "nyuv2_splits": {
        "filename": "splits.mat",
        "known_hash": "sha256:6e081404491a8bfba2f066beaa9713ef6046f9007aa5f799f2a350506a580cee",
    },
    "nyuv2_class_mapping": {
        "filename": "classMapping40.mat",
        "known_hash": "sha256:ff177194cce9a2163517f1e1e6f1c64c50987162f542dedddc04bbf6ebe6d851",
    },
    "sunrgbd": {
        "filename": "SUNRGBD.zip",
        "known_hash": None,
    },
    "sunrgbd_toolbox": {
        "filename": "SUNRGBDtoolbox.zip",
        "known_hash": "md5:18d22e1761d36352f37232cba102f91f",
    },
}

log = logging.getLogger(__name__)


def fetch(url: str, dest_dir: str | os.PathLike, filename: str, known_hash: str | None = None, progress: bool = True,
          *, retries: int = 2, timeout: float = 60.0) -> Path:
    """Return ``<dest_dir>/<filename>``, downloading it from ``url`` only when no verified copy is there.

    1. A file already present is checked against ``known_hash`` or, failing that, against the sha256 recorded in
       ``checksums.json``; with neither, its sha256 is recorded now and the file is used as is (placed by hand).
    2. A present file that fails a *published* checksum is renamed to ``<filename>.corrupt`` and downloaded again;
       one that fails a *recorded* checksum raises (it changed on disk after it was first verified).
    3. The download is retried ``retries`` times and only a complete file with the right checksum is kept.

    Args:
        url: where to download from (http or https).
        dest_dir: folder that holds the file and ``checksums.json``.
        filename: name of the file in ``dest_dir``.
        known_hash: published checksum, ``"sha256:<hex>"``, ``"md5:<hex>"`` or a bare sha256 hex string; ``None``
            when the publisher gives none.
        progress: show a progress bar on stderr while downloading.
        retries: further attempts after a failed or corrupt download (pooch waits 1 s, 2 s, ... between them).
        timeout: seconds to wait for the server to answer.

    Returns:
        The path of the verified file.

    Raises:
        DataError: the file cannot be downloaded (the message names the URL and the exact path to put the file at)
            or does not match its checksum.
    """
    dest_dir = Path(dest_dir)
    dest = dest_dir / filename
    expected = known_hash or _read_checksums(dest_dir).get(filename)
    if dest.is_file():
        if expected is None:
            _record_checksum(dest_dir, filename)
            return dest
        if hash_matches(str(dest), expected):
            return dest
        if known_hash is None:
            raise DataError(
                f"{dest}: the file no longer matches the checksum {expected} recorded in {dest_dir / CHECKSUMS_FILE} "
                f"when it was first used. Delete the file to download it again from {url}, or, if you replaced it on "
                f"purpose, delete its entry from {CHECKSUMS_FILE}.")
        corrupt = dest.with_name(f"{dest.name}.corrupt")
        os.replace(dest, corrupt)
        log.warning("%s does not match the published checksum %s; moved it to %s and downloading again",
                    dest, expected, corrupt)
    _download(url, dest, expected, progress, retries, timeout)
    if known_hash is None and expected is None:
        _record_checksum(dest_dir, filename)
    return dest


def _download(url: str, dest: Path, expected: str | None, progress: bool, retries: int, timeout: float) -> None:
    """Download ``url`` to ``dest`` (resumable over HTTP, through pooch otherwise); failures raise DataError."""
    if url.startswith(("http://", "https://")):
        _http_download(url, dest, expected, progress, retries, timeout)
        return
    fetcher = pooch.create(path=dest.parent, base_url="", registry={dest.name: expected}, urls={dest.name: url},
                           retry_if_failed=retries)
    downloader = pooch.downloaders.choose_downloader(url, progressbar=progress)
    try:
        fetcher.fetch(dest.name, downloader=downloader, progressbar=progress)
    except requests.exceptions.RequestException as e:
        raise DataError(
            f"could not download {url} ({type(e).__name__}: {e}). Download it by hand (on a machine with internet "
            f"access) and put it at {dest}, then run again.") from e
    except ValueError as e:
        raise DataError(
            f"the file downloaded from {url} does not match the checksum {expected} ({e}); it was discarded and "
            f"nothing was written to {dest}. Run again, or download it by hand and put it at {dest}.") from e


def partial_path(dest: Path) -> Path:
    """Where the bytes of an unfinished download of ``dest`` are kept between attempts."""
    return dest.with_name(f"{dest.name}.part")


def _http_download(url: str, dest: Path, expected: str | None, progress: bool, retries: int, timeout: float) -> None:
    """Transfer ``url`` into :func:`partial_path`, resuming it over up to ``retries`` further attempts, then check
    the checksum and move the file into place."""
    part = partial_path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, timeout, progress)
            break
        except requests.exceptions.RequestException as e:
            kept = part.stat().st_size if part.is_file() else 0
            if attempt == retries:
                raise DataError(
                    f"could not download {url} ({type(e).__name__}: {e}); the {kept} bytes received are kept in "
                    f"{part} and the next run resumes from there. Or download it by hand (on a machine with internet "
                    f"access) and put it at {dest}, then run again.") from e
            log.warning("download of %s interrupted at byte %d (%s); retrying", url, kept, e)
            time.sleep(attempt + 1)
    if expected is not None and not hash_matches(str(part), expected):
        part.unlink()
        raise DataError(
            f"the file downloaded from {url} does not match the checksum {expected}; it was discarded and nothing "
            f"was written to {dest}. Run again, or download it by hand and put it at {dest}.")
    os.replace(part, dest)


def _transfer(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``part`` (a range request from its current size); raise a RequestException when
    the transfer ends before the announced length."""
    start = part.stat().st_size if part.is_file() else 0
    headers = {"Range": f"bytes={start}-"} if start else {}
    with requests.get(url, headers=headers, stream=True, timeout=timeout) as response:
        if start and response.status_code == 416:  # nothing left to send: the part is complete or stale
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            if total == str(start):
                return
            part.unlink()
            raise requests.exceptions.ConnectionError(f"{part} does not fit the file on the server; starting over")
        response.raise_for_status()
        resumed = start > 0 and response.status_code == 206 and \
            response.headers.get("Content-Range", "").startswith(f"bytes {start}-")
        if start and not resumed:
            log.info("%s ignores range requests; downloading it again from the start", url)
            start = 0
        elif resumed:
            log.info("resuming the download of %s at byte %d", url, start)
        # Keep every byte that arrived: urllib3 would otherwise drop the last chunk read when the connection breaks;
        # the length is checked below instead.
        response.raw.enforce_content_length = False
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as f, tqdm(total=total, initial=start, unit="B", unit_scale=True,
                                                              desc=part.name, disable=not progress) as bar:
            for chunk in response.iter_content(1 << 20):
                f.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise requests.exceptions.ConnectionError(f"the transfer stopped at byte {size} of {total}")


def _read_checksums(dest_dir: Path) -> dict[str, str]:
    path = dest_dir / CHECKSUMS_FILE
    return read_json(path) if path.is_file() else {}


def _record_checksum(dest_dir: Path, filename: str) -> None:
    """Store the sha256 of ``<dest_dir>/<filename>`` in ``checksums.json`` (pooch's ``"sha256:<hex>"`` form)."""
    checksums = _read_checksums(dest_dir)
    checksums[filename] = f"sha256:{pooch.file_hash(str(dest_dir / filename))}"
    write_json(dest_dir / CHECKSUMS_FILE, checksums)
