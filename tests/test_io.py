"""primkd.io: atomic writes leave either the old or the new content, never a partial file; image reads fail with
the file named."""

import hashlib
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from primkd.io import (
    OUTPUT_MARKER,
    DataError,
    atomic_dir,
    atomic_path,
    read_image,
    read_json,
    save_figure,
    write_json,
    write_png,
)


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".txt" and tmp.name.startswith(".out.")
        tmp.write_text("new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_dir_replaces_the_folder_only_on_success(tmp_path):
    target = tmp_path / "prepared"
    (target / "a").mkdir(parents=True)
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "b").write_text("partial")
        raise RuntimeError("stage failed")
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"] and [p.name for p in target.iterdir()] == ["a"]
    with atomic_dir(target) as tmp:
        (tmp / "b").write_text("complete")
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]
    assert sorted(p.name for p in target.iterdir()) == [OUTPUT_MARKER, "b"]
    with atomic_dir(target) as tmp:  # its own folder: replaced
        (tmp / "c").mkdir()
        (tmp / "c" / "d").write_text("again")
    assert sorted(p.name for p in target.iterdir()) == [OUTPUT_MARKER, "c"]
    assert (target / OUTPUT_MARKER).read_text() == "c/d\n"


def test_atomic_dir_never_deletes_what_it_did_not_write(tmp_path, monkeypatch):
    """A folder with foreign files, files added to an output folder, the current folder, a file: refused in one line
    naming them, before anything is written, and everything is left as it was."""
    target = tmp_path / "out"
    (target / "sub").mkdir(parents=True)
    (target / "precious.txt").write_text("mine")
    (target / "sub" / "thesis.tex").write_text("mine too")

    def write():
        with atomic_dir(target) as tmp:
            (tmp / "model.bin").write_text("new")

    with pytest.raises(DataError) as info:
        write()
    assert str(info.value) == (f"{target}: is not a folder primkd wrote (precious.txt, sub/thesis.tex), and an output "
                               f"folder is replaced as a whole; give the output a new or empty folder, or move those "
                               f"files away")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "out", "out/precious.txt", "out/sub", "out/sub/thesis.tex"]
    shutil.rmtree(target)
    write()
    (target / "notes.txt").write_text("added by hand")
    with pytest.raises(DataError, match=r"out: holds files primkd did not write \(notes\.txt\)"):
        write()
    assert (target / "notes.txt").read_text() == "added by hand"
    monkeypatch.chdir(target)
    for here in (Path("."), Path(".."), target):
        with pytest.raises(DataError, match=r": is the current folder or one that holds it, .*e\.g\. "):
            with atomic_dir(here):
                raise AssertionError("never reached")
    with pytest.raises(DataError, match=r"notes\.txt: exists and is not a folder; give the output a new or empty "
                                        r"folder, or move it away"):
        with atomic_dir(target / "notes.txt"):
            raise AssertionError("never reached")


def test_written_files_get_the_users_umask(tmp_path):
    """mkstemp/mkdtemp and writers such as safetensors make files private: outputs get the umask's permissions."""
    import torch
    from safetensors.torch import save_file

    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "export") as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))
            (tmp / "sub").mkdir(mode=0o700)
        write_json(tmp_path / "x.json", {})
    finally:
        os.umask(old)
    modes = {p.relative_to(tmp_path).as_posix(): oct(p.stat().st_mode & 0o777) for p in tmp_path.rglob("*")}
    assert modes == {"export": "0o755", "export/model.safetensors": "0o644", "export/sub": "0o755",
                     f"export/{OUTPUT_MARKER}": "0o644", "x.json": "0o644"}


