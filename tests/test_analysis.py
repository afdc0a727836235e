"""Analysis stage: CKA per stage on tiny models, histogram binning and calibration, the qualitative figure."""

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from primkd.analysis.cka import linear_cka
from primkd.analysis.features import PairwiseStageCKA
from primkd.analysis.histograms import StageHistograms, bin_counts, density, histogram_rows, robust_range
from primkd.analysis.qualitative import Sample, classes_present
from primkd.analysis.run import analyze, resolve_model
from primkd.cli.report import register
from primkd.config import ConfigError
from primkd.io import DataError
from primkd.models.io import save_model
from primkd.models.segmentors import build_student, build_teacher

from fake_data import make_dataset

REPO = Path(__file__).resolve().parents[1]
CLASSES = 3


def save_tiny(path: Path, kind: str, inputs: list[str], seed: int) -> Path:
    """A randomly initialised mit_tiny teacher (SegFormer) or student (CMX) saved as a model file."""
    torch.manual_seed(seed)
    arch = {"kind": kind, "variant": "mit_tiny", "num_classes": CLASSES, "decoder_embed_dim": 16,
            "drop_path_rate": 0.0, "decoder_bn_eps": 1e-5}
    kwargs = {k: v for k, v in arch.items() if k != "kind"}
    model = build_teacher(**kwargs) if kind == "teacher" else build_student(**kwargs)
    save_model(path, model, arch, inputs, {"run": path.stem})
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A dataset and run folders in the pipeline's layout: teachers hold model.pt, the student seed0/ and seed2/."""
    root = tmp_path_factory.mktemp("analysis")
    data = make_dataset(root / "data", n_train=1, n_test=3, classes=CLASSES)
    models = root / "models"
    save_tiny(models / "cmx" / "seed2" / "model.pt", "student", ["rgb", "modal"], 3)
    return {"data": data, "hha": data / "hha",
            "rgb": save_tiny(models / "teacher_rgb" / "model.pt", "teacher", ["rgb"], 0).parent,
            "depth": save_tiny(models / "teacher_depth.pt", "teacher", ["modal"], 1),
            "cmx": models / "cmx", "cmx_seed0": save_tiny(models / "cmx" / "seed0" / "model.pt", "student",
                                                          ["rgb", "modal"], 2), "root": root}


def test_analyze_command_writes_every_output_and_self_cka_is_one(tiny):
    # "twin" is the RGB teacher's model file itself: its CKA with the rgb reference must be 1 at every stage.
    # "cmx" is a run folder (seed0/ and seed2/) and the RGB teacher a teacher's run folder: cka.json names the files.
    out = tiny["root"] / "out"
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["analyze", "--params", str(REPO / "params.yaml"), "--preset", "smoke", "--no-progress",
                              "--student", f"cmx={tiny['cmx']}", "--student", f"twin={tiny['rgb'] / 'model.pt'}",
                              "--rgb-model", str(tiny["rgb"]), "--depth-model", str(tiny["depth"]),
                              "--data", str(tiny["data"]), "--hha", str(tiny["hha"]), "--out-dir", str(out),
                              "--qualitative-images", "1", "--bins", "8", "--calibration-images", "2"])
    args.func(args)
    for name in ("cka.csv", "cka.json", "figure4_histograms.csv", "figure4_histograms.png", "figure4_histograms.pdf",
                 "figure3_qualitative.png", "figure3_qualitative.pdf"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader((out / "cka.csv").open()))
    assert len(rows) == 2 * 2 * 4  # students × references × stages
    cka = {(r["student"], r["reference"], int(r["stage"])): float(r["cka"]) for r in rows}
    for stage in range(1, 5):
        assert cka[("twin", "rgb", stage)] == pytest.approx(1.0, abs=1e-9)
        assert 0.0 <= cka[("cmx", "rgb", stage)] < 1.0
        assert 0.0 <= cka[("cmx", "depth", stage)] < 1.0
    samples = {int(r["stage"]): int(r["samples"]) for r in rows}
    assert samples == {1: 3 * 8 * 12, 2: 3 * 4 * 6, 3: 3 * 2 * 3, 4: 3 * 1 * 2}  # 3 images of 32×48, strides 4..32
    stored = json.loads((out / "cka.json").read_text())
    assert stored["test_images"] == 3 and len(stored["rows"]) == 16
    assert stored["students"]["cmx"] == {"given": str(tiny["cmx"]), "model": str(tiny["cmx_seed0"]), "seed": 0}
    assert stored["references"]["rgb"] == {"given": str(tiny["rgb"]), "model": str(tiny["rgb"] / "model.pt"),
                                           "seed": None}
    hist = list(csv.DictReader((out / "figure4_histograms.csv").open()))
    assert {r["model"] for r in hist} == {"rgb", "cmx", "twin"}
    # Every feature value of every test image is counted once (underflow + bins + overflow).
    stage1 = [r for r in hist if r["model"] == "cmx" and r["stage"] == "1"]
    assert len(stage1) == 8 + 2 and sum(int(r["count"]) for r in stage1) == 3 * 16 * 8 * 12


