"""fetch(): checksums, retries, truncated transfers, hand-placed files and offline errors, against a local server."""

import hashlib
import json
import shutil
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from primkd.config import load_params
from primkd.data.download import CHECKSUMS_FILE, DEFAULT_SOURCES, fetch
from primkd.io import OUTPUT_MARKER, DataError

REPO = Path(__file__).resolve().parents[1]
BODY = np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
BODY_SHA = hashlib.sha256(BODY).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.routes[path] = {"body": bytes, "truncate": n, "ranges": bool}``; the first ``n`` answers
    stop half-way; with ``ranges`` a ``Range: bytes=k-`` request is answered with the rest (206), as most servers
    do. ``server.requests`` records each request's path and Range header, ``server.sent`` the body bytes sent."""

    def do_GET(self) -> None:
        self.server.hits[self.path] += 1
        self.server.requests.append((self.path, self.headers.get("Range")))
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        body, start = route["body"], 0
        wanted = self.headers.get("Range")
        if route.get("ranges") and wanted:
            start = int(wanted.removeprefix("bytes=").rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        body = body[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if route["truncate"] > 0:
            route["truncate"] -= 1
            body = body[: len(body) // 2]  # then the connection closes: fewer bytes than announced
        self.server.sent += len(body)  # counted before the write: the client may finish before this thread resumes
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def httpd():
    """A local HTTP server on a random port (see _Handler)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.routes, httpd.hits, httpd.requests, httpd.sent = {}, Counter(), [], 0
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def server(httpd):
    """The local server as (base_url, routes, hits)."""
    return httpd.base, httpd.routes, httpd.hits


def _closed_port_url(path: str) -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def test_download_with_published_hash(server, tmp_path):
    base, routes, hits = server
    routes["/a.bin"] = {"body": BODY, "truncate": 0}
    path = fetch(f"{base}/a.bin", tmp_path, "a.bin", known_hash=f"sha256:{BODY_SHA}", progress=True)
    assert path == tmp_path / "a.bin"
    assert path.read_bytes() == BODY
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]  # no temporary left, no checksums.json needed
    fetch(f"{base}/a.bin", tmp_path, "a.bin", known_hash=BODY_SHA, progress=False)  # bare hex = sha256
    assert hits["/a.bin"] == 1  # the verified copy is reused


def test_wrong_hash_rejected_and_nothing_kept(server, tmp_path):
    base, routes, _ = server
    routes["/a.bin"] = {"body": BODY[:-1] + b"x", "truncate": 0}  # corrupted on the server
    with pytest.raises(DataError, match="does not match the checksum"):
        fetch(f"{base}/a.bin", tmp_path, "a.bin", known_hash=BODY_SHA, progress=False, retries=0)
    assert list(tmp_path.iterdir()) == []


def test_truncated_download_rejected_then_rerun_succeeds(server, tmp_path):
    base, routes, hits = server
    routes["/a.bin"] = {"body": BODY, "truncate": 1}  # a server without range requests: the rerun starts over
    with pytest.raises(DataError, match="could not download") as info:
        fetch(f"{base}/a.bin", tmp_path, "a.bin", known_hash=None, progress=False, retries=0)
    assert f"the 100000 bytes received are kept in {tmp_path / 'a.bin.part'}" in str(info.value)
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin.part"]  # no a.bin, no recorded checksum
    path = fetch(f"{base}/a.bin", tmp_path, "a.bin", known_hash=None, progress=False, retries=0)
    assert path.read_bytes() == BODY and sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", CHECKSUMS_FILE]
    assert hits["/a.bin"] == 2


def test_broken_transfer_resumes_with_a_range_request_within_one_call(httpd, tmp_path, caplog):
    httpd.routes["/big.bin"] = {"body": BODY, "truncate": 1, "ranges": True}  # the first answer stops half-way
    with caplog.at_level("INFO", logger="primkd.data.download"):
        path = fetch(f"{httpd.base}/big.bin", tmp_path, "big.bin", known_hash=BODY_SHA, progress=False, retries=1)
    assert path.read_bytes() == BODY
    assert f"resuming the download of {httpd.base}/big.bin at byte 100000" in caplog.text
    assert httpd.requests == [("/big.bin", None), ("/big.bin", "bytes=100000-")] and httpd.sent == len(BODY)


def test_broken_transfer_resumes_on_the_next_run_and_sends_each_byte_once(httpd, tmp_path):
    base = httpd.base
    httpd.routes["/big.bin"] = {"body": BODY, "truncate": 1, "ranges": True}
    with pytest.raises(DataError, match="next run resumes from there"):
        fetch(f"{base}/big.bin", tmp_path, "big.bin", known_hash=BODY_SHA, progress=False, retries=0)
    assert (tmp_path / "big.bin.part").read_bytes() == BODY[:100_000]
    path = fetch(f"{base}/big.bin", tmp_path, "big.bin", known_hash=BODY_SHA, progress=False, retries=0)
    assert path.read_bytes() == BODY and not (tmp_path / "big.bin.part").exists()
    assert httpd.requests == [("/big.bin", None), ("/big.bin", "bytes=100000-")]
    assert httpd.sent == len(BODY)  # nothing sent twice


def test_a_partial_that_does_not_fit_the_checksum_is_discarded(server, tmp_path):
    base, routes, _ = server
    routes["/big.bin"] = {"body": BODY, "truncate": 0, "ranges": True}
    (tmp_path / "big.bin.part").write_bytes(b"x" * 1000)  # bytes of some other file
    with pytest.raises(DataError, match="does not match the checksum"):
        fetch(f"{base}/big.bin", tmp_path, "big.bin", known_hash=BODY_SHA, progress=False, retries=0)
    assert list(tmp_path.iterdir()) == []
    assert fetch(f"{base}/big.bin", tmp_path, "big.bin", known_hash=BODY_SHA, progress=False).read_bytes() == BODY


def test_truncated_download_retried_within_one_call(server, tmp_path):
    base, routes, hits = server
    routes["/a.bin"] = {"body": BODY, "truncate": 1}
    path = fetch(f"{base}/a.bin", tmp_path, "a.bin", known_hash=BODY_SHA, progress=False, retries=1)
    assert path.read_bytes() == BODY
    assert hits["/a.bin"] == 2


def test_hand_placed_file_used_without_network(tmp_path):
    (tmp_path / "a.bin").write_bytes(BODY)
    url = _closed_port_url("/a.bin")
    assert fetch(url, tmp_path, "a.bin", known_hash=BODY_SHA, progress=False).read_bytes() == BODY
    # without a published hash the hand-placed file is accepted and its sha256 recorded
    (tmp_path / "b.bin").write_bytes(b"hello")
    fetch(url, tmp_path, "b.bin", known_hash=None, progress=False)
    recorded = json.loads((tmp_path / CHECKSUMS_FILE).read_text())
    assert recorded == {"b.bin": f"sha256:{hashlib.sha256(b'hello').hexdigest()}"}


def test_corrupt_hand_placed_file_set_aside_and_downloaded(server, tmp_path):
    base, routes, _ = server
    routes["/a.bin"] = {"body": BODY, "truncate": 0}
    (tmp_path / "a.bin").write_bytes(BODY[:1000])  # e.g. an interrupted manual copy
    path = fetch(f"{base}/a.bin", tmp_path, "a.bin", known_hash=BODY_SHA, progress=False)
    assert path.read_bytes() == BODY
    assert (tmp_path / "a.bin.corrupt").read_bytes() == BODY[:1000]


def test_unreachable_url_says_what_to_fetch_and_where(tmp_path):
    url = _closed_port_url("/nyu_depth_v2_labeled.mat")
    dest_dir = tmp_path / "raw"
    with pytest.raises(DataError) as info:
        fetch(url, dest_dir, "nyu_depth_v2_labeled.mat", known_hash=None, progress=False, retries=0, timeout=5)
    message = str(info.value)
    assert url in message
    assert str(dest_dir / "nyu_depth_v2_labeled.mat") in message


def test_hash_recorded_at_first_download_and_later_change_detected(server, tmp_path):
    base, routes, hits = server
    routes["/a.bin"] = {"body": BODY, "truncate": 0}
    path = fetch(f"{base}/a.bin", tmp_path, "a.bin", known_hash=None, progress=False)
    assert json.loads((tmp_path / CHECKSUMS_FILE).read_text()) == {"a.bin": f"sha256:{BODY_SHA}"}
    assert fetch(f"{base}/a.bin", tmp_path, "a.bin", known_hash=None, progress=False) == path
    assert hits["/a.bin"] == 1
    path.write_bytes(BODY[:-1] + b"\0")  # modified on disk afterwards
    with pytest.raises(DataError, match="no longer matches the checksum"):
        fetch(f"{base}/a.bin", tmp_path, "a.bin", known_hash=None, progress=False)
    assert path.read_bytes() == BODY[:-1] + b"\0"  # left for the user to inspect
    # once deleted, the file is downloaded again and checked against the recorded checksum
    path.unlink()
    assert fetch(f"{base}/a.bin", tmp_path, "a.bin", known_hash=None, progress=False).read_bytes() == BODY


@pytest.mark.parametrize("key", ["nyuv2_splits", "nyuv2_class_mapping"])
def test_default_nyu_metadata_hashes_match_the_published_files(key, fixtures_dir, tmp_path):
    source, url = DEFAULT_SOURCES[key], load_params(REPO / "params.yaml")["data"]["urls"][key]
    shutil.copy(fixtures_dir / "nyuv2" / source["filename"], tmp_path / source["filename"])
    # params.yaml's URL is not reachable here: success means the hand-placed file passed the published hash
    path = fetch(url, tmp_path, source["filename"], source["known_hash"], progress=False, retries=0)
    assert source["known_hash"] == f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"


def test_download_stage_links_the_raw_files_of_the_source(httpd, tmp_path, fixtures_dir):
    """`primkd download`: the raw files land in data.raw_dir/<source> and the stage's output folder links them (no
    second copy); the synthetic source needs none and gets an empty folder."""
    from primkd.data.prepare import fetch_sources, link_raw_files, raw_files

    cfg = load_params(REPO / "params.yaml", "nyuv2_b2")
    data = dict(cfg["data"], raw_dir=str(tmp_path / "raw"))
    bodies = {"nyuv2_labeled": BODY, **{k: (fixtures_dir / "nyuv2" / DEFAULT_SOURCES[k]["filename"]).read_bytes()
                                          for k in ("nyuv2_splits", "nyuv2_class_mapping")}}
    for key, body in bodies.items():
        httpd.routes[f"/{key}"] = {"body": body, "truncate": 0}
    data["urls"] = {**data["urls"], **{k: f"{httpd.base}/{k}" for k in bodies}}
    files = fetch_sources(data)
    link_raw_files(files, tmp_path / "stage")
    linked = raw_files(data, tmp_path / "stage")
    for key, path in linked.items():
        assert path.read_bytes() == bodies[key] and path.stat().st_ino == files[key].stat().st_ino
    assert files["nyuv2_labeled"] == tmp_path / "raw" / "nyuv2" / "nyu_depth_v2_labeled.mat"
    link_raw_files(fetch_sources(dict(data, source="synthetic")), tmp_path / "synthetic")
    assert (tmp_path / "synthetic" / OUTPUT_MARKER).read_text() == ""
    assert [p.name for p in (tmp_path / "synthetic").iterdir()] == [OUTPUT_MARKER]
    missing = r"nyu_depth_v2_labeled\.mat: not found \(and 2 more raw files\); run the download stage"
    with pytest.raises(DataError, match=missing):
        raw_files(data, tmp_path / "synthetic")


def test_checksum_override_replaces_the_published_one(httpd, tmp_path):
    """data.checksums: a file other than the published one (the rehearsal's generated toolbox) passes its own checksum
    and fails the published one, which "" keeps."""
    from primkd.data.prepare import fetch_sources

    data = dict(load_params(REPO / "params.yaml", "sunrgbd_b2")["data"], raw_dir=str(tmp_path / "raw"))
    for key in ("sunrgbd", "sunrgbd_toolbox"):
        httpd.routes[f"/{key}"] = {"body": BODY, "truncate": 0}
    data["urls"] = {**data["urls"], **{k: f"{httpd.base}/{k}" for k in ("sunrgbd", "sunrgbd_toolbox")}}
    assert data["checksums"]["sunrgbd_toolbox"] == ""
    with pytest.raises(DataError, match="does not match the checksum"):  # the published MD5 of SUNRGBDtoolbox.zip
        fetch_sources(data)
    data["checksums"] = {**data["checksums"], "sunrgbd_toolbox": f"sha256:{BODY_SHA}"}
    files = fetch_sources(data)
    assert files["sunrgbd_toolbox"].read_bytes() == BODY
    data["checksums"] = {**data["checksums"], "sunrgbd": f"md5:{hashlib.md5(b'other').hexdigest()}"}
    (tmp_path / "raw" / "sunrgbd" / "SUNRGBD.zip").unlink()
    with pytest.raises(DataError, match="does not match the checksum"):
        fetch_sources(data)