def png_bytes(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("damage", ["truncated", "no_end_chunk", "flipped_byte", "empty", "not_an_image"])
def test_corrupt_or_truncated_png_is_named(tmp_path, damage):
    data = png_bytes(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    data = {"truncated": data[: len(data) // 2], "no_end_chunk": data[:-12], "empty": b"",
            "flipped_byte": data[: len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:],
            "not_an_image": b"hello"}[damage]
    path = tmp_path / "x.png"
    path.write_bytes(data)
    with pytest.raises(DataError, match=rf"{path}: cannot decode the image \(corrupt or truncated file\)"):
        read_image(path)


def test_image_kinds_are_checked(tmp_path):
    with pytest.raises(DataError, match=rf"{tmp_path}/none\.png: file not found; check the path"):
        read_image(tmp_path / "none.png")
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[..., 2] = 7  # channels differ: not a grey label saved as RGB
    write_png(tmp_path / "colour.png", colour)
    with pytest.raises(DataError, match="expected a single-channel gray image, found 3 channels; save it as a one"):
        read_image(tmp_path / "colour.png", "gray")
    write_png(tmp_path / "grey3.png", np.full((4, 4, 3), 5, np.uint8))
    assert read_image(tmp_path / "grey3.png", "gray").tolist() == [[5] * 4] * 4
    write_png(tmp_path / "depth8.png", np.ones((4, 4), np.uint8))
    with pytest.raises(DataError, match="depth must be a 16-bit PNG in millimetres, found uint8; re-export"):
        read_image(tmp_path / "depth8.png", "depth")
    write_png(tmp_path / "label16.png", np.ones((4, 4), np.uint16))
    with pytest.raises(DataError, match=r"labels must be an 8-bit PNG \(0\.\.K-1, 255 = ignore\), found uint16"):
        read_image(tmp_path / "label16.png", "gray")


def test_json_round_trip_writes_nan_as_null_and_names_a_malformed_file(tmp_path):
    write_json(tmp_path / "m.json", {"miou": float("nan"), "iou": [0.5, float("inf")]})
    assert read_json(tmp_path / "m.json") == {"miou": None, "iou": [0.5, None]}
    (tmp_path / "bad.json").write_text("{miou: 1")
    with pytest.raises(DataError, match=rf"{tmp_path}/bad\.json: not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_atomic_outputs_get_the_usual_permissions(tmp_path):
    from primkd.io import write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "folder") as d:
            (d / "b.txt").write_text("y")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755


def test_tree_digest_follows_names_and_contents_not_location(tmp_path):
    from primkd.io import path_digest, sha256_file, tree_digest, tree_files

    a = tmp_path / "a"
    (a / "RGB").mkdir(parents=True)
    (a / "RGB" / "1.png").write_bytes(b"\x89PNG one")
    (a / "train.txt").write_text("1\n")
    first = tree_digest(a)
    # one SHA-256 over "<relative name>\0<file sha256>\n" per file, sorted by relative name
    lines = "".join(f"{name}\0{sha256_file(a / name)}\n" for name in ("RGB/1.png", "train.txt"))
    assert first == hashlib.sha256(lines.encode()).hexdigest()
    assert tree_digest(shutil.copytree(a, tmp_path / "copy")) == first  # same files elsewhere: same digest
    (a / "RGB" / "1.png").write_bytes(b"\x89PNG onE")  # one byte, same size
    assert tree_digest(a) != first
    (a / "RGB" / "1.png").write_bytes(b"\x89PNG one")
    assert tree_digest(a) == first
    (a / "RGB" / "1.png").rename(a / "RGB" / "2.png")  # a renamed image is another dataset
    assert tree_digest(a) != first
    # a folder of links (datasets often are) is read through them
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "RGB").symlink_to(tmp_path / "copy" / "RGB", target_is_directory=True)
    (tmp_path / "linked" / "train.txt").symlink_to(tmp_path / "copy" / "train.txt")
    assert [p.name for p in tree_files(tmp_path / "linked")] == ["1.png", "train.txt"]
    assert tree_digest(tmp_path / "linked") == first
    assert path_digest(a / "train.txt") == hashlib.sha256(f"train.txt\0{sha256_file(a / 'train.txt')}\n".encode()
                                                          ).hexdigest()


def test_save_figure_writes_the_same_bytes_at_any_time_in_the_format_of_the_name(tmp_path, monkeypatch):
    """PNG, PDF and SVG of one figure saved twice, the clock (SOURCE_DATE_EPOCH) years apart and a fresh random SVG
    id salt each time by default: the same bytes; the formats are those of the names; another name is one line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [1, 0])
    saved = []
    for epoch in ("1000000000", "1900000000"):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
        save_figure(fig, tmp_path / "f.png", tmp_path / "f.pdf", tmp_path / "f.svg")
        saved.append({p.name: p.read_bytes() for p in tmp_path.iterdir()})
    assert saved[0] == saved[1] and sorted(saved[0]) == ["f.pdf", "f.png", "f.svg"]
    assert saved[0]["f.png"].startswith(b"\x89PNG") and saved[0]["f.pdf"].startswith(b"%PDF")
    assert b"<svg" in saved[0]["f.svg"] and b"CreationDate" not in saved[0]["f.pdf"]
    with pytest.raises(DataError, match=r"f\.jpg: a figure is written as PNG, PDF or SVG .* name it \.png"):
        save_figure(fig, tmp_path / "f.jpg")
    assert not (tmp_path / "f.jpg").exists()