def test_pairwise_cka_resizes_and_accumulates_minibatches():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 4, 4, generator=gen)
    y = torch.randn(4, 5, 2, 2, generator=gen)  # coarser map: resized to 4×4 before comparing
    y_up = F.interpolate(y, size=(4, 4), mode="bilinear", align_corners=False)
    flat = lambda t: t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])  # noqa: E731  (B·H·W, C)
    expected = linear_cka(flat(x), flat(y_up))
    cka = PairwiseStageCKA([("x", "y")], num_stages=1)
    for i in range(0, 4, 3):  # minibatches of 3 and 1 images
        cka.update({"x": [x[i : i + 3]], "y": [y[i : i + 3]]})
    (row,) = cka.rows()
    assert row["cka"] == pytest.approx(expected, rel=1e-9) and row["samples"] == 4 * 16 and row["stage"] == 1


def test_analyze_rejects_reserved_student_names_and_bad_counts(tiny):
    with pytest.raises(ConfigError, match="reserved"):
        analyze({"rgb": tiny["cmx"]}, tiny["rgb"], None, tiny["data"], tiny["hha"], tiny["root"] / "bad")
    with pytest.raises(ConfigError, match="'--bins': 0"):
        analyze({"cmx": tiny["cmx"]}, tiny["rgb"], None, tiny["data"], tiny["hha"], tiny["root"] / "bad", num_bins=0)


def test_analyze_of_depth_networks_without_hha_names_the_flag(tiny):
    with pytest.raises(DataError, match=r"^a student or the depth-only model reads depth: pass its HHA folder "
                                        r"with --hha"):
        analyze({"cmx": tiny["cmx"]}, tiny["rgb"], None, tiny["data"], None, tiny["root"] / "no_hha")
    assert not (tiny["root"] / "no_hha").exists()


def test_resolve_model_and_its_errors(tiny):
    assert resolve_model(tiny["depth"]) == {"given": str(tiny["depth"]), "model": str(tiny["depth"]), "seed": None}
    (tiny["root"] / "untrained").mkdir()
    with pytest.raises(DataError, match=r"untrained: neither a model file nor a folder of seed<k>/model\.pt"):
        resolve_model(tiny["root"] / "untrained")


def test_a_student_folder_gives_the_lowest_seed_of_params_not_of_the_folder(tiny):
    """The cmx folder holds seed0/ and seed2/; with `seeds: [2, 3]` seed0/ is a leftover of an earlier list."""
    seed2 = tiny["cmx"] / "seed2" / "model.pt"
    assert resolve_model(tiny["cmx"], [3, 2]) == {"given": str(tiny["cmx"]), "model": str(seed2), "seed": 2}
    assert resolve_model(tiny["cmx"], [0, 2])["model"] == str(tiny["cmx_seed0"])
    with pytest.raises(DataError, match=r"cmx: no seed<k>/model\.pt for seeds \[1\] of params\.yaml `seeds`"):
        resolve_model(tiny["cmx"], [1, 2])


def test_analyze_command_analyses_the_lowest_seed_of_params(tiny, tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["seeds"] = [2]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["analyze", "--params", str(params), "--preset", "smoke", "--no-progress",
                              "--student", f"cmx={tiny['cmx']}", "--rgb-model", str(tiny["rgb"]),
                              "--data", str(tiny["data"]), "--hha", str(tiny["hha"]), "--out-dir", str(tmp_path / "o"),
                              "--max-images", "1", "--qualitative-images", "1", "--bins", "4",
                              "--calibration-images", "1"])
    args.func(args)
    stored = json.loads((tmp_path / "o" / "cka.json").read_text())
    assert stored["students"]["cmx"] == {"given": str(tiny["cmx"]), "model": str(tiny["cmx"] / "seed2" / "model.pt"),
                                         "seed": 2}


def test_analyze_command_reports_duplicate_students(tiny):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["analyze", "--params", str(REPO / "params.yaml"), "--preset", "smoke",
                              "--student", f"cmx={tiny['cmx']}", "--student", f"cmx={tiny['cmx_seed0']}",
                              "--rgb-model", str(tiny["rgb"]), "--data", str(tiny["data"]), "--out-dir", "o"])
    with pytest.raises(ConfigError, match=r"--student \['cmx'\] given more than once"):
        args.func(args)


