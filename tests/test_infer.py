"""Inference: input preparation (normalisation, BGR), on-the-fly HHA, colour maps, overlays, folders and the CLI."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from primkd import cli
from primkd.cli.weights import register
from primkd.config import ConfigError
from primkd.data.dataset import normalize
from primkd.data.hha import compute_hha
from primkd.data.synthetic import render_scene
from primkd.data.viz import label_palette
from primkd.infer import colorize, infer_folder, overlay, prepare_inputs, segment
from primkd.io import DataError, read_image, write_png
from primkd.models import build_student, build_teacher
from primkd.models.io import export_safetensors, load_model, save_model

H, W = 48, 64
NUM_CLASSES = 40


@pytest.fixture(scope="module")
def scene() -> dict[str, Any]:
    return render_scene(3, H, W)


@pytest.fixture(scope="module")
def student_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = build_student("mit_tiny", NUM_CLASSES, decoder_embed_dim=16)
    path = tmp_path_factory.mktemp("models") / "student.pt"
    arch = {"kind": "student", "variant": "mit_tiny", "num_classes": NUM_CLASSES, "decoder_embed_dim": 16,
            "drop_path_rate": 0.1, "decoder_bn_eps": 1e-3}
    save_model(path, model, arch, ["rgb", "modal"], {"run": "test", "bgr": False})
    return path


@pytest.fixture(scope="module")
def student(student_file: Path) -> tuple[torch.nn.Module, dict]:
    return load_model(student_file)


def test_prepare_inputs_normalises_and_honours_bgr() -> None:
    """One red pixel: RGB order normalises channel 0 with the red statistics; BGR puts the blue value there."""
    rgb = np.zeros((1, 1, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    hha = np.full((1, 1, 3), 51, dtype=np.uint8)  # 0.2 after /255
    meta = {"inputs": ["modal", "rgb"], "info": {"bgr": False}}
    modal, x = prepare_inputs(meta, rgb, hha)
    assert x.shape == (1, 3, 1, 1)
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (0 - 0.406) / 0.225]
    assert x.flatten().tolist() == pytest.approx(expected, abs=1e-6)
    assert modal.flatten().tolist() == pytest.approx([(0.2 - 0.485) / 0.229, (0.2 - 0.456) / 0.224,
                                                      (0.2 - 0.406) / 0.225], abs=1e-6)
    (x_bgr,) = prepare_inputs({"inputs": ["rgb"], "info": {"bgr": True}}, rgb)
    assert x_bgr.flatten().tolist() == pytest.approx([(0 - 0.485) / 0.229, (0 - 0.456) / 0.224,
                                                      (1 - 0.406) / 0.225], abs=1e-6)
    with pytest.raises(ValueError, match="modal"):
        prepare_inputs(meta, rgb)


def test_segment_computes_hha_from_depth(student: tuple, scene: dict[str, Any]) -> None:
    model, meta = student
    depth_m = scene["depth_mm"] / 1000.0
    label = segment(model, meta, scene["rgb"], depth_m=depth_m, intrinsics=scene["intrinsics"])
    assert label.shape == (H, W) and label.dtype == np.uint8 and label.max() < NUM_CLASSES
    hha = compute_hha(depth_m, scene["intrinsics"])
    np.testing.assert_array_equal(label, segment(model, meta, scene["rgb"], hha=hha))
    xs = [normalize(scene["rgb"])[None], normalize(hha)[None]]
    with torch.no_grad():
        direct = model(*xs)["logits"].argmax(1)[0].numpy()  # (H, W)
    np.testing.assert_array_equal(label, direct)
    with pytest.raises(ValueError, match="intrinsics"):
        segment(model, meta, scene["rgb"], depth_m=depth_m)


def test_segment_bgr_and_multiscale(student: tuple, scene: dict[str, Any]) -> None:
    model, meta = student
    hha = compute_hha(scene["depth_mm"] / 1000.0, scene["intrinsics"])
    meta_bgr = {**meta, "info": {**meta["info"], "bgr": True}}
    np.testing.assert_array_equal(segment(model, meta_bgr, scene["rgb"], hha=hha),
                                  segment(model, meta, scene["rgb"][..., ::-1], hha=hha[..., ::-1]))
    multi = segment(model, meta, scene["rgb"], hha=hha, scales=(0.75, 1.0, 1.25), flip=True)
    assert multi.shape == (H, W) and multi.max() < NUM_CLASSES


def test_segment_rgb_only_model_ignores_depth(scene: dict[str, Any]) -> None:
    torch.manual_seed(0)
    model = build_teacher("mit_tiny", 5, decoder_embed_dim=16).eval()
    meta = {"inputs": ["rgb"], "info": {}}
    depth_m = scene["depth_mm"] / 1000.0
    hha = compute_hha(depth_m, scene["intrinsics"])
    label = segment(model, meta, scene["rgb"])
    np.testing.assert_array_equal(label, segment(model, meta, scene["rgb"], hha=hha))
    np.testing.assert_array_equal(label, segment(model, meta, scene["rgb"], depth_m=depth_m,
                                                 intrinsics=scene["intrinsics"]))
    with torch.no_grad():
        direct = model(normalize(scene["rgb"])[None])["logits"].argmax(1)[0].numpy()  # (H, W): the RGB image's own
    np.testing.assert_array_equal(label, direct)
    # The HHA image fed in place of the RGB one segments differently, so the equalities above could fail.
    assert not np.array_equal(label, segment(model, meta, hha))


def test_colorize_and_overlay_by_hand() -> None:
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[1] = (10, 20, 30)
    palette[255] = (1, 2, 3)
    label = np.array([[0, 1], [255, 1]], dtype=np.uint8)
    colour = colorize(label, palette)
    assert colour.tolist() == [[[0, 0, 0], [10, 20, 30]], [[1, 2, 3], [10, 20, 30]]]
    assert colorize(np.array([[0]]))[0, 0].tolist() == label_palette()[0].tolist() != [0, 0, 0]
    rgb = np.full((1, 2, 3), 100, dtype=np.uint8)
    other = np.array([[[200, 0, 50], [100, 100, 100]]], dtype=np.uint8)
    assert overlay(rgb, other, 0.25).tolist() == [[[125, 75, 88], [100, 100, 100]]]  # 87.5 rounds to even 88
    np.testing.assert_array_equal(overlay(rgb, other, 0.0), rgb)
    np.testing.assert_array_equal(overlay(rgb, other, 1.0), other)
    with pytest.raises(ValueError, match="alpha"):
        overlay(rgb, other, 1.5)


def _write_pairs(root: Path, seeds: list[int]) -> list[dict[str, Any]]:
    scenes = []
    for seed in seeds:
        s = render_scene(seed, H, W)
        write_png(root / "rgb" / f"scene{seed}.png", s["rgb"])
        write_png(root / "depth" / f"scene{seed}.png", s["depth_mm"])
        scenes.append(s)
    return scenes


def test_infer_folder_writes_colour_maps_and_overlays(student: tuple, tmp_path: Path) -> None:
    model, meta = student
    scenes = _write_pairs(tmp_path, [1, 2])
    names = infer_folder(model, meta, tmp_path / "rgb", tmp_path / "out", depth_dir=tmp_path / "depth",
                         overlay_alpha=0.5, progress=False)
    assert names == ["scene1", "scene2"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["scene1.png", "scene1_overlay.png", "scene2.png",
                                                                      "scene2_overlay.png"]
    for name, s in zip(names, scenes):  # the synthetic scenes use the NYU camera scaled to the image: the default
        expected = colorize(segment(model, meta, s["rgb"], s["depth_mm"] / 1000.0, intrinsics=s["intrinsics"]))
        np.testing.assert_array_equal(read_image(tmp_path / "out" / f"{name}.png"), expected)
        np.testing.assert_array_equal(read_image(tmp_path / "out" / f"{name}_overlay.png"),
                                      overlay(s["rgb"], expected, 0.5))
    (tmp_path / "depth" / "scene2.png").unlink()
    with pytest.raises(DataError, match="no depth map for 'scene2'"):
        infer_folder(model, meta, tmp_path / "rgb", tmp_path / "out2", depth_dir=tmp_path / "depth", progress=False)


def _cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="primkd")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


def test_cli_infer_pair_and_folder_from_export(student_file: Path, tmp_path: Path) -> None:
    s = _write_pairs(tmp_path, [4])[0]
    export_safetensors(student_file, tmp_path / "export")
    intr = [f"--{k}={s['intrinsics'][k]}" for k in ("fx", "fy", "cx", "cy")]
    _cli(["infer", "--model", str(tmp_path / "export"), "--rgb", str(tmp_path / "rgb" / "scene4.png"), "--depth",
          str(tmp_path / "depth" / "scene4.png"), *intr, "--out", str(tmp_path / "one.png"), "--overlay",
          "--device", "cpu"])
    model, meta = load_model(student_file)
    expected = colorize(segment(model, meta, s["rgb"], s["depth_mm"] / 1000.0, intrinsics=s["intrinsics"]))
    np.testing.assert_array_equal(read_image(tmp_path / "one.png"), expected)
    assert (tmp_path / "one_overlay.png").is_file()
    _cli(["infer", "--model", str(student_file), "--rgb-dir", str(tmp_path / "rgb"), "--depth-dir",
          str(tmp_path / "depth"), "--out", str(tmp_path / "many"), "--no-progress", "--device", "cpu"])
    np.testing.assert_array_equal(read_image(tmp_path / "many" / "scene4.png"), expected)
    with pytest.raises(ConfigError, match="--depth or --hha"):
        _cli(["infer", "--model", str(student_file), "--rgb", str(tmp_path / "rgb" / "scene4.png"), "--out",
              str(tmp_path / "x.png")])
    with pytest.raises(ConfigError, match="missing: --cy"):
        _cli(["infer", "--model", str(student_file), "--rgb", str(tmp_path / "rgb" / "scene4.png"), "--depth",
              str(tmp_path / "depth" / "scene4.png"), "--fx=1", "--fy=1", "--cx=1", "--out", str(tmp_path / "x.png")])


def test_images_whose_outputs_would_collide_are_refused_before_any_work(student: tuple, tmp_path: Path) -> None:
    model, meta = student
    _write_pairs(tmp_path, [1])
    (tmp_path / "rgb" / "scene1.jpg").write_bytes((tmp_path / "rgb" / "scene1.png").read_bytes())
    with pytest.raises(DataError) as info:
        infer_folder(model, meta, tmp_path / "rgb", tmp_path / "out", depth_dir=tmp_path / "depth", progress=False)
    assert str(info.value) == (f"{tmp_path / 'rgb'}: scene1.jpg and scene1.png would both be written as scene1.png; "
                               f"rename one of them (each image's file name without extension names its outputs)")
    assert not (tmp_path / "out").exists()


def test_weights_with_nan_are_refused_naming_the_file(student_file: Path, tmp_path: Path) -> None:
    """A model file (or export) holding NaN predicts nothing: infer, evaluate and a student's teacher refuse it."""
    blob = torch.load(student_file, weights_only=True)
    name = next(k for k, v in blob["state_dict"].items() if v.is_floating_point())
    blob["state_dict"][name] = torch.full_like(blob["state_dict"][name], float("nan"))
    broken = tmp_path / "nan.pt"
    torch.save(blob, broken)
    with pytest.raises(DataError) as info:
        load_model(broken)
    assert str(info.value) == (f"{broken}: the weights hold NaN or inf values ({name}); the file is broken: re-run "
                               f"the training stage that produces it")
    with pytest.raises(SystemExit, match=r"^2$"):
        cli.main(["infer", "--model", str(broken), "--rgb", str(tmp_path / "x.png"), "--hha", str(tmp_path / "x.png"),
                  "--out", str(tmp_path / "out.png")])
