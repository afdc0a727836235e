"""Bad inputs: `primkd check-data` lists every problem of a dataset at once; the dataset and the HHA stage fail with
messages that name the file and the fix. (Schema errors of params.yaml are covered by tests/test_config.py.)"""

import argparse
import json

import numpy as np
import pytest

from primkd.cli.check import register
from primkd.data import hha
from primkd.data.check import check_dataset
from primkd.data.dataset import RGBDDataset
from primkd.data.layout import write_split
from primkd.io import DataError, write_png

from fake_data import make_dataset


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.fixture()
def broken(tmp_path):
    """A 4 + 2 image dataset with one fault per sample, plus faulty split lists and meta.json."""
    root = make_dataset(tmp_path / "data", n_train=4, n_test=2, classes=3)
    truncate(root / "RGB" / "tr0.png")
    write_png(root / "Depth" / "tr1.png", np.full((32, 40), 1000, np.uint16))  # 40 columns instead of 48
    write_png(root / "Label" / "tr2.png", np.full((32, 48), 7, np.uint8))  # 3 classes: 0..2
    (root / "Label" / "tr3.png").unlink()
    write_png(root / "Depth" / "te0.png", np.zeros((32, 48), np.uint16))  # no valid depth at all
    (root / "hha" / "te1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    write_split(root, "train", ["tr0", "tr1", "tr2", "tr3", "ghost"])
    write_split(root, "test", ["te0", "te1", "te1", "tr1"])
    meta = json.loads((root / "meta.json").read_text())
    meta["intrinsics"]["fx"] = -50.0
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def test_check_dataset_lists_every_problem_at_once(broken):
    problems = check_dataset(broken, broken / "hha")
    expected = [
        f"{broken}/meta.json: `intrinsics` needs positive numbers fx",
        f"{broken}/test.txt: names listed more than once: ['te1']",
        f"{broken}: 1 images are in both train.txt and test.txt (e.g. ['tr1'])",
        f"{broken}/RGB/tr0.png: cannot decode the image (corrupt or truncated file)",
        f"{broken}/Depth/tr1.png: size 32×40 differs from the RGB image tr1.png (32×48); every file of a sample",
        f"{broken}/Label/tr2.png: label values [7] are outside 0..2 (255 = ignore); fix the class mapping",
        f"{broken}/Label/tr3.png: missing ('tr3' is listed in train.txt); add the file, or remove the name",
        f"{broken}/RGB/ghost.png: missing",
        f"{broken}/Depth/ghost.png: missing",
        f"{broken}/hha/ghost.png: missing",
        f"{broken}/Depth/te0.png: every depth pixel is 0 (missing)",
        f"{broken}/hha/te1.png: cannot decode the image",
    ]
    for fragment in expected:
        assert sum(fragment in p for p in problems) == 1, (fragment, problems)
    assert len(problems) == len(expected) + 1  # + ghost's label file


def test_check_data_command_prints_the_problems_and_exits_1(broken, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="primkd")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["check-data", "--data", str(broken), "--no-progress"])
    with pytest.raises(SystemExit) as stop:
        args.func(args)
    assert stop.value.code == 1
    assert capsys.readouterr().out.splitlines() == check_dataset(broken)
    clean = make_dataset(tmp_path / "clean")
    args = parser.parse_args(["check-data", "--data", str(clean), "--hha", str(clean / "hha"), "--no-progress"])
    args.func(args)  # no problem: returns normally (exit status 0)
    assert capsys.readouterr().out == ""


def test_missing_dataset_folder_and_empty_split(tmp_path):
    assert check_dataset(tmp_path / "nowhere") == [f"{tmp_path}/nowhere: dataset folder not found; run the prepare "
                                                   f"stage or pass the right folder"]
    root = make_dataset(tmp_path / "data")
    (root / "test.txt").write_text("\n  \n")
    assert check_dataset(root) == [f"{root}/test.txt: the split list is empty; it must name one image per line"]
    with pytest.raises(DataError, match=r"test\.txt: the split list is empty"):
        RGBDDataset(root, "test")


def test_dataset_names_every_listed_sample_without_files_before_training(tmp_path):
    root = make_dataset(tmp_path / "data")
    (root / "Label" / "tr1.png").unlink()
    write_split(root, "train", ["tr0", "tr1", "nothing"])
    with pytest.raises(DataError, match=rf"{root}/train\.txt lists samples whose files are missing: "
                                        rf"{root}/Label/tr1\.png, {root}/RGB/nothing\.png, {root}/Label/nothing\.png, "
                                        rf"{root}/hha/nothing\.png; re-run the stage that writes them"):
        RGBDDataset(root, "train", root / "hha")


@pytest.mark.parametrize(("fault", "message"), [
    ("truncated_rgb", r"RGB/tr0\.png: cannot decode the image \(corrupt or truncated file\); re-create"),
    ("label_size", r"Label/tr0\.png: label size \(16, 48\) differs from the RGB image \(32, 48\); re-prepare"),
    ("hha_size", r"hha/tr0\.png: HHA size \(32, 24\) differs from the RGB image \(32, 48\); re-run the hha stage"),
    ("label_values", r"Label/tr0\.png: label values \[3, 9\] are outside 0\.\.2 \(255 = ignore\)"),
])
def test_dataset_sample_errors_name_the_file_and_the_fix(tmp_path, fault, message):
    root = make_dataset(tmp_path / "data", classes=3)
    if fault == "truncated_rgb":
        truncate(root / "RGB" / "tr0.png", 0.9)
    elif fault == "label_size":
        write_png(root / "Label" / "tr0.png", np.zeros((16, 48), np.uint8))
    elif fault == "hha_size":
        write_png(root / "hha" / "tr0.png", np.zeros((32, 24, 3), np.uint8))
    else:
        label = np.zeros((32, 48), np.uint8)
        label[5, :4] = [9, 3, 255, 2]
        write_png(root / "Label" / "tr0.png", label)
    with pytest.raises(DataError, match=message):
        RGBDDataset(root, "train", root / "hha")[0]


@pytest.mark.parametrize(("value", "message"), [
    (np.nan, "1 NaN or infinite values; encode missing depth as 0"),
    (np.inf, "1 NaN or infinite values; encode missing depth as 0"),
    (-0.5, "1 negative values; depth must be metres >= 0, 0 = missing"),
])
def test_npy_depth_with_nan_inf_or_negative_values_is_rejected(tmp_path, value, message):
    depth = np.full((24, 32), 2.0)
    depth[3, 4] = value
    np.save(tmp_path / "depth.npy", depth)
    intrinsics = {"fx": 30.0, "fy": 30.0, "cx": 16.5, "cy": 12.5}
    with pytest.raises(DataError, match=rf"{tmp_path}/depth\.npy: depth holds {message}"):
        hha.hha_from_file(tmp_path / "depth.npy", tmp_path / "hha.png", intrinsics)
    assert not (tmp_path / "hha.png").exists()
