"""NYU Depth V2 preparation: the real split/mapping files, and a tiny .mat in the real v7.3 layout end to end."""

import hashlib

import h5py
import numpy as np
import pytest
import scipy.io

from primkd.data.layout import NYU40_CLASSES, NYU_INTRINSICS, Layout, read_meta, read_split
from primkd.data.nyuv2 import prepare_nyuv2, read_class_mapping, read_splits
from primkd.io import DataError, read_image

# fixtures/README.md, "nyuv2/"
SHA256 = {
    "splits.mat": "6e081404491a8bfba2f066beaa9713ef6046f9007aa5f799f2a350506a580cee",
    "classMapping40.mat": "ff177194cce9a2163517f1e1e6f1c64c50987162f542dedddc04bbf6ebe6d851",
}
H, W, N = 3, 5, 4


@pytest.mark.parametrize("filename", sorted(SHA256))
def test_real_metadata_files_are_the_published_ones(fixtures_dir, filename):
    assert hashlib.sha256((fixtures_dir / "nyuv2" / filename).read_bytes()).hexdigest() == SHA256[filename]


def test_real_splits(fixtures_dir):
    splits = read_splits(fixtures_dir / "nyuv2" / "splits.mat")
    assert len(splits["train"]) == 795 and len(splits["test"]) == 654
    both = np.concatenate([splits["train"], splits["test"]])
    assert np.array_equal(np.sort(both), np.arange(1, 1450))  # 1-based, disjoint, covering all 1449 images
    assert list(splits["train"][:3]) == [3, 4, 5] and list(splits["test"][:3]) == [1, 2, 9]


def test_real_class_mapping(fixtures_dir):
    lut, names = read_class_mapping(fixtures_dir / "nyuv2" / "classMapping40.mat")
    assert names == list(NYU40_CLASSES)
    assert lut.shape == (895,) and lut.dtype == np.uint8
    # mapClass starts 40 40 3 22 5 (book, bottle, cabinet, ceiling, chair): minus 1, and 0 (unlabelled) -> 255
    assert list(lut[:6]) == [255, 39, 39, 2, 21, 4]
    assert set(lut[1:]) == set(range(40))


def _scene(i: int) -> dict:
    """Image i (0-based) of the tiny dataset, in output orientation (H×W), with values that encode row and column."""
    r, c = np.mgrid[0:H, 0:W]
    rgb = np.stack([10 * r + c + 50 * ch + i for ch in range(3)], axis=-1).astype(np.uint8)  # (H, W, 3)
    depth = (1.0 + 0.1 * r + 0.01 * c + i).astype(np.float32)  # metres
    raw = depth.copy()
    raw[0, W - 1] = 0.0  # one missing raw reading, in an asymmetric corner
    label = np.zeros((H, W), np.uint16)
    label[0, :] = [0, 1, 3, 4, 894]
    label[1:, :] = 5
    return {"rgb": rgb, "depth": depth, "raw": raw, "label": label}


@pytest.fixture
def tiny_nyu(tmp_path):
    """A labeled .mat with N images of H×W in the real HDF5 axis order and dtypes, and a tiny splits.mat."""
    scenes = [_scene(i) for i in range(N)]
    labeled = tmp_path / "nyu_depth_v2_labeled.mat"
    with h5py.File(labeled, "w", userblock_size=512) as f:  # MATLAB v7.3 files start with a 512-byte header
        f["images"] = np.stack([s["rgb"].transpose(2, 1, 0) for s in scenes])  # (N, 3, W, H) uint8
        f["depths"] = np.stack([s["depth"].T for s in scenes])  # (N, W, H) float32
        f["rawDepths"] = np.stack([s["raw"].T for s in scenes])
        f["labels"] = np.stack([s["label"].T for s in scenes])  # (N, W, H) uint16
    splits = tmp_path / "splits.mat"
    scipy.io.savemat(splits, {"trainNdxs": np.array([[3], [1]], np.uint16),  # n×1 uint16, 1-based, as the real file
                              "testNdxs": np.array([[4], [2]], np.uint16)})
    return labeled, splits, scenes


