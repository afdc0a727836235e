"""The benchmarks in a seconds-long form (one tiny configuration, no reference code), so that they cannot rot.

Nothing here asserts a speed: the numbers depend on the machine. What is checked is that every script runs end to
end, alternates its configurations, reports the reference columns as not measured when no checkout is given, and that
the import isolation of the official checkouts works.
"""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name: str):
    """A bench script as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def test_hha_speed_without_reference(fixtures_dir, tmp_path, capsys):
    hha_speed = _load("hha_speed")
    out = tmp_path / "hha.json"
    report = hha_speed.main(hha_speed.parse_args(["--fixtures", str(fixtures_dir), "--rounds", "2", "--repeats", "1",
                                                  "--scenes", "depth.npy", "--out", str(out)]))
    printed = capsys.readouterr().out
    assert "reference Depth2HHA-python: not measured" in printed
    assert "cv2.getNumThreads()=1" in printed
    row = report["results"]["depth.npy"]
    assert row["primkd_cpu_ms"] > 0 and row["primkd_wall_ms"] > 0
    assert not any(key.startswith(("reference", "ratio")) for key in row), "no remembered reference figure"
    assert json.loads(out.read_text())["results"]["depth.npy"] == pytest.approx(row)


def test_hha_speed_rejects_a_folder_that_is_no_checkout(fixtures_dir, tmp_path):
    hha_speed = _load("hha_speed")
    args = hha_speed.parse_args(["--fixtures", str(fixtures_dir), "--reference", str(tmp_path), "--rounds", "1"])
    with pytest.raises(SystemExit, match="not a Depth2HHA-python checkout"):
        hha_speed.main(args)


def test_train_throughput_tiny_alternates_and_marks_official_unmeasured(tmp_path):
    train_throughput = _load("train_throughput")
    args = train_throughput.parse_args([
        "--device", "cpu", "--variant", "mit_tiny", "--height", "32", "--width", "48", "--batch", "2", "--iters", "1",
        "--warmup", "0", "--rounds", "2", "--tasks", "train_cmx", "train_student", "eval_single",
        "--out", str(tmp_path / "train.json")])
    report = train_throughput.main(args)
    for task in ("train_cmx", "train_student", "eval_single"):
        for config in ("fp32_eager", "optimised"):
            res = report["results"][task][config]
            assert len(res["runs_images_per_cpu_s"]) == 2, "one timed run per round"
            assert res["images_per_cpu_s"] > 0
        assert set(report["ratios"][task]) == {"optimised/fp32_eager"}
    for task in ("train_cmx", "train_student"):
        assert report["results"][task]["official"]["skipped"].startswith("not measured")
    assert "official" not in report["results"]["eval_single"], "evaluation has no official column"
    assert "torch.get_num_threads()=1" in report["threads"]


def _fake_checkout(root: Path, tag: str) -> Path:
    """A folder shaped like an official checkout whose ``models.builder`` says which checkout it is."""
    (root / "models").mkdir(parents=True)
    (root / "models" / "__init__.py").write_text("")
    (root / "models" / "builder.py").write_text(f"TAG = {tag!r}\n")
    return root


def test_official_checkouts_with_the_same_package_names_import_side_by_side(tmp_path):
    train_throughput = _load("train_throughput")
    first, second = _fake_checkout(tmp_path / "a", "cmx"), _fake_checkout(tmp_path / "b", "primkd")
    before = sys.modules.get("models")
    tags = []
    for folder in (first, second):
        with train_throughput.official_checkout(folder, "test"):
            tags.append(importlib.import_module("models.builder").TAG)
        assert sys.modules.get("models") is before, "the checkout's packages leave sys.modules again"
    assert tags == ["cmx", "primkd"]


def test_official_checkout_rejects_a_folder_without_the_builder(tmp_path):
    train_throughput = _load("train_throughput")
    with pytest.raises(SystemExit, match=r"models/builder\.py missing"):
        with train_throughput.official_checkout(tmp_path, "xiaoshideta/PrimKD"):
            pass


def test_hha_dataset_tiny_runs_the_command(tmp_path):
    hha_dataset = _load("hha_dataset")
    args = hha_dataset.parse_args(["--images", "2", "--height", "48", "--width", "64", "--in-library",
                                   "--workdir", str(tmp_path), "--out", str(tmp_path / "dataset.json")])
    report = hha_dataset.main(args)  # exits unless the command wrote one HHA image per depth map
    assert report["images"] == 2 and report["command"]["wall_s"] > 0 and report["in_library"]["cpu_s"] > 0
    assert report["imports_s"] > 0


def test_threads_grid_tiny_records_each_configuration_split(tmp_path):
    """One smoke training per configuration: the stage splits the cores it is given as the resources keys say."""
    grid = _load("threads_grid")
    args = grid.parse_args(["--preset", "smoke", "--work", str(tmp_path), "--epochs", "1", "--rounds", "1",
                            "--configs", "1:0", "2:1"])
    result = grid.main(args)
    assert result["1:0"]["plan"]["torch_threads"] == 1 and result["1:0"]["plan"]["workers"] == 0
    # two cores asked with one worker: one DataLoader worker and one torch thread (or one thread, no worker, where
    # the machine gives the process a single core)
    plan = result["2:1"]["plan"]
    assert plan["torch_threads"] + plan["workers"] == min(2, plan["cores_given"]) and plan["cpus_per_task"] == 2
    assert len(result["2:1"]["wall_s"]) == 1 and result["2:1"]["cpu_s"][0] > 0


def test_calibration_round_summary_shows_train_and_test_split_and_the_targets():
    """Per model and seed the test and train mIoU and their gap, per model the means, per round the three targets
    (RGB / CMX 51/57 = 0.895, depth − RGB 40 − 51, CMX train − test (20 + 16) / 2), from a hand-made result.json."""
    calibrate = _load("calibrate_synthetic")
    result = {"name": "rX", "runs": {
        "rgb_s0": {"miou": 0.50, "train_miou": 0.60, "train_gap": 0.10},
        "rgb_s1": {"miou": 0.52, "train_miou": 0.64, "train_gap": 0.12},
        "depth_s0": {"miou": 0.40},  # a round before the train split was scored
        "cmx_s0": {"miou": 0.56, "train_miou": 0.76, "train_gap": 0.20},
        "cmx_s1": {"miou": 0.58, "train_miou": 0.74, "train_gap": 0.16}}}
    summary = calibrate.summarize(result)
    assert summary["ratio"] == pytest.approx(51 / 57) and summary["gap"] == pytest.approx(-11.0)
    assert summary["cmx_train_gap"] == pytest.approx(18.0) and "train" not in summary["models"]["depth"]
    assert calibrate.summary_text(result) == (
        "round rX: mIoU (points), last epoch, single scale\n"
        "  model   seed   test   train  train − test\n"
        "  rgb        0   50.0    60.0   +10.0\n"
        "  rgb        1   52.0    64.0   +12.0\n"
        "  depth      0   40.0       —       —\n"
        "  cmx        0   56.0    76.0   +20.0\n"
        "  cmx        1   58.0    74.0   +16.0\n"
        "  rgb: test 51.0 ± 1.4 (n = 2), train 62.0 ± 2.8, train − test +11.0 ± 1.4\n"
        "  depth: test 40.0 ± 0.0 (n = 1)\n"
        "  cmx: test 57.0 ± 1.4 (n = 2), train 75.0 ± 1.4, train − test +18.0 ± 2.8\n"
        "  RGB / CMX: 0.895 (met); target 0.85-0.97\n"
        "  depth − RGB: -11.0 (met); target <= -5\n"
        "  CMX train − test: +18.0 (met); target >= +15\n")
    result["runs"]["cmx_s1"].update(train_miou=0.60, train_gap=0.02)
    assert calibrate.summary_text(result).endswith("  CMX train − test: +11.0 (NOT met); target >= +15\n")


def test_calibration_round_sets_the_pretrained_encoder_the_training_set_size_and_the_schedule(tmp_path):
    """A round's ``preset`` overrides reach the demo preset as params.yaml's loader resolves it (after the round's
    knobs and its pinned evaluation schedule)."""
    import yaml

    from primkd.config import load_params

    calibrate = _load("calibrate_synthetic")
    base = calibrate._params({"knobs": {"depth_noise": 2.0}, "preset": {
        "model": {"pretrained": "data/pretrained/demo_encoder.pth"}, "data": {"synthetic": {"num_train": 30}},
        "train": {"epochs": 120, "batch_size": 4}}})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(base))
    cfg = load_params(tmp_path / "params.yaml", "demo")
    assert cfg["model"]["pretrained"] == "data/pretrained/demo_encoder.pth"
    assert (cfg["data"]["synthetic"]["num_train"], cfg["data"]["synthetic"]["depth_noise"]) == (30, 2.0)
    assert cfg["data"]["synthetic"]["height"] == 96  # the demo preset's own keys of the section stay
    assert (cfg["train"]["epochs"], cfg["train"]["batch_size"], cfg["train"]["eval_every"]) == (120, 4, 0)


def test_calibration_round_evaluates_both_splits_into_result_json(tmp_path, monkeypatch, capsys):
    """run_round's commands with the stages' work replaced by files of known mIoU: every evaluation also scores the
    train split (--train-out), and result.json holds each run's test and train mIoU, their gap and the summary."""
    import itertools
    import shlex

    from fake_data import fake_mode, write_evaluation

    calibrate = _load("calibrate_synthetic")
    scores = {"rgb": (0.50, 0.70), "cmx": (0.55, 0.80)}  # (test, train) of each model's every seed
    commands = []

    def fake_sh(cmd: str, log: Path) -> float:
        commands.append(cmd)
        words = shlex.split(cmd)
        arg = dict(itertools.pairwise(words))
        if words[1] == "prepare":
            (Path(arg["--out"]) / "meta.json").parent.mkdir(parents=True, exist_ok=True)
            (Path(arg["--out"]) / "meta.json").write_text("{}")
        elif words[1] == "train":
            Path(arg["--out-dir"]).mkdir(parents=True, exist_ok=True)
            (Path(arg["--out-dir"]) / "train.json").write_text(json.dumps({"train_seconds": 7.0}))
        elif words[1] == "evaluate":
            test, train = scores[Path(arg["--out"]).parent.name.rsplit("_s", 1)[0]]
            write_evaluation(Path(arg["--out"]), {"single": fake_mode({None: test})})
            write_evaluation(Path(arg["--train-out"]), {"single": fake_mode({None: train})}, split="train")
        return 1.0

    monkeypatch.setattr(calibrate, "_sh", fake_sh)
    result = calibrate.run_round({"name": "rT", "seeds": [0], "models": ["rgb", "cmx"], "parallel": 1}, tmp_path)
    assert sum("--train-out" in c for c in commands if " evaluate " in c) == 2
    saved = json.loads((tmp_path / "rT" / "result.json").read_text())
    assert saved["runs"]["cmx_s0"]["miou"] == 0.55 and saved["runs"]["cmx_s0"]["train_miou"] == 0.80
    assert saved["runs"]["cmx_s0"]["train_gap"] == pytest.approx(0.25)
    assert saved["summary"]["cmx_train_gap"] == pytest.approx(25.0) and saved["summary"]["ratio"] == pytest.approx(
        50 / 55)
    assert json.loads(json.dumps(result["summary"])) == saved["summary"]  # tuples saved as lists
    assert capsys.readouterr().out.endswith("  CMX train − test: +25.0 (met); target >= +15\n")
