"""primkd compare and results/<preset>/summary.json on hand-made evaluations with hand-checked statistics."""

import json
from pathlib import Path

import pytest
import yaml

from primkd.cli import main
from primkd.config import load_params
from primkd.io import DataError
from primkd.report.compare import build_summary, compare_table, write_summary

from fake_data import fake_mode, write_evaluation

PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
# Per-seed mIoU / mAcc / pAcc of each run; a teacher is trained once (seed null).
RUNS = {
    "teacher_rgb": [(None, 0.50, 0.60, 0.80)],
    "cmx": [(0, 0.40, 0.50, 0.70), (1, 0.44, 0.52, 0.72)],
    "primkd": [(0, 0.45, 0.55, 0.75), (1, 0.47, 0.55, 0.77)],
    "kd_beta_0p1": [(0, 0.41, 0.51, 0.71), (1, 0.43, 0.53, 0.73)],
}
# The train-split mIoU of the same models (eval/<run>.train.json): none for primkd and kd_beta_0p1. CMX: 63 ± 4.24,
# train − test per seed 0.20 and 0.22: +21 ± 1.41; the teacher: 55, train − test +5.
TRAIN = {"teacher_rgb": {None: 0.55}, "cmx": {0: 0.60, 1: 0.66}}


def write_results(root: Path) -> Path:
    (root / "eval").mkdir(parents=True)
    for name, seeds in RUNS.items():
        write_evaluation(root / "eval" / f"{name}.json", {"single": fake_mode({s: (a, b, c) for s, a, b, c in seeds})},
                         model=name)
    for name, seeds in TRAIN.items():
        write_evaluation(root / "eval" / f"{name}.train.json", {"single": fake_mode(seeds)}, model=name, split="train")
    (root / "eval" / "cmx_confusion.csv").write_text("not a run\n")
    return root


@pytest.fixture
def cfg():
    cfg = load_params(PARAMS, "smoke")
    cfg["seeds"] = [0, 1]
    return cfg


def test_summary_holds_seed_counts_means_sample_stds_and_defining_parameters(tmp_path, cfg):
    summary = build_summary(write_results(tmp_path / "results"), cfg)
    runs = summary["runs"]
    assert list(runs) == ["teacher_rgb", "cmx", "primkd", "kd_beta_0p1"]
    # In %, the unit in the key, as the tables print them (rounded to 4 decimals).
    assert runs["cmx"]["seeds"] == 2 and runs["cmx"]["miou_pct"] == 42.0
    assert runs["cmx"]["miou_pct_std"] == 2.8284  # sqrt(2 * 2² / 1): ddof 1
    assert runs["primkd"]["macc_pct_std"] == 0.0 and runs["primkd"]["pacc_pct"] == 76.0
    assert runs["teacher_rgb"] == {"seeds": 1, "miou_pct": 50.0, "miou_pct_std": None, "macc_pct": 60.0,
                                   "macc_pct_std": None, "pacc_pct": 80.0, "pacc_pct_std": None,
                                   "train_miou_pct": 55.0, "train_miou_pct_std": None, "train_gap_miou_pct": 5.0,
                                   "train_gap_miou_pct_std": None, "params": {"role": "teacher", "input": "rgb"}}
    # The train split: its own file per run, not a run of its own; the gap taken seed by seed.
    assert (runs["cmx"]["train_miou_pct"], runs["cmx"]["train_miou_pct_std"]) == (63.0, 4.2426)
    assert (runs["cmx"]["train_gap_miou_pct"], runs["cmx"]["train_gap_miou_pct_std"]) == (21.0, 1.4142)
    assert runs["primkd"]["train_miou_pct"] is None and runs["primkd"]["train_gap_miou_pct"] is None
    assert runs["kd_beta_0p1"]["params"] == {"role": "student", "distillation": True, "teacher": "rgb",
                                             "kd.beta": 0.1}
    assert runs["primkd"]["params"] == {"role": "student", "distillation": True, "teacher": "rgb"}
    assert summary["params"]["backbone"] == "mit_tiny" and summary["params"]["kd"]["beta"] == 0.05


