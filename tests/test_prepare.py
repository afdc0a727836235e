"""The prepare stage's dispatch on `data.source`: hand-placed NYU files, folder import with ready-made HHA."""

import shutil

import h5py
import numpy as np
import pytest
import scipy.io

from primkd.config import ConfigError, load_params
from primkd.data.layout import read_meta, read_split
from primkd.data.prepare import link_imported_hha, prepare_dataset
from primkd.io import DataError, read_image

from fake_data import REPO
from test_folder import _make_folder

N_NYU = 1449  # the real splits.mat indexes the full labeled set


def _data_section(tmp_path, **overrides) -> dict:
    data = load_params(REPO / "params.yaml", "demo")["data"]
    data.update(raw_dir=str(tmp_path / "raw"), **overrides)
    return data


@pytest.fixture
def nyu_raw(tmp_path, fixtures_dir):
    """data/raw/nyuv2 with the real splits and class map and a 1449-image labeled .mat of 4×5 pixels."""
    raw = tmp_path / "raw" / "nyuv2"
    raw.mkdir(parents=True)
    for name in ("splits.mat", "classMapping40.mat"):
        shutil.copy(fixtures_dir / "nyuv2" / name, raw / name)
    index = np.arange(N_NYU, dtype=np.float32)[:, None, None]  # (N, 1, 1)
    with h5py.File(raw / "nyu_depth_v2_labeled.mat", "w", userblock_size=512) as f:
        f["images"] = np.broadcast_to((index % 200).astype(np.uint8)[:, None], (N_NYU, 3, 5, 4))  # (N, 3, W, H)
        f["depths"] = np.broadcast_to(1.0 + index / 1000, (N_NYU, 5, 4)).astype(np.float32)  # metres
        f["rawDepths"] = f["depths"][()]
        f["labels"] = np.ones((N_NYU, 5, 4), np.uint16)  # class 1 of 894 = wall
    return raw


def test_nyu_from_files_placed_by_hand(tmp_path, nyu_raw, fixtures_dir):
    out = prepare_dataset(_data_section(tmp_path, source="nyuv2", limit=2), tmp_path / "prepared")
    splits = scipy.io.loadmat(fixtures_dir / "nyuv2" / "splits.mat")
    first_train = [f"{int(i):06d}" for i in splits["trainNdxs"].ravel()[:2]]
    assert read_split(out, "train") == first_train and len(read_split(out, "test")) == 2
    depth = read_image(out / "Depth" / f"{first_train[0]}.png", "depth")
    assert depth.shape == (4, 5) and depth[0, 0] == round(1000 * (1.0 + (int(first_train[0]) - 1) / 1000))
    assert len(read_meta(out)["classes"]) == 40


def test_missing_download_says_where_to_put_the_file(tmp_path, nyu_raw):
    (nyu_raw / "nyu_depth_v2_labeled.mat").unlink()
    urls = dict(_data_section(tmp_path)["urls"], nyuv2_labeled="http://127.0.0.1:9/nyu_depth_v2_labeled.mat")
    with pytest.raises(DataError) as info:
        prepare_dataset(_data_section(tmp_path, source="nyuv2", urls=urls), tmp_path / "prepared")
    assert "http://127.0.0.1:9/nyu_depth_v2_labeled.mat" in str(info.value)
    assert str(nyu_raw / "nyu_depth_v2_labeled.mat") in str(info.value)
    assert not (tmp_path / "prepared").exists()


def test_folder_with_ready_made_hha_feeds_the_hha_stage(tmp_path):
    _make_folder(tmp_path / "cmx", modality="hha")
    folder = dict(_data_section(tmp_path)["folder"], path=str(tmp_path / "cmx"), num_classes=40, modality="hha")
    out = prepare_dataset(_data_section(tmp_path, source="folder", folder=folder), tmp_path / "prepared")
    assert read_meta(out)["hha_dir"]
    assert link_imported_hha(out, tmp_path / "hha") == 3
    sources = {"a0": "a0.png", "a1": "a1.jpg", "a2": "a2.png"}  # a1's JPEG is decoded into a PNG on import
    images = {name: read_image(tmp_path / "cmx" / "HHA" / file) for name, file in sources.items()}
    assert len({image.tobytes() for image in images.values()}) == 3  # a link to another name's file shows
    for name, file in sources.items():
        linked = tmp_path / "hha" / f"{name}.png"
        np.testing.assert_array_equal(read_image(linked), images[name])
        if file.endswith(".png"):  # linked or copied as is, not re-encoded
            assert linked.read_bytes() == (tmp_path / "cmx" / "HHA" / file).read_bytes()


def test_folder_source_needs_a_path(tmp_path):
    with pytest.raises(ConfigError) as info:
        prepare_dataset(_data_section(tmp_path, source="folder"), tmp_path / "prepared")
    assert str(info.value) == ("data.source is 'folder' but data.folder.path is empty; in params.yaml set "
                               "data.folder.path to the folder to import (RGB/, Depth/ or HHA/, Label/, train.txt, "
                               "test.txt)")
    assert not (tmp_path / "prepared").exists()


def test_prepare_out_never_deletes_what_it_did_not_write(tmp_path):
    """`prepare --out` into a folder holding other files is refused before any work and leaves them; a folder it
    wrote itself is replaced."""
    data = _data_section(tmp_path, source="synthetic")
    data["synthetic"].update(num_train=2, num_test=1, height=24, width=32)
    out = tmp_path / "prepared"
    out.mkdir()
    (out / "notes.md").write_text("mine")
    with pytest.raises(DataError, match=rf"^{out}: is not a folder primkd wrote \(notes\.md\), and an output folder "
                                        r"is replaced as a whole; give the output a new or empty folder"):
        prepare_dataset(data, out)
    assert [p.name for p in out.iterdir()] == ["notes.md"] and [p.name for p in tmp_path.iterdir()] == ["prepared"]
    (out / "notes.md").unlink()
    prepare_dataset(data, out)
    prepare_dataset(data, out)
    assert len(read_split(out, "train")) == 2 and (out / "meta.json").is_file()
