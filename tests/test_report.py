"""Report stage: tables with ours / paper / Δ worked out by hand, seeds, missing runs, FLOP counting, the CLI.

The fake results follow the pipeline's layout: ``eval/<run>.json`` as written by ``primkd evaluate`` (overall
metrics plus ``per_seed``) and ``models/<run>/seed<k>/train.json`` (students) or ``models/<run>/train.json``
(teachers).
"""

import argparse
import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from torch.nn.attention import SDPBackend, sdpa_kernel

from primkd.cli_report import register
from primkd.io import DataError
from primkd.models.segmentors import build_student, count_parameters
from primkd.report.run import build_report, collect_runs, count_macs, measure_complexity
from primkd.report.tables import Stat, latex_escape, load_paper

REPO = Path(__file__).resolve().parents[1]

PAPER = {
    "source": "test paper",
    "default_setting": "nyuv2_b4",
    "settings": {"nyuv2_b4": {"dataset": "NYU", "backbone": "MiT-B4", "input": [32, 48]}},
    "tables": {
        "table1": {"title": "Runs", "row_header": "Run", "caption": "Hand-checked.",
                   "columns": [{"key": "miou", "label": "mIoU (%)", "source": "eval", "scale": 100, "digits": 1}],
                   "rows": [{"label": "one seed", "run": "a", "paper": {"miou": 48.0}},
                            {"label": "two seeds", "run": "b", "paper": {"miou": 50.0}},
                            {"label": "missing", "run": "c", "paper": {"miou": 40.0}},
                            {"label": "α = 1", "run": "a", "paper": {"miou": None}}]},
        "table2": {"title": "Size", "row_header": "Run", "caption": "Parameters.",
                   "columns": [{"key": "params_m", "label": "Params (M)", "source": "complexity", "digits": 4}],
                   "rows": [{"label": "b", "run": "b", "paper": {"params_m": None}}]},
        "table8": {"title": "CKA", "row_header": "Pair", "caption": "CKA.",
                   "columns": [{"key": "stage1", "label": "stage 1", "source": "cka", "digits": 3},
                               {"key": "stage2", "label": "stage 2", "source": "cka", "digits": 3}],
                   "rows": [{"label": "a vs rgb", "student": "a", "reference": "rgb",
                             "paper": {"stage1": 0.5, "stage2": None}}]},
    },
    "figure1": {"title": "Fig", "row_header": "Model", "caption": "F", "by_setting": True,
                "columns": [{"key": "miou", "label": "mIoU (%)", "source": "eval", "scale": 100, "digits": 1}],
                "rows": [{"label": "A", "run": "a", "paper": {"nyuv2_b4": {"miou": 45.0}}},
                         {"label": "C", "run": "c", "paper": {}}]},
}


def write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def evaluation(per_seed: dict) -> dict:
    """An evaluation JSON of ``primkd evaluate`` from ``{seed: miou}`` (macc 0.6, pacc 0.7, two classes)."""
    mious = list(per_seed.values())
    mean = sum(mious) / len(mious)
    std = (sum((m - mean) ** 2 for m in mious) / len(mious)) ** 0.5  # population std, as evaluate writes it
    return {"model": "x", "miou": mean, "miou_std": std, "macc": 0.6, "macc_std": 0.0, "pacc": 0.7, "pacc_std": 0.0,
            "iou": {"c0": 0.4, "c1": 0.6}, "seeds": [s for s in per_seed if s is not None],
            "per_seed": [{"seed": s, "miou": m, "macc": 0.6, "pacc": 0.7} for s, m in per_seed.items()]}


def write_results(root: Path) -> Path:
    """results/<preset>: run a trained once (a teacher), run b with seeds 0 and 1 (a student), and cka.json."""
    write_json(root / "eval" / "a.json", evaluation({None: 0.50}))
    write_json(root / "models" / "a" / "train.json", {"backbone": "mit_tiny", "seed": 0, "epochs": 2,
                                                      "train_seconds": 12.0})
    # The file's own miou_std is the population std (1.0 point); the tables recompute the sample std (1.4).
    write_json(root / "eval" / "b.json", evaluation({0: 0.50, 1: 0.52}))
    for seed, seconds in ((0, 10.0), (1, 14.0)):
        write_json(root / "models" / "b" / f"seed{seed}" / "train.json", {"backbone": "mit_tiny", "seed": seed,
                                                                         "epochs": 2, "train_seconds": seconds})
    (root / "analysis").mkdir()
    rows = [{"student": "a", "reference": "rgb", "stage": s, "cka": v, "samples": 10}
            for s, v in [(1, 0.625), (2, 0.9)]]
    (root / "analysis" / "cka.json").write_text(json.dumps({"rows": rows}))
    return root


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """One report over the fake results, shared by the tests that read it (none of them writes)."""
    tmp_path = tmp_path_factory.mktemp("report")
    paper = tmp_path / "paper.yaml"
    paper.write_text(yaml.safe_dump(PAPER, allow_unicode=True))
    results = write_results(tmp_path / "results" / "demo")
    out = build_report(results, "demo", results / "report", paper_path=paper, report_path=results / "REPORT.md",
                       decoder_embed_dim=16)
    return results, out