def test_prepare_tiny_nyu(tiny_nyu, fixtures_dir, tmp_path):
    labeled, splits, scenes = tiny_nyu
    out = prepare_nyuv2(labeled, splits, fixtures_dir / "nyuv2" / "classMapping40.mat", tmp_path / "nyu")
    layout = Layout(out)
    assert read_split(out, "train") == ["000003", "000001"] and read_split(out, "test") == ["000004", "000002"]
    for i, scene in enumerate(scenes):
        name = f"{i + 1:06d}"
        assert np.array_equal(read_image(layout.rgb(name)), scene["rgb"])  # orientation and channel order
        depth = read_image(layout.depth(name), "depth")
        assert depth[0, 0] == 1000 + 1000 * i and depth[2, 3] == 1230 + 1000 * i  # mm, rows then columns
        missing = read_image(layout.missing(name), "gray")
        assert missing.sum() == 1 and missing[0, W - 1] == 1
        label = read_image(layout.label(name), "gray")
        assert list(label[0]) == [255, 39, 2, 21, 39]  # 0 -> 255; 1 book, 3 cabinet, 4 ceiling, 894 -> 40 - 1
        assert np.all(label[1:] == 4)  # 5 chair -> 5 - 1
    meta = read_meta(out)
    assert meta["classes"] == list(NYU40_CLASSES) and meta["intrinsics"] == NYU_INTRINSICS
    assert meta["ignore_index"] == 255 and meta["depth_scale"] == 1000
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


def test_limit_keeps_the_first_images_of_each_split(tiny_nyu, fixtures_dir, tmp_path):
    labeled, splits, _ = tiny_nyu
    out = prepare_nyuv2(labeled, splits, fixtures_dir / "nyuv2" / "classMapping40.mat", tmp_path / "nyu", limit=1)
    assert read_split(out, "train") == ["000003"] and read_split(out, "test") == ["000004"]
    assert sorted(p.stem for p in Layout(out).rgb_dir.iterdir()) == ["000003", "000004"]


def test_bad_inputs_raise_and_leave_no_output(tiny_nyu, fixtures_dir, tmp_path):
    labeled, _, _ = tiny_nyu
    mapping = fixtures_dir / "nyuv2" / "classMapping40.mat"
    with pytest.raises(DataError, match=r"not a MATLAB v7\.3"):
        prepare_nyuv2(mapping, fixtures_dir / "nyuv2" / "splits.mat", mapping, tmp_path / "out")
    with pytest.raises(DataError, match=r"indices must lie in 1\.\.4"):  # the real split needs 1449 images
        prepare_nyuv2(labeled, fixtures_dir / "nyuv2" / "splits.mat", mapping, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_generated_raw_files_prepare_to_the_rendered_scenes(tmp_path):
    """fake_data.write_nyuv2_raw (the rehearsal's raw files): the prepared labels are the rendered NYU-40 classes,
    unlabelled only where the sensor had no reading, the RGB and the metric depth are the rendered ones."""
    from primkd.data.synthetic import render_scene

    from fake_data import write_nyuv2_raw

    files = write_nyuv2_raw(tmp_path / "raw", n_train=3, n_test=2, size=(24, 32), seed=5)
    out = prepare_nyuv2(files["nyuv2_labeled"], files["nyuv2_splits"], files["nyuv2_class_mapping"], tmp_path / "nyu")
    assert read_split(out, "test") == ["000001", "000003"] and read_split(out, "train") == ["000002", "000004",
                                                                                            "000005"]
    layout = Layout(out)
    for i in range(5):
        scene, name = render_scene(5 + i, 24, 32), f"{i + 1:06d}"
        label = read_image(layout.label(name), "gray")
        labelled = label != 255
        assert np.array_equal(label[labelled], scene["label"][labelled]) and labelled.mean() > 0.5
        assert np.all(scene["depth_mm"][~labelled] == 0)
        assert np.array_equal(read_image(layout.rgb(name)), scene["rgb"])
        assert np.array_equal(read_image(layout.missing(name), "gray") == 1, scene["depth_mm"] == 0)