def test_bin_counts_by_hand():
    edges = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    values = torch.tensor([-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 4.0])
    # underflow {-1}; [0,1): {0, 0.5}; [1,2): {1}; [2,3] (last bin closed): {2, 3}; overflow {4}.
    assert bin_counts(values, edges).tolist() == [1, 2, 1, 2, 1]


def test_robust_range_and_degenerate_values():
    gen = torch.Generator().manual_seed(0)
    values = torch.arange(101, dtype=torch.float32)  # 0..100
    assert robust_range(values, (0.1, 0.9), 10_000, gen) == pytest.approx((10.0, 90.0))
    assert robust_range(torch.full((5,), 2.0), (0.0, 1.0), 10_000, gen) == (1.5, 2.5)


def test_stage_histograms_hold_calibration_images_then_bin_everything():
    hist = StageHistograms(num_bins=4, calibration_images=2, quantiles=(0.0, 1.0))
    a = torch.tensor([0.0, 1.0, 2.0, 4.0]).reshape(1, 1, 2, 2)
    b = torch.tensor([1.0, 1.0, 3.0, 3.0]).reshape(1, 1, 2, 2)
    hist.update({"m": [a]})
    assert hist.edges is None  # still calibrating: the batch is held
    hist.update({"m": [b]})
    hist.update({"m": [torch.tensor([-1.0, 5.0, 2.5, 0.5]).reshape(1, 1, 2, 2)]})  # after calibration
    result = hist.result()
    assert result["edges"][0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]  # range = min..max of the first two images
    # [0,1): 0, 0.5; [1,2): 1, 1, 1; [2,3): 2, 2.5; [3,4]: 3, 3, 4.
    assert result["counts"]["m"][0].tolist() == [2, 3, 2, 3]
    assert result["underflow"]["m"] == [1] and result["overflow"]["m"] == [1] and result["total"]["m"] == [12]
    dens = density(result["counts"]["m"][0], result["edges"][0], 12)
    assert float((dens * np.diff(result["edges"][0])).sum()) == pytest.approx(10 / 12)
    rows = histogram_rows(result)
    assert rows[0]["bin_left"] == -math.inf and rows[-1]["bin_right"] == math.inf and len(rows) == 6


def test_histograms_calibrate_on_fewer_images_than_asked():
    hist = StageHistograms(num_bins=2, calibration_images=5, quantiles=(0.0, 1.0))
    hist.update({"m": [torch.tensor([0.0, 2.0]).reshape(1, 1, 1, 2)]})
    assert hist.result()["counts"]["m"][0].tolist() == [1, 1]


def _analysis_of(features: dict, batch_size: int, calibration_images: int, sample_size: int) -> tuple[dict, list]:
    """Histograms and CKA rows of per-image stage maps ``{name: [stage: N×C×H×W]}`` fed in minibatches."""
    hist = StageHistograms(num_bins=6, calibration_images=calibration_images, sample_size=sample_size)
    cka = PairwiseStageCKA([("cmx", "rgb")], num_stages=2)
    num_images = features["rgb"][0].shape[0]
    for i in range(0, num_images, batch_size):
        batch = {name: [m[i : i + batch_size] for m in maps] for name, maps in features.items()}
        hist.update(batch)
        cka.update(batch)
    return hist.result(), cka.rows()


def test_histograms_and_cka_are_identical_for_any_batch_size():
    """The same per-image stage maps in minibatches of 1, 3 (3+3+2) and 8 images give bit-identical edges, counts and
    CKA: the range comes from the first 5 images (a minibatch of 3 or 8 straddles that boundary), the sample of at most
    200 of the pooled values is drawn from them in one order, and CKA adds its moments image by image."""
    gen = torch.Generator().manual_seed(0)
    scale = torch.arange(1, 9, dtype=torch.float32).reshape(8, 1, 1, 1)  # image i spreads (i+1)×: the range
    features = {name: [torch.randn(8, c, h, w, generator=gen) * scale + offset  # depends on which images calibrate
                       for c, h, w in ((4, 6, 8), (6, 3, 4))] for name, offset in (("rgb", 0.0), ("cmx", 0.5))}
    features["cmx"] = [m + 0.5 * r for m, r in zip(features["cmx"], features["rgb"], strict=True)]  # CKA well above 0
    hist_1, cka_1 = _analysis_of(features, 1, calibration_images=5, sample_size=200)
    assert 5 * 4 * 6 * 8 * 2 > 200  # the calibration pool of stage 1 is sampled, not used whole
    for batch_size in (3, 8):
        hist, cka = _analysis_of(features, batch_size, calibration_images=5, sample_size=200)
        for s in range(2):
            assert np.array_equal(hist["edges"][s], hist_1["edges"][s]), (batch_size, s)
            for name in ("rgb", "cmx"):
                assert np.array_equal(hist["counts"][name][s], hist_1["counts"][name][s]), (batch_size, name, s)
        for key in ("underflow", "overflow", "total"):
            assert hist[key] == hist_1[key], (batch_size, key)
        assert cka == cka_1, batch_size  # exact float equality, samples included
    # The range is that of the first 5 images, not all 8: binning all 8 puts the spread of images 6-8 outside it.
    assert sum(hist_1["overflow"]["rgb"]) + sum(hist_1["underflow"]["rgb"]) > 0.05 * sum(hist_1["total"]["rgb"])
    assert 0.1 < cka_1[0]["cka"] < 0.9  # neither unrelated nor identical maps


