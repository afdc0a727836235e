"""Bad inputs fail with one line that names the file or key and the fix: split names that leave the dataset,
NaN/inf in params.yaml, a full disk, a non-finite loss, a depth network without --hha, training settings that cannot
run, a typo seen by the dvc.yaml generator; grey and RGBA images read as RGB are warned about."""

import copy
import errno
import logging
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from primkd import cli, stages
from primkd.cli import pipeline
from primkd.config import ConfigError, validate
from primkd.data import hha
from primkd.data.check import check_dataset
from primkd.data.dataset import hha_input
from primkd.data.layout import read_split
from primkd.engine import train as train_module
from primkd.engine.runtime import select_device
from primkd.io import DataError, DiskFullError, read_image, write_png, write_text
from primkd.models import build_student
from primkd.models.io import save_model

from fake_data import make_dataset

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("line", "shown"), [("../../x", "'../../x'"), ("/etc/passwd", "'/etc/passwd'"),
                                             ("RGB/tr0", "'RGB/tr0'"), ("..", "'..'"), ("a\\b", "'a\\\\b'")])
def test_split_names_that_leave_the_dataset_are_refused_with_the_line(tmp_path, line, shown):
    root = make_dataset(tmp_path / "data", n_train=2, n_test=1)
    (root / "train.txt").write_text(f"tr0\n\n{line}\ntr1\n")
    message = (f"{root}/train.txt, line 3: {shown} is not an image name; a split list names images of its own "
               f"dataset by their bare file name without extension (no folders, '..' or absolute paths), e.g. "
               f"'img_0001' for RGB/img_0001.png")
    with pytest.raises(Exception) as info:
        read_split(root, "train")
    assert str(info.value) == message
    assert message in check_dataset(root, root / "hha", progress=False)
    outside = tmp_path / "hha_out"
    with pytest.raises(Exception, match="line 3"):
        hha.convert_dataset(root, outside, workers=1)
    assert not any(p.suffix == ".png" for p in tmp_path.rglob("*") if "data" not in p.parts)


def test_several_bad_lines_are_counted(tmp_path):
    root = make_dataset(tmp_path / "data", n_train=2, n_test=1)
    (root / "test.txt").write_text("te0\n../a\n/b\n../c\n")
    with pytest.raises(Exception, match=r"test\.txt, line 2: '\.\./a' is not an image name \(and 2 more lines\);"):
        read_split(root, "test")


@pytest.mark.parametrize(("key", "value", "shown"), [
    (["train", "lr"], math.nan, "train.lr: must be a finite number, got nan"),
    (["train", "betas"], [0.9, math.nan], "train.betas.1: must be a finite number, got nan"),
    (["presets", "smoke", "train", "lr"], math.inf, "presets.smoke.train.lr: must be a finite number, got inf"),
    (["kd", "temperature"], math.inf, "kd.temperature: must be a finite number, got inf"),
    (["experiments", "kd_pred_only", "kd", "beta"], -math.inf,
     "experiments.kd_pred_only.kd.beta: must be a finite number, got -inf"),
    (["eval", "scales"], [1.0, math.nan], "eval.scales.1: must be a finite number, got nan"),
])
def test_nan_and_inf_are_refused_by_the_schema_for_every_number(key, value, shown):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    node = raw
    for part in key[:-1]:
        node = node[part]
    node[key[-1]] = value
    with pytest.raises(ConfigError) as info:
        validate(raw)
    assert str(info.value) == f"params.yaml is invalid; fix these keys:\n  {shown}"


def test_snakemake_refuses_nan_with_the_same_schema():
    from snakemake.utils import validate as snakemake_validate

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    snakemake_validate(copy.deepcopy(raw), str(REPO / "workflow/schemas/params.schema.yaml"))
    raw["model"]["drop_path_rate"] = math.nan
    with pytest.raises(Exception, match=r"(?s)nan should not be valid.*\['model'\]\['drop_path_rate'\]"):
        snakemake_validate(raw, str(REPO / "workflow/schemas/params.schema.yaml"))


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_names_the_file_being_written(tmp_path, monkeypatch):
    target = tmp_path / "out" / "effective.yaml"
    monkeypatch.setattr(Path, "write_text", _disk_full)
    with pytest.raises(DiskFullError) as info:
        write_text(target, "x")
    assert str(info.value) == (f"{target}: no space left on device while writing it; free space on the disk of "
                               f"{target.parent} (or write the outputs elsewhere) and run again")
    assert list(target.parent.iterdir()) == []  # no temporary file left behind