def test_markdown_cells_by_hand(report):
    results, _ = report
    md = (results / "report" / "tables" / "table1.md").read_text().splitlines()
    assert md[0] == "| Run | mIoU (%) ours | mIoU (%) paper | mIoU (%) Δ |"
    assert md[2] == "| one seed | 50.0 | 48.0 | +2.0 |"
    # Seeds 0.50 and 0.52: mean 51.0, sample std sqrt(2 · 1²) = 1.414 → 1.4 (not the file's population std 1.0).
    assert md[3] == "| two seeds | 51.0 ± 1.4 | 50.0 | +1.0 |"
    assert md[4] == "| missing | — | 40.0 | — |"
    assert md[5] == "| α = 1 | 50.0 | — | — |"
    notes = "\n".join(md[6:])
    assert "/eval for `c`: run their evaluate stages" in notes and "two seeds (n = 2)" in notes
    assert "α = 1 (mIoU (%))" in notes


def test_csv_cells_by_hand(report):
    results, _ = report
    rows = list(csv.DictReader((results / "report" / "tables" / "table1.csv").open()))
    assert rows[0] == {"row": "one seed", "miou_ours": "50.0", "miou_ours_std": "", "miou_seeds": "1",
                       "miou_paper": "48.0", "miou_delta": "2.0"}
    assert rows[1]["miou_ours"] == "51.0" and rows[1]["miou_ours_std"] == "1.414214" and rows[1]["miou_seeds"] == "2"
    assert rows[1]["miou_delta"] == "1.0"
    assert rows[2]["miou_ours"] == "" and rows[2]["miou_seeds"] == "0" and rows[2]["miou_delta"] == ""


def test_latex_cells_by_hand(report):
    results, _ = report
    tex = (results / "report" / "tables" / "table1.tex").read_text()
    assert r"Run & \multicolumn{3}{c}{mIoU (\%)} \\" in tex
    assert r"two seeds & $51.0 \pm 1.4$ & $50.0$ & $+1.0$ \\" in tex
    assert r"missing & -- & $40.0$ & -- \\" in tex
    assert r"$\alpha$ = 1 & $50.0$ & -- & -- \\" in tex
    assert tex.startswith(r"\begin{table}") and tex.rstrip().endswith(r"\end{table}")


def test_cka_table_and_report_markdown(report):
    results, out = report
    md = (results / "report" / "tables" / "table8.md").read_text().splitlines()
    assert md[2] == "| a vs rgb | 0.625 | 0.500 | +0.125 | 0.900 | — | — |"
    text = (results / "REPORT.md").read_text()
    assert "## Table 1: Runs" in text and "| two seeds | 51.0 ± 1.4 | 50.0 | +1.0 |" in text
    assert "not one of the paper's settings" in text  # preset demo compared with the default setting
    # Figure 1 row C has no run: the figure still draws, with the table's note under it.
    assert "![Figure 1: single-modal models, CMX and PrimKD](report/figure1.png)\n\n- no evaluation in" in text
    assert "## Figure 3: qualitative predictions\n\nNot found: run the analyze stage." in text
    assert "| `a` | once (seed 0) | mit_tiny | 2 | 12 | 50.0 |" in text  # runs table: mean train time over seeds
    assert "| `b` | 0, 1 | mit_tiny | 2 | 12 | 51.0 ± 1.4 |" in text
    assert all(Path(p).is_file() for p in out["figure1"])


def test_missing_everything_still_reports(tmp_path):
    out = build_report(tmp_path / "empty", "nyuv2_b4", tmp_path / "rep")
    md = Path(out["tables"]["table2"][0]).read_text()
    assert "| PrimKD | — | 57.8 | — |" in md  # the abstract's NYU result, compared in its own setting
    assert "| CMX | — | 56.3 | — | — | 139.9 | — |" in md  # 57.8 − 1.5, the abstract's margin over CMX-B4
    assert "no evaluation" in md
    assert "not one of the paper's settings" not in Path(out["report"]).read_text()


def test_collect_runs_expands_seeds(tmp_path):
    runs = collect_runs(write_results(tmp_path))
    assert [(r.seed, r.metrics["miou"], r.train["train_seconds"]) for r in runs["b"]] == [(0, 0.50, 10.0),
                                                                                         (1, 0.52, 14.0)]
    (a,) = runs["a"]
    assert a.seed is None and a.metrics == {"miou": 0.50, "macc": 0.6, "pacc": 0.7} and a.train["epochs"] == 2
    assert a.num_classes == 2


def test_collect_runs_without_per_seed_or_train_json(tmp_path):
    write_json(tmp_path / "eval" / "imported.json", {"miou": 0.4, "macc": 0.5, "pacc": 0.6})
    (run,) = collect_runs(tmp_path)["imported"]
    assert run.seed is None and run.metrics["miou"] == 0.4 and run.train is None and run.num_classes is None
    write_json(tmp_path / "eval" / "bad.json", {**evaluation({0: 0.5}), "per_seed": [{"seed": "0", "miou": 0.5}]})
    with pytest.raises(DataError, match=r"bad\.json: per_seed has seed '0'"):
        collect_runs(tmp_path)


