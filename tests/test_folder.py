"""import_folder(): good CMX/DFormer-style folders (depth and HHA) and a bad one whose problems are all reported."""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from primkd.data.folder import import_folder
from primkd.data.layout import NYU_INTRINSICS, Layout, read_meta, read_split
from primkd.io import DataError, read_image

K = 5
H, W = 4, 6


def _rgb(i: int) -> np.ndarray:
    r, c = np.mgrid[0:H, 0:W]
    return np.stack([40 * r, 30 * c, 60 * i + 0 * r], axis=-1).astype(np.uint8)  # (H, W, 3), asymmetric


def _label() -> np.ndarray:
    label = np.zeros((H, W), np.uint8)
    label[0, :] = [0, 1, 2, 3, 4, 5]
    return label


def _write(path: Path, image: np.ndarray, rgb: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image[..., ::-1] if rgb else image)


def _make_folder(root: Path, modality: str = "depth") -> dict:
    """Three images: a0 (PNG), a1 (JPEG), a2 (PNG); returns the expected decoded RGB per name."""
    expected = {}
    for i, name in enumerate(["a0", "a1", "a2"]):
        ext = ".jpg" if name == "a1" else ".png"
        _write(root / "RGB" / f"{name}{ext}", _rgb(i), rgb=True)
        expected[name] = read_image(root / "RGB" / f"{name}{ext}")
        if modality == "depth":
            _write(root / "Depth" / f"{name}.png", np.full((H, W), 1000 + i, np.uint16))
        else:
            _write(root / "HHA" / f"{name}{ext}", _rgb(i)[..., ::-1], rgb=True)
        _write(root / "Label" / f"{name}.png", _label())
    (root / "train.txt").write_text("a0\nRGB/a1.jpg Label/a1.png\n")
    (root / "test.txt").write_text("RGB/a2.png\n\n")
    return expected


def test_import_depth_folder_links_what_needs_no_conversion(tmp_path):
    expected = _make_folder(tmp_path / "src")
    second = import_folder(tmp_path / "src", tmp_path / "out", K)
    out = Layout(tmp_path / "out")
    assert second == out.depth_dir
    assert read_split(out.root, "train") == ["a0", "a1"] and read_split(out.root, "test") == ["a2"]
    assert os.path.islink(out.rgb("a0")) and os.readlink(out.rgb("a0")) == str((tmp_path / "src/RGB/a0.png").resolve())
    assert not os.path.islink(out.rgb("a1"))  # JPEG converted to PNG
    assert all(os.path.islink(out.depth(n)) for n in expected)
    for i, (name, rgb) in enumerate(expected.items()):
        assert np.array_equal(read_image(out.rgb(name)), rgb)
        assert np.all(read_image(out.depth(name), "depth") == 1000 + i)
        label = read_image(out.label(name), "gray")
        assert list(label[0]) == [255, 0, 1, 2, 3, 4] and np.all(label[1:] == 255)
        assert not os.path.islink(out.label(name))
    meta = read_meta(out.root)
    assert meta["classes"] == [f"class_{k}" for k in range(1, K + 1)] and meta["intrinsics"] == NYU_INTRINSICS
    assert meta["ignore_index"] == 255 and meta["modality"] == "depth"


def test_import_without_links_copies(tmp_path):
    _make_folder(tmp_path / "src")
    import_folder(tmp_path / "src", tmp_path / "out", K, link=False)
    out = Layout(tmp_path / "out")
    assert not os.path.islink(out.rgb("a0")) and not os.path.islink(out.depth("a0"))
    assert out.depth("a2").read_bytes() == (tmp_path / "src/Depth/a2.png").read_bytes()


@pytest.mark.parametrize("explicit", [False, True])
def test_import_hha_folder(tmp_path, explicit):
    _make_folder(tmp_path / "src", modality="hha")
    hha_dir = tmp_path / "hha" if explicit else None
    second = import_folder(tmp_path / "src", tmp_path / "out", K, modality="hha", hha_dir=hha_dir)
    assert second == (tmp_path / "hha" if explicit else tmp_path / "out" / "HHA")
    assert sorted(p.name for p in second.iterdir() if p.suffix == ".png") == ["a0.png", "a1.png", "a2.png"]
    assert os.path.islink(second / "a0.png") and not os.path.islink(second / "a1.png")
    # the HHA channel order on disk is kept: the JPEG's decoded pixels land unchanged in the PNG
    assert np.array_equal(read_image(second / "a1.png"), read_image(tmp_path / "src/HHA/a1.jpg"))
    assert not (tmp_path / "out" / "Depth").exists()
    meta = read_meta(tmp_path / "out")
    assert meta["modality"] == "hha" and meta["hha_dir"] == str(second.resolve())


def test_every_problem_reported_at_once(tmp_path):
    src = tmp_path / "src"
    _make_folder(src)
    for name in ["b0", "b1", "b2", "b3"]:
        _write(src / "RGB" / f"{name}.png", _rgb(0), rgb=True)
        _write(src / "Depth" / f"{name}.png", np.full((H, W), 1000, np.uint16))
        _write(src / "Label" / f"{name}.png", _label())
    (src / "Depth" / "a1.png").unlink()  # missing depth
    _write(src / "Label" / "a2.png", np.zeros((H, W + 1), np.uint8))  # size mismatch
    bad = _label()
    bad[3, 3] = 7
    _write(src / "Label" / "b0.png", bad)  # label above K
    (src / "RGB" / "b1.png").write_bytes(b"not an image")  # unreadable
    _write(src / "Depth" / "b2.png", np.full((H, W), 10, np.uint8))  # 8-bit depth: not millimetres
    (src / "train.txt").write_text("a0\na1\nb0\nb1\nb2\nb3\n")
    (src / "test.txt").write_text("a2\nb3\n")  # b3 also in train
    with pytest.raises(DataError) as info:
        import_folder(src, tmp_path / "out", K)
    message = str(info.value)
    assert "6 problem(s)" in message
    for fragment in [f"{src / 'Depth' / 'a1'}.(png): not found",
                     "a2: sizes differ: RGB 4×6, Depth 4×6, Label 4×7",
                     f"{src / 'Label' / 'b0.png'}: label values [7] outside 0..5",
                     f"{src / 'RGB' / 'b1.png'}: cannot decode",
                     f"{src / 'Depth' / 'b2.png'}: depth must be a 16-bit PNG",
                     "b3 is also in train.txt"]:
        assert fragment in message
    assert not (tmp_path / "out").exists()