def test_a_full_disk_is_one_line_from_the_command_line(tmp_path, monkeypatch, capsys):
    target = tmp_path / "effective.yaml"
    monkeypatch.setattr(Path, "write_text", _disk_full)
    with pytest.raises(SystemExit) as info:
        cli.main(["params", "--params", str(REPO / "params.yaml"), "--preset", "smoke", "--out", str(target)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert f"ERROR primkd: {target}: no space left on device while writing it; free space on the disk" in err


def test_a_non_finite_loss_is_one_line_from_the_command_line(monkeypatch, capsys, tmp_path):
    message = ("teacher_rgb: iteration 3 (epoch 1): non-finite loss terms ['seg'] on images ['tr4', 'tr5']; no "
               "checkpoint was written yet. Lower train.lr, check the images with `primkd check-data`, or let "
               "train.max_bad_batches (now 0) skip such batches")

    def diverge(args):
        raise FloatingPointError(message)

    monkeypatch.setattr(pipeline, "cmd_train", diverge)
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--role", "teacher", "--data", str(tmp_path), "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert f"ERROR primkd: {message}\n" in err


@pytest.mark.parametrize(("mode", "pixels", "warning"), [
    ("L", np.full((4, 5), 100, np.uint8), "a greyscale image read as RGB (its grey value in all three channels)"),
    ("RGBA", np.full((4, 5, 4), 100, np.uint8), "an RGBA image read as RGB (the alpha channel is dropped)"),
    ("LA", np.full((4, 5, 2), 100, np.uint8), "a greyscale image with an alpha channel read as RGB (grey value in "
                                              "all three channels, alpha dropped)"),
])
def test_grey_and_rgba_files_read_as_rgb_are_warned_about_once(tmp_path, caplog, mode, pixels, warning):
    path = tmp_path / "image.png"
    Image.fromarray(pixels, mode=mode).save(path)
    with caplog.at_level(logging.WARNING, logger="primkd.io"):
        image = read_image(path, "rgb")
        read_image(path, "rgb")
    assert image.shape == (4, 5, 3) and (image == 100).all()
    expected = f"{path}: {warning}; convert it to a 3-channel RGB file if that is not intended"
    assert [r.getMessage() for r in caplog.records] == [expected]


def test_grey_jpeg_is_warned_about_and_colour_files_are_not(tmp_path, caplog):
    grey, colour = tmp_path / "grey.jpg", tmp_path / "colour.png"
    assert cv2.imwrite(str(grey), np.full((8, 8), 90, np.uint8))
    write_png(colour, np.full((4, 5, 3), 7, np.uint8))
    with caplog.at_level(logging.WARNING, logger="primkd.io"):
        read_image(colour, "rgb")
        read_image(grey, "rgb")
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [str(grey)]


def test_evaluate_averages_the_seeds_of_params_not_whatever_the_run_folder_holds(tmp_path, capsys):
    """Each student seed is its own stage; a folder may still hold seed<k>/ of an earlier `seeds` list."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["seeds"] = [0, 1]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    run = tmp_path / "models" / "primkd"
    for seed in (0, 2):  # seed 2: left over; seed 1: not trained yet
        (run / f"seed{seed}").mkdir(parents=True)
        (run / f"seed{seed}" / "model.pt").write_bytes(b"")
    with pytest.raises(SystemExit) as info:
        cli.main(["evaluate", "--params", str(params), "--model", str(run), "--data", str(tmp_path),
                  "--out", str(tmp_path / "m.json")])
    assert info.value.code == 2
    assert (f"ERROR primkd: {run}: no seed<k>/model.pt for seeds [1] of params.yaml `seeds`; run their training "
            f"stages\n") in capsys.readouterr().err


def _must_not_run(*args, **kwargs):
    raise AssertionError("a network was built although the run could not start")


def _params_with(tmp_path: Path, **smoke_train) -> Path:
    """params.yaml whose smoke preset sets these train keys."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["presets"]["smoke"]["train"].update(smoke_train)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(("role", "run"), [(["--role", "student"], "cmx"),
                                           (["--role", "teacher", "--modality", "depth"], "teacher_depth")])
