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