def test_wrong_modality_and_missing_split_files(tmp_path):
    _make_folder(tmp_path / "src", modality="hha")
    with pytest.raises(DataError, match=r"no Depth/ folder \(it has HHA/: use modality='hha'\)"):
        import_folder(tmp_path / "src", tmp_path / "out", K)
    (tmp_path / "src" / "test.txt").unlink()
    with pytest.raises(DataError, match=r"test\.txt: split file not found"):
        import_folder(tmp_path / "src", tmp_path / "out", K, modality="hha")


def test_depth_folder_cameras_per_dataset_and_per_image(tmp_path):
    _make_folder(tmp_path / "src")
    cam = {"fx": 529.5, "fy": 529.5, "cx": 365.0, "cy": 265.0}  # SUN-RGBD's Kinect v2, say
    import_folder(tmp_path / "src", tmp_path / "one", K, intrinsics=cam)
    assert read_meta(tmp_path / "one")["intrinsics"] == cam and "intrinsics_per_image" not in read_meta(
        tmp_path / "one")
    import_folder(tmp_path / "src", tmp_path / "named", K, intrinsics="nyuv2")
    assert read_meta(tmp_path / "named")["intrinsics"] == NYU_INTRINSICS
    # Per image: a folder of SUN-RGBD intrinsics.txt files (K row by row) ...
    (tmp_path / "K").mkdir()
    for name, fx in (("a0", 500.0), ("a1", 500.0), ("a2", 600.0)):
        (tmp_path / "K" / f"{name}.txt").write_text(f"{fx} 0 320.5\n0 {fx} 240.5\n0 0 1\n")
    import_folder(tmp_path / "src", tmp_path / "txt", K, intrinsics_file=tmp_path / "K")
    meta = read_meta(tmp_path / "txt")
    assert meta["intrinsics_per_image"]["a2"] == {"fx": 600.0, "fy": 600.0, "cx": 320.5, "cy": 240.5}
    assert meta["intrinsics"]["fx"] == 500.0  # the camera most images share
    from primkd.data.layout import intrinsics_for

    assert intrinsics_for(meta, "a2")["fx"] == 600.0 and intrinsics_for(meta, "a0")["fx"] == 500.0
    # ... or one JSON; an image without a camera is reported with the other problems.
    (tmp_path / "K.json").write_text('{"a0": {"fx": 1, "fy": 2, "cx": 3, "cy": 4}, "a1": {"fx": 1, "fy": 2, '
                                     '"cx": 3, "cy": 4}}')
    with pytest.raises(DataError, match=r"K\.json: no intrinsics for \['a2'\]"):
        import_folder(tmp_path / "src", tmp_path / "json", K, intrinsics_file=tmp_path / "K.json")
    with pytest.raises(DataError, match=r"unknown camera 'kinect'"):
        import_folder(tmp_path / "src", tmp_path / "bad", K, intrinsics="kinect")


def test_sunrgbd_depth_folder_needs_its_cameras(tmp_path):
    _make_folder(tmp_path / "src")
    with pytest.raises(DataError, match=r"37-class \(SUN-RGBD\) depth folder mixes four cameras.*intrinsics_file"):
        import_folder(tmp_path / "src", tmp_path / "out", 37)


def test_official_sunrgbd_layout_with_labels_folder(tmp_path):
    _make_folder(tmp_path / "src")
    (tmp_path / "src" / "Label").rename(tmp_path / "src" / "labels")
    import_folder(tmp_path / "src", tmp_path / "out", K)
    label = read_image(Layout(tmp_path / "out").label("a0"), "gray")
    assert list(label[0]) == [255, 0, 1, 2, 3, 4]
    (tmp_path / "src" / "labels").rename(tmp_path / "src" / "other")
    with pytest.raises(DataError, match=r"no label folder \(looked for Label/ and labels/\)"):
        import_folder(tmp_path / "src", tmp_path / "out2", K)


@pytest.mark.parametrize("has_hha", [True, False])
def test_dformer_8bit_depth_is_refused_with_the_folder_to_use(tmp_path, has_hha):
    src = tmp_path / "src"
    _make_folder(src)
    for name in ("a0", "a1", "a2"):  # DFormer: 8-bit depth normalised per image
        _write(src / "Depth" / f"{name}.png", np.linspace(0, 255, H * W).reshape(H, W).astype(np.uint8))
        if has_hha:
            _write(src / "HHA" / f"{name}.jpg", _rgb(1), rgb=True)
    with pytest.raises(DataError) as info:
        import_folder(src, tmp_path / "out", K)
    message = str(info.value)
    assert "8-bit depth images (a0.png: uint8), as DFormer's per-image normalised depth" in message
    if has_hha:
        assert f"this folder has {src / 'HHA'}/: set data.folder.modality: hha" in message
        assert import_folder(src, tmp_path / "out", K, modality="hha") == tmp_path / "out" / "HHA"
    else:
        assert "point data.folder.path at a folder whose Depth/ holds uint16 millimetres" in message