def test_training_on_depth_without_hha_stops_before_any_network_is_built(tmp_path, monkeypatch, capsys, role, run):
    data = make_dataset(tmp_path / "data", n_train=4, n_test=2)
    monkeypatch.setattr(train_module, "build_model", _must_not_run)
    with pytest.raises(SystemExit) as info:
        cli.main(["train", *role, "--params", str(REPO / "params.yaml"), "--preset", "smoke", "--seed", "0",
                  "--data", str(data), "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert (f"ERROR primkd: run '{run}' reads depth: pass its HHA folder with --hha (the hha stage's output, "
            f"data/<preset>/hha)\n") in err


def test_evaluating_a_depth_model_without_hha_is_one_line(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", n_train=1, n_test=1)
    model = tmp_path / "student.pt"
    arch = {"kind": "student", "variant": "mit_tiny", "num_classes": 3, "decoder_embed_dim": 16,
            "drop_path_rate": 0.1, "decoder_bn_eps": 1e-3}
    save_model(model, build_student("mit_tiny", 3, decoder_embed_dim=16), arch, ["rgb", "modal"], {"run": "cmx"})
    with pytest.raises(SystemExit) as info:
        cli.main(["evaluate", "--params", str(REPO / "params.yaml"), "--preset", "smoke", "--model", str(model),
                  "--data", str(data), "--out", str(tmp_path / "metrics.json")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert (f"ERROR primkd: {model} reads depth: pass its HHA folder with --hha (the hha stage's output, "
            f"data/<preset>/hha)\n") in err
    assert not (tmp_path / "metrics.json").exists()


def test_hha_input_is_the_folder_only_when_the_network_reads_depth(tmp_path):
    assert hha_input(tmp_path, needed=True, reader="m.pt") == tmp_path
    assert hha_input(str(tmp_path), needed=False, reader="m.pt") is None  # an RGB network ignores a given folder
    assert hha_input(None, needed=False, reader="m.pt") is None
    with pytest.raises(DataError, match=r"^m\.pt reads depth: pass its HHA folder with --hha"):
        hha_input(None, needed=True, reader="m.pt")


def test_cuda_without_a_gpu_names_the_key_that_asked_for_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as info:
        select_device("cuda")
    assert str(info.value) == "train.device is 'cuda' but no CUDA device is visible; set train.device to auto or cpu"
    with pytest.raises(ConfigError) as info:
        select_device("cuda", "--device")
    assert str(info.value) == "--device is 'cuda' but no CUDA device is visible; set --device to auto or cpu"
    assert select_device("auto") == torch.device("cpu")


@pytest.mark.parametrize(("train", "n_train", "message"), [
    ({"device": "cuda"}, 4, "train.device is 'cuda' but no CUDA device is visible; set train.device to auto or cpu"),
    ({"micro_batch": 3}, 4, "train.batch_size = 4 is not a multiple of 1 ranks x train.micro_batch = 3; in "
                            "params.yaml make train.batch_size a multiple of ranks x train.micro_batch "
                            "(train.micro_batch: 0 = batch size / ranks, no accumulation)"),
    ({}, 3, "train.batch_size = 4 exceeds the 3 images that {data}/train.txt lists; lower train.batch_size in "
            "params.yaml or add training images"),
])
def test_training_settings_that_cannot_run_are_one_line(tmp_path, monkeypatch, capsys, train, n_train, message):
    data = make_dataset(tmp_path / "data", n_train=n_train, n_test=1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(train_module, "build_model", _must_not_run)
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--role", "teacher", "--params", str(_params_with(tmp_path, **train)), "--preset", "smoke",
                  "--data", str(data), "--out-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert f"ERROR primkd: {message.format(data=data)}\n" in err


def test_stages_script_reports_a_bad_params_file_in_one_line(tmp_path, capsys):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["train"]["lrr"] = raw["train"].pop("lr")  # a typo
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    for mode in ("--check", "--write"):
        with pytest.raises(SystemExit) as info:
            stages.main([mode, "--root", str(tmp_path)])
        err = capsys.readouterr().err
        assert info.value.code == 2 and "Traceback" not in err
        assert err.startswith(f"error: {tmp_path / 'params.yaml'} is invalid; fix these keys:\n")
        assert "lrr" in err
    assert not (tmp_path / "dvc.yaml").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["hha"], "give --data and --out to convert a prepared dataset, or --depth FILE to convert one file"),
    (["hha", "--depth", "d.png", "--fx", "500"], "converting one depth file needs --out and the intrinsics --fx --fy "
                                                 "--cx --cy (1-based principal point); missing: fy, cx, cy, out"),
    (["train", "--role", "student", "--experiment", "primkd", "--data", "d", "--out-dir", "o"],
     "experiment 'primkd' distils from a teacher: pass --teacher MODEL.pt or --teacher-dir (which holds "
     "teacher_rgb/model.pt)"),
    (["infer", "--model", "{model}", "--rgb", "a.png", "--rgb-dir", "d", "--out", "o"],
     "give either --rgb FILE (one image) or --rgb-dir FOLDER (a folder of images)"),
    (["infer", "--model", "{model}", "--rgb", "a.png", "--hha", "h.png", "--out", "o.jpg"],
     "--out must be a .png file when segmenting one image, got o.jpg"),
])
def test_bad_command_arguments_exit_2_in_one_line_like_bad_params(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(REPO)  # the commands that read params.yaml find it
    model = tmp_path / "student.pt"
    arch = {"kind": "student", "variant": "mit_tiny", "num_classes": 3, "decoder_embed_dim": 16,
            "drop_path_rate": 0.1, "decoder_bn_eps": 1e-3}
    save_model(model, build_student("mit_tiny", 3, decoder_embed_dim=16), arch, ["rgb", "modal"], {"run": "cmx"})
    with pytest.raises(SystemExit) as info:
        cli.main([a.format(model=model) for a in argv])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    assert f"ERROR primkd: {message}\n" in err