def test_complexity_reads_a_seed_folder_train_json(report):
    results, _ = report
    md = (results / "report" / "tables" / "table2.md").read_text().splitlines()
    params = count_parameters(build_student("mit_tiny", 2, decoder_embed_dim=16)) / 1e6  # backbone of seed0, 2 classes
    assert md[2] == f"| b | {params:.4f} | — | — |"


def test_stat_sample_std():
    assert Stat.of([1.0, 2.0, 3.0]) == Stat(2.0, 1.0, 3)
    assert Stat.of([4.0]) == Stat(4.0, None, 1)
    assert Stat.of([]) is None


def test_count_macs_of_a_tiny_conv_net_by_hand():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, bias=False), torch.nn.Flatten(),
                              torch.nn.Linear(4 * 8 * 8, 10))
    # Conv: 4 output channels × 8·8 positions × (3 input channels · 3 · 3) = 6912; linear: 256 · 10 = 2560.
    assert count_macs(net, torch.zeros(1, 3, 8, 8)) == 6912 + 2560
    assert count_macs(net, torch.zeros(2, 3, 8, 8)) == 2 * (6912 + 2560)


def test_measure_complexity_on_the_meta_device():
    tiny = measure_complexity("mit_tiny", 3, 32, 48, decoder_embed_dim=16)
    assert tiny["params"] == count_parameters(build_student("mit_tiny", 3, decoder_embed_dim=16))
    # On the meta device attention runs the math path (two batched matmuls), as it does on CPU with that backend;
    # the CPU's fused attention kernel has no FLOP formula and would be missed.
    x = torch.zeros(1, 3, 32, 48)
    with sdpa_kernel(SDPBackend.MATH):
        assert count_macs(build_student("mit_tiny", 3, decoder_embed_dim=16).eval(), x, x) == tiny["macs"]
    b2 = measure_complexity("mit_b2", 40, 480, 640)
    assert round(b2["params"] / 1e6, 1) == 66.6  # CMX-B2 in the paper's Table 2


def test_packaged_paper_file():
    paper = load_paper()
    assert list(paper.tables) == [f"table{i}" for i in range(1, 9)]
    assert paper.setting_for("sunrgbd_b4") == "sunrgbd_b4" and paper.setting_for("demo") == "nyuv2_b4"
    t2 = paper.tables["table2"]
    primkd = next(r for r in t2.rows if r.run == "primkd")
    assert t2.paper_value(primkd, t2.columns[0], "nyuv2_b4") == 57.8
    assert t2.paper_value(primkd, t2.columns[0], "sunrgbd_b4") == 52.5
    cmx = next(r for r in t2.rows if r.run == "cmx")
    assert t2.paper_value(cmx, t2.columns[0], "nyuv2_b4") == 56.3  # 57.8 − 1.5 (abstract)
    assert t2.paper_value(cmx, t2.columns[0], "sunrgbd_b4") == 52.1  # 52.5 − 0.4 (abstract)
    assert t2.paper_value(cmx, t2.columns[0], "nyuv2_b2") is None


def test_paper_runs_are_pipeline_runs():
    """Every run a table names is trained by the pipeline (a teacher, cmx or an experiment of params.yaml), and
    every experiment appears in some table."""
    paper = load_paper()
    experiments = set(yaml.safe_load((REPO / "params.yaml").read_text())["experiments"])
    rows = [*(r for t in paper.tables.values() for r in t.rows), *paper.figure1.rows]
    runs = {r.run for r in rows if r.run} | {r.student for r in rows if r.student}
    assert runs - {"teacher_rgb", "teacher_depth", "cmx"} <= experiments, runs - experiments
    assert experiments <= runs, f"experiments in no table of paper.yaml: {sorted(experiments - runs)}"


def test_paper_file_errors_name_the_key(tmp_path):
    bad = json.loads(json.dumps(PAPER))
    bad["tables"]["table1"]["rows"][0]["paper"] = {"mIoU": 48.0}
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(DataError, match=r"table1: row 'one seed' has paper values .*\['mIoU'\]"):
        load_paper(path)


def test_latex_escape():
    assert latex_escape("a_b & 5% β") == r"a\_b \& 5\% $\beta$"


def test_report_command_line(tmp_path):
    results = write_results(tmp_path / "results" / "smoke")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", "--params", str(REPO / "params.yaml"), "--preset", "smoke",
                              "--results", str(results), "--out-dir", str(results / "report"),
                              "--report", str(results / "REPORT.md")])
    args.func(args)
    assert (results / "REPORT.md").is_file() and (results / "report" / "tables" / "table7.tex").is_file()
    with pytest.raises(SystemExit):
        parser.parse_args(["analyze", "--student", "cmx", "--rgb-model", "t.pt", "--data", "d", "--out-dir", "o"])