def test_compare_table_rows(tmp_path, cfg):
    table = compare_table(build_summary(write_results(tmp_path / "results"), cfg))
    rows = {line.split(" | ")[0].lstrip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert rows["run"] == ("| run | changed parameters | seeds | mIoU % | mAcc % | pAcc % | train mIoU % "
                           "| train − test | Δ mIoU vs cmx [95% interval] |")
    assert rows["cmx"] == ("| cmx | no distillation (baseline) | 2 | 42.00 ± 2.83 | 51.00 ± 1.41 | 71.00 ± 1.41 "
                           "| 63.00 ± 4.24 | +21.00 ± 1.41 | — |")
    assert rows["primkd"] == ("| primkd | kd as in params.yaml | 2 | 46.00 ± 1.41 | 55.00 ± 0.00 | 76.00 ± 1.41 "
                              "| — | — | +4.00 |")
    assert rows["kd_beta_0p1"].startswith("| kd_beta_0p1 | kd.beta=0.1 | 2 | 42.00 ± 1.41 |")
    assert rows["teacher_rgb"] == ("| teacher_rgb | teacher, rgb input | 1 | 50.00 | 60.00 | 80.00 | 55.00 | +5.00 "
                                   "| +8.00 |")
    assert set(rows) == {"run", "teacher_rgb", "cmx", "primkd", "kd_beta_0p1"}  # no `cmx.train` row
    assert table.startswith("preset smoke: mit_tiny, 2 epochs, batch 4, lr 0.001, seeds [0, 1]; evaluation single "
                            "scale; kd: alpha 1.0, beta 0.05")


def test_cli_prints_the_table_and_writes_the_summary(tmp_path, capsys, cfg):
    results = write_results(tmp_path / "results")
    main(["compare", "--params", str(PARAMS), "--preset", "smoke", "--results", str(results),
          "--summary", str(results / "summary.json")])
    assert "| kd_beta_0p1 | kd.beta=0.1 | 2 |" in capsys.readouterr().out
    cfg["seeds"] = load_params(PARAMS, "smoke")["seeds"]  # the CLI reads params.yaml as it is
    assert json.loads((results / "summary.json").read_text()) == build_summary(results, cfg)
    assert write_summary(results, cfg) == results / "summary.json"


def test_cli_draws_the_curves(tmp_path, capsys):
    results = write_results(tmp_path / "results")
    run = results / "models" / "cmx" / "seed0"
    run.mkdir(parents=True)
    (run / "curves.csv").write_text("epoch,loss\n1,2.0\n2,1.5\n")
    (run / "eval_curve.csv").write_text("epoch,miou\n2,0.4\n")
    main(["compare", "--params", str(PARAMS), "--preset", "smoke", "--results", str(results),
          "--curves", str(tmp_path / "plots")])
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["ablation.png", "cmx.png"]


def test_missing_results_name_the_folder(tmp_path, cfg):
    with pytest.raises(DataError, match="eval: no evaluations found; run the pipeline first"):
        build_summary(tmp_path, cfg)


def test_check_params_names_the_valid_presets(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(PARAMS.read_text().replace("\npreset: demo", "\npreset: dmeo", 1))
    with pytest.raises(SystemExit) as stop:
        main(["check-params", "--params", str(params)])
    assert stop.value.code == 2
    valid = ", ".join(sorted(yaml.safe_load(PARAMS.read_text())["presets"]))
    assert f"preset 'dmeo' is not defined under `presets` in params.yaml; choose one of: {valid}" in (
        capsys.readouterr().err)
    main(["check-params", "--params", str(PARAMS), "--preset", "smoke"])
    assert capsys.readouterr().out == f"{PARAMS}: valid; preset smoke\n"


def test_headline_shows_the_train_split_and_the_gap(tmp_path):
    from primkd.report.compare import headline

    text = headline(write_results(tmp_path / "results"))
    assert text.splitlines()[-3:] == [
        "Train-split mIoU (%) of the same models, and train − test (points; far above 0: data-limited, near 0: "
        "compute-limited):",
        "  RGB teacher    55.00   train − test +5.00",
        "  CMX            63.00 ± 4.24   train − test +21.00 ± 1.41"]
    assert text.splitlines()[2] == "  CMX            42.00 ± 2.83 (2 seeds)"
