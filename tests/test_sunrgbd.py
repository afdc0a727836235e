"""SUN-RGBD preparation end to end on a tiny archive in the real layout (3 images, .mat files written by scipy)."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from primkd.data.layout import Layout, read_meta, read_split
from primkd.data.sunrgbd import SUNRGBD37_CLASSES, decode_depth, parse_intrinsics, prepare_sunrgbd
from primkd.io import DataError, read_image

from fake_data import SUNRGBD_SERVER, rotate_left3, write_sunrgbd_archive, write_sunrgbd_toolbox, zip_folder

# (scene folder, file stem, H, W, split, intrinsics.txt)
SCENES = [
    ("kv1/NYUdata/NYU0001", "NYU0001", 4, 6, "train", "518.857901 0 284.582449\n0 519.469611 208.736166\n0 0 1\n"),
    ("kv2/kinect2data/000002_2014-05-26_14-23-37_260595134347_rgbf000103-resize", "0000103", 5, 7, "test",
     "529.5 0 365.0\n0 529.5 265.0\n0 0 1\n"),
    ("realsense/lg/2014_10_24-11_47_27-1311000073", "0000001", 4, 6, "train",
     "518.857901 0 284.582449\n0 519.469611 208.736166\n0 0 1\n"),
]


def _scene_arrays(i: int, h: int, w: int) -> dict:
    r, c = np.mgrid[0:h, 0:w]
    rgb = np.stack([40 * r, 30 * c, 100 + 20 * i + 0 * r], axis=-1).astype(np.uint8)  # asymmetric in r and c
    depth_mm = (1000 + 100 * r + 10 * c + 1000 * i).astype(np.uint16)
    stored_bfx = rotate_left3(depth_mm)
    stored_bfx[h - 1, w - 1] |= 1  # low bit set: decodes above 8 m (+8192 mm), which the toolbox clips to 8000
    stored_raw = stored_bfx.copy()
    stored_raw[0, w - 1] = 0  # the sensor had no reading here
    seglabel = ((r * w + c + i) % 38).astype(np.uint16)  # 0..37
    return {"rgb": rgb, "depth_mm": depth_mm, "stored_bfx": stored_bfx, "stored_raw": stored_raw, "seglabel": seglabel}


@pytest.fixture
def tiny(tmp_path):
    arrays = [_scene_arrays(i, h, w) for i, (_, _, h, w, _, _) in enumerate(SCENES)]
    decoded = write_sunrgbd_archive(tmp_path / "data", SCENES, arrays)
    return tmp_path, arrays, decoded


def _check_output(out: Path, arrays: list[dict], decoded: dict, indices: list[int]) -> None:
    layout, meta = Layout(out), read_meta(out)
    for i in indices:
        name, a = f"{i + 1:06d}", arrays[i]
        scene, _, h, w, _, _ = SCENES[i]
        assert np.array_equal(read_image(layout.rgb(name)), decoded[scene])
        depth = read_image(layout.depth(name), "depth")
        expected = a["depth_mm"].copy()
        expected[h - 1, w - 1] = 8000
        assert np.array_equal(depth, expected)
        missing = read_image(layout.missing(name), "gray")
        assert missing.sum() == 1 and missing[0, w - 1] == 1
        label = read_image(layout.label(name), "gray")
        assert np.array_equal(label, np.where(a["seglabel"] == 0, 255, a["seglabel"] - 1))
        assert meta["scenes"][name] == scene
    assert meta["classes"] == list(SUNRGBD37_CLASSES) and meta["ignore_index"] == 255 and meta["depth_scale"] == 1000


def test_prepare_from_folder_and_toolboxzip_folder(tiny):
    tmp_path, arrays, decoded = tiny
    write_sunrgbd_toolbox(tmp_path / "tb", SCENES, arrays, seg_format="v5", with_names=True)
    toolbox_zip = zip_folder(tmp_path / "tb", tmp_path / "SUNRGBDtoolbox.zip")
    out = prepare_sunrgbd(tmp_path / "data", toolbox_zip, tmp_path / "sun")
    assert read_split(out, "train") == ["000001", "000003"] and read_split(out, "test") == ["000002"]
    _check_output(out, arrays, decoded, [0, 1, 2])
    meta = read_meta(out)
    assert meta["intrinsics_per_image"]["000002"] == {"fx": 529.5, "fy": 529.5, "cx": 365.0, "cy": 265.0}
    nyu = {"fx": 518.857901, "fy": 519.469611, "cx": 284.582449, "cy": 208.736166}
    assert meta["intrinsics_per_image"]["000001"] == nyu and meta["intrinsics"] == nyu  # the most common camera


def test_prepare_from_zip_with_v73_labels_and_limit(tiny):
    tmp_path, arrays, decoded = tiny
    write_sunrgbd_toolbox(tmp_path / "tb", SCENES, arrays, seg_format="v73", with_names=False)
    data_zip = zip_folder(tmp_path / "data", tmp_path / "SUNRGBD.zip")
    out = prepare_sunrgbd(data_zip, tmp_path / "tb" / "SUNRGBDtoolbox", tmp_path / "sun", limit=1)
    assert read_split(out, "train") == ["000001"] and read_split(out, "test") == ["000002"]
    assert sorted(p.stem for p in Layout(out).rgb_dir.iterdir()) == ["000001", "000002"]
    _check_output(out, arrays, decoded, [0, 1])


def test_inconsistent_inputs_raise_and_leave_no_output(tiny):
    tmp_path, arrays, _ = tiny
    bad = [dict(a) for a in arrays]
    bad[2]["seglabel"] = bad[2]["seglabel"][:, :-1]  # label one column narrower than the image
    write_sunrgbd_toolbox(tmp_path / "tb", SCENES, bad, seg_format="v5", with_names=False)
    with pytest.raises(DataError, match=r"realsense/lg/.*sizes disagree"):
        prepare_sunrgbd(tmp_path / "data", tmp_path / "tb", tmp_path / "sun")
    assert not (tmp_path / "sun").exists()
    shutil.rmtree(tmp_path / "data" / "SUNRGBD" / SCENES[1][0] / "depth_bfx")
    with pytest.raises(DataError, match=r"depth_bfx/0000103\.png not found"):
        prepare_sunrgbd(tmp_path / "data", tmp_path / "tb", tmp_path / "sun")


def test_split_must_cover_every_image(tiny):
    tmp_path, arrays, _ = tiny
    write_sunrgbd_toolbox(tmp_path / "tb", SCENES, arrays, seg_format="v5", with_names=False)
    split = tmp_path / "tb" / "SUNRGBDtoolbox" / "traintestSUNRGBD" / "allsplit.mat"
    scipy.io.savemat(split, {"alltrain": np.array([f"{SUNRGBD_SERVER}/{SCENES[0][0]}"], dtype=object)[None],
                             "alltest": np.array([f"{SUNRGBD_SERVER}/{SCENES[1][0]}/"], dtype=object)[None]})
    with pytest.raises(DataError, match="realsense/lg/2014_10_24-11_47_27-1311000073 \\(neither list\\)"):
        prepare_sunrgbd(tmp_path / "data", tmp_path / "tb", tmp_path / "sun")


def test_decode_depth_follows_the_toolbox():
    stored = np.array([[0, 8000, 8001, 40000, 65528]], np.uint16)
    # 8000 >> 3 = 1000; 8001 -> 1000 + (1 << 13) = 9192 -> 8000 (clip); 40000 -> 5000; 65528 -> 8191 -> 8000
    assert decode_depth(stored).tolist() == [[0, 1000, 8000, 5000, 8000]]
    assert decode_depth(np.array([63992], np.uint16)).tolist() == [7999]


def test_parse_intrinsics():
    assert parse_intrinsics("1 0 3\n0 2 4\n0 0 1\n", "x") == {"fx": 1.0, "fy": 2.0, "cx": 3.0, "cy": 4.0}
    with pytest.raises(DataError, match="x: expected K"):
        parse_intrinsics("1 0 3 0 2 4", "x")