def test_analyze_outputs_do_not_depend_on_the_batch_size(tiny):
    """analyze on 8 test images with --batch-size 1, 3 and 8. The analysis itself is exact for any grouping (see the
    test above), but the networks' float32 forward pass differs by ~1e-6 between batch sizes on CPU (BLAS blocking),
    so edges and CKA are compared within 1e-4 and the counts may move the few values that lie that close to an edge."""
    data = make_dataset(tiny["root"] / "data8", n_train=1, n_test=8, classes=CLASSES)
    outputs = {}
    for batch_size in (1, 3, 8):
        out = tiny["root"] / f"batch{batch_size}"
        analyze({"cmx": tiny["cmx_seed0"]}, tiny["rgb"], tiny["depth"], data, data / "hha", out,
                batch_size=batch_size, num_qualitative=1, num_bins=8, calibration_images=5, progress=False)
        outputs[batch_size] = (list(csv.DictReader((out / "figure4_histograms.csv").open())),
                               list(csv.DictReader((out / "cka.csv").open())))
    hist_1, cka_1 = outputs[1]
    for batch_size in (3, 8):
        hist, cka = outputs[batch_size]
        assert [(r["model"], r["stage"]) for r in hist] == [(r["model"], r["stage"]) for r in hist_1]
        for key in ("bin_left", "bin_right"):
            assert np.allclose([float(r[key]) for r in hist], [float(r[key]) for r in hist_1], rtol=1e-4, atol=1e-4)
        counts, counts_1 = np.array([int(r["count"]) for r in hist]), np.array([int(r["count"]) for r in hist_1])
        assert counts.sum() == counts_1.sum() == 2 * 8 * (16 * 8 * 12 + 32 * 4 * 6 + 64 * 2 * 3 + 96 * 1 * 2)
        assert np.abs(counts - counts_1).sum() <= 1e-3 * counts.sum(), batch_size
        assert [(r["reference"], r["stage"], r["samples"]) for r in cka] == \
               [(r["reference"], r["stage"], r["samples"]) for r in cka_1]
        assert [float(r["cka"]) for r in cka] == pytest.approx([float(r["cka"]) for r in cka_1], abs=1e-4)


def test_rerunning_the_analysis_changes_no_byte(tiny, tmp_path, monkeypatch):
    """analyze twice on the same models and images, the clock moved by years in between (SOURCE_DATE_EPOCH is the
    time matplotlib stamps into a PDF): CKA CSV/JSON, histogram CSV and Figures 3 and 4 (PNG and PDF) are
    byte-identical."""
    builds = []
    for epoch in ("1000000000", "1900000000"):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
        analyze({"cmx": tiny["cmx"]}, tiny["rgb"], tiny["depth"], tiny["data"], tiny["hha"], tmp_path / "out",
                num_qualitative=1, num_bins=8, calibration_images=2, progress=False)
        builds.append({p.name: p.read_bytes() for p in sorted((tmp_path / "out").iterdir())})
    assert sorted(builds[0]) == ["cka.csv", "cka.json", "figure3_qualitative.pdf", "figure3_qualitative.png",
                                 "figure4_histograms.csv", "figure4_histograms.pdf", "figure4_histograms.png"]
    assert [name for name in builds[0] if builds[0][name] != builds[1][name]] == []


def test_classes_present_skips_ignore():
    label = np.array([[0, 255], [2, 2]], np.uint8)
    sample = Sample("x", np.zeros((2, 2, 3), np.uint8), None, label, {"m": np.array([[1, 1], [2, 0]], np.uint8)})
    assert classes_present([sample]) == [0, 1, 2]
