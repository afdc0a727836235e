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
import yaml
from conftest import PAPER_TABLES

from primkd.cli.report import register
from primkd.io import DataError
from primkd.models.segmentors import build_student, count_parameters
from primkd.report.run import build_report, collect_runs
from primkd.report.tables import Stat, latex_escape, load_paper

from fake_data import fake_mode, write_evaluation

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


def write_results(root: Path) -> Path:
    """results/<preset>: run a trained once (a teacher), run b with seeds 0 and 1 (a student), and cka.json."""
    write_evaluation(root / "eval" / "a.json", {"single": fake_mode({None: 0.50})})
    write_json(root / "models" / "a" / "train.json", {"backbone": "mit_tiny", "seed": 0, "epochs": 2,
                                                      "train_seconds": 12.0})
    write_evaluation(root / "eval" / "b.json", {"single": fake_mode({0: 0.50, 1: 0.52})})
    # b on its train split: 72.5 ± 3.5; train − test per seed 0.20, 0.23: +21.5 ± 2.1. a has none.
    write_evaluation(root / "eval" / "b.train.json", {"single": fake_mode({0: 0.70, 1: 0.75})}, split="train")
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
    out = build_report(results, "nyuv2_b4", results / "report", paper_path=paper, report_path=results / "REPORT.md",
                       decoder_embed_dim=16)
    return results, out


def test_markdown_cells_by_hand(report):
    results, _ = report
    md = (results / "report" / "tables" / "table1.md").read_text().splitlines()
    assert md[0] == "| Run | mIoU (%) ours | mIoU (%) paper | mIoU (%) Δ |"
    assert md[2] == "| one seed | 50.0 | 48.0 | +2.0 |"
    # Seeds 0.50 and 0.52: mean 51.0, sample std sqrt(2 · 1²) = 1.414 → 1.4.
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
    assert "is in the paper's NYU, MiT-B4 setting (`nyuv2_b4`): Δ is printed" in text
    assert "Ours: single-scale (scale 1, no flip), the last epoch." in text  # the caption states the mode used
    # Figure 1 row C has no run: the figure still draws, with the table's note under it.
    assert "![Figure 1: single-modal models, CMX and PrimKD](report/figure1.png)\n\n- no evaluation in" in text
    assert "## Figure 3: qualitative predictions\n\nNot found: run the analyze stage." in text
    # runs table: mean train time over seeds, the train split and train − test where evaluated
    assert "| `a` | once (seed 0) | mit_tiny | 2 | 12 | 50.0 | — | — | — | — |" in text
    assert "| `b` | 0, 1 | mit_tiny | 2 | 12 | 51.0 ± 1.4 | 72.5 ± 3.5 | +21.5 ± 2.1 | — | — |" in text
    assert "- mIoU (%) train split: the last epoch's models scored single-scale on their own training images" in text
    assert "b.train" not in text.replace("eval/<run>.train.json", "")  # the train split is no run of its own
    assert all(Path(p).is_file() for p in out["figure1"])


def test_missing_everything_still_reports(tmp_path):
    out = build_report(tmp_path / "empty", "nyuv2_b4", tmp_path / "rep")
    md = Path(out["tables"]["table2"][0]).read_text()
    assert "| PrimKD | — | 57.8 | — |" in md  # the abstract's NYU result, compared in its own setting
    assert "| CMX | — | 56.3 | — | — | 139.9 | — |" in md  # 57.8 − 1.5, the abstract's margin over CMX-B4
    assert "no multi-scale + flip evaluation in" in md  # Table 2 reads the multi-scale block
    assert "not one of the paper's settings" not in Path(out["report"]).read_text()


def test_collect_runs_expands_seeds(tmp_path):
    runs = collect_runs(write_results(tmp_path))
    assert [(r.seed, r.metrics["miou"], r.train["train_seconds"]) for r in runs["b"]] == [(0, 0.50, 10.0),
                                                                                         (1, 0.52, 14.0)]
    (a,) = runs["a"]
    assert a.seed is None and a.metrics == {"miou": 0.50, "macc": 0.6, "pacc": 0.7} and a.train["epochs"] == 2
    assert a.num_classes == 2


def test_collect_runs_refuses_an_evaluation_of_another_layout(tmp_path):
    write_json(tmp_path / "eval" / "old.json", {"miou": 0.4, "macc": 0.5, "pacc": 0.6})  # before the schema
    with pytest.raises(DataError, match=r"old\.json: not an evaluation of this version \(no `last.single` block"):
        collect_runs(tmp_path)
    bad = {"last": {"single": {"scales": [1.0], "flip": False, "per_seed": [{"seed": "0", "miou_pct": 50.0}]}}}
    write_json(tmp_path / "eval" / "old.json", bad)
    with pytest.raises(DataError, match=r"old\.json: per_seed has seed '0'"):
        collect_runs(tmp_path)
    write_json(tmp_path / "eval" / "old.json", {"last": {"single": {"scales": [1.0], "flip": False}}})
    with pytest.raises(DataError, match=r"old\.json: incomplete evaluation \(KeyError: 'per_seed'\)"):
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


def test_packaged_paper_file():
    paper = load_paper()
    assert list(paper.tables) == [f"table{i}" for i in range(1, 9)]
    assert paper.match("sunrgbd_b4") == "sunrgbd_b4" and paper.match("demo") is None
    t2 = paper.tables["table2"]
    primkd = next(r for r in t2.rows if r.run == "primkd")
    assert t2.paper_value(primkd, t2.columns[0], "nyuv2_b4") == 57.8
    assert t2.paper_value(primkd, t2.columns[0], "sunrgbd_b4") == 52.5
    cmx = next(r for r in t2.rows if r.run == "cmx")
    assert t2.paper_value(cmx, t2.columns[0], "nyuv2_b4") == 56.3  # 57.8 − 1.5 (abstract)
    assert t2.paper_value(cmx, t2.columns[0], "sunrgbd_b4") == 52.1  # 52.5 − 0.4 (abstract)
    assert t2.paper_value(cmx, t2.columns[0], "nyuv2_b2") == 54.4
    assert t2.paper_value(cmx, t2.columns[1], "sunrgbd_b4") is None  # the SUN-RGBD table prints no parameters
    assert t2.eval_mode == "multi_scale_flip" and paper.tables["table4"].eval_mode == "single"
    assert paper.match("nyuv2_b4_official", "nyuv2", "mit_b4") == "nyuv2_b4"
    assert paper.match("demo", "synthetic", "mit_nano") is None


def test_every_paper_number_is_in_the_report_file():
    """Each number of the paper's transcription (tests/paper/primkd_tables.yaml, a copy of the shared one) sits in its
    table and row of paper.yaml."""
    src, paper = yaml.safe_load(PAPER_TABLES.read_text()), load_paper()
    value = lambda table, label, key="miou", setting=None: paper.tables[table].paper_value(  # noqa: E731
        next(r for r in paper.tables[table].rows if r.label == label),
        next(c for c in paper.tables[table].columns if c.key == key), setting)
    t1 = src["table1_teacher_modality"]
    assert [value("table1", lb) for lb in ("none (CMX)", "depth", "RGB (PrimKD)")] == [t1["none"], t1["depth"],
                                                                                       t1["rgb"]]
    for dataset in ("nyuv2", "sunrgbd"):
        for r in src["table2_main"][dataset]:
            ours = r["model"] in ("CMX", "PrimKD") and r["backbone"] in ("MiT-B2", "MiT-B4")
            label = r["model"] if ours else f"{r['model']} ({r['backbone']})"
            settings = [f"{dataset}_{r['backbone'][-2:].lower()}"] if ours else [f"{dataset}_b2", f"{dataset}_b4"]
            for setting in settings:
                for key, col in (("miou", "miou"), ("params", "params_m"), ("flops", "gflops")):
                    assert value("table2", label, col, setting) == r.get(key), (label, setting, key)
    t3 = {(r["prediction"], r["feature"]): r["miou"] for r in src["table3_guidance"]}
    assert [value("table3", lb) for lb in ("none (CMX)", "prediction only", "feature only",
                                            "prediction + feature (PrimKD)")] == [t3[(False, False)], t3[(True, False)],
                                                                                   t3[(False, True)], t3[(True, True)]]
    t4 = src["table4_stage_selection"]
    labels4 = {"stage 1": "stage1", "stage 2": "stage2", "stage 3": "stage3", "stage 4": "stage4",
               "average": "average", "minimum": "minimum", "maximum": "maximum"}
    assert {lb: value("table4", lb) for lb in labels4} == {lb: t4[k] for lb, k in labels4.items()}
    t5 = src["table5_aligner"]
    assert (value("table5", "single layer"), value("table5", "multi layer")) == (t5["single_layer"],
                                                                                 t5["multi_layer"])
    assert [value("table6", f"α = {a}") for a in ("0.01", "0.1", "1")] == [src["table6_alpha"][k] for k in
                                                                             (0.01, 0.1, 1)]
    assert [value("table7", f"β = {b}") for b in ("0.01", "0.05", "0.1", "1")] == [src["table7_beta"][k] for k in
                                                                                    (0.01, 0.05, 0.1, 1)]
    t8 = paper.tables["table8"]
    for row in t8.rows:
        ref = {"rgb": "vs_rgb_model", "depth": "vs_depth_model"}[row.reference]
        assert [t8.paper_value(row, c, None) for c in t8.columns] == src["table8_cka"][ref][row.student]


def test_paper_runs_are_pipeline_runs():
    """Every run a table names is trained by the pipeline (a teacher, cmx or an experiment of params.yaml) or is a
    released checkpoint of eval.released, and every experiment appears in some table."""
    from primkd.engine.released import released_name

    paper = load_paper()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    experiments = set(params["experiments"])
    rows = [*(r for t in paper.tables.values() for r in t.rows), *paper.figure1.rows]
    runs = {r.run for r in rows if r.run} | {r.student for r in rows if r.student}
    released = {released_name(entry) for entry in params["eval"]["released"]}
    assert {r.run for r in rows if r.released} == released
    assert runs - {"teacher_rgb", "teacher_depth", "cmx"} - released <= experiments, runs - experiments
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


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_rebuilding_the_report_from_the_same_results_changes_no_byte(tmp_path, monkeypatch):
    """The report command (tables, Figure 1 PNG/PDF, REPORT.md, summary.json, training curves) twice over the same
    results, the clock moved by years in between (SOURCE_DATE_EPOCH is the time matplotlib stamps into a PDF): every
    output file is byte-identical, so a rebuild shows DVC and a reviewer no false difference."""
    results = write_results(tmp_path / "results" / "smoke")
    for folder, losses in (("a", [2.0, 1.0]), ("b/seed0", [3.0, 2.0]), ("b/seed1", [2.5, 1.5])):
        (results / "models" / folder / "curves.csv").write_text(
            "epoch,lr,loss,seg,pred,feat\n" + "".join(f"{e + 1},0.001,{v},{v / 2},0.0,0.0\n"
                                                     for e, v in enumerate(losses)))
        (results / "models" / folder / "eval_curve.csv").write_text("epoch,miou,macc,pacc\n2,0.5,0.6,0.7\n")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", "--params", str(REPO / "params.yaml"), "--preset", "smoke",
                              "--results", str(results), "--out-dir", str(results / "report"),
                              "--report", str(results / "REPORT.md"), "--summary", str(results / "summary.json"),
                              "--curves", str(results / "report" / "curves")])
    builds = []
    for epoch in ("1000000000", "1900000000"):
        monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
        args.func(args)
        builds.append(tree_bytes(results))
    names = set(builds[0])
    assert {"REPORT.md", "summary.json", "report/figure1.pdf", "report/figure1.png", "report/tables/table1.csv",
            "report/curves/a.png", "report/curves/ablation.png"} <= names
    assert builds[0].keys() == builds[1].keys()
    assert [name for name in sorted(names) if builds[0][name] != builds[1][name]] == []


def test_modes_checkpoints_and_settings_of_the_packaged_tables(tmp_path):
    """Smoke preset: every table shows the paper column, no Δ (another setting); Table 2 reads the multi-scale block,
    the ablations the single-scale one; eval.checkpoint best reads the best-epoch block; the official preset fills
    each row with the run that has its kd settings."""
    from primkd.config import load_params
    from primkd.report.run import resolve_run
    from primkd.report.tables import Row

    results = tmp_path / "results" / "smoke"
    multi = fake_mode({0: 0.30}, 0.4, 0.5, scales=(0.5, 1.0, 1.5), flip=True)
    best = {"single": fake_mode({0: 0.45}, epochs={0: 1}),
            "multi_scale_flip": fake_mode({0: 0.35}, scales=(0.5, 1.0, 1.5), flip=True, epochs={0: 1})}
    for run in ("cmx", "primkd", "kd_aligner_single"):
        last = {"single": fake_mode({0: 0.40}), "multi_scale_flip": multi}
        write_evaluation(results / "eval" / f"{run}.json", last, best)
    cfg = load_params(REPO / "params.yaml", "smoke")
    out = build_report(results, "smoke", results / "report", decoder_embed_dim=16, cfg=cfg)
    t2 = Path(out["tables"]["table2"][0]).read_text().splitlines()
    assert t2[2].startswith("| CMX | 30.0 | 56.3 | — |")  # multi-scale block, NYU MiT-B4 paper value, no Δ
    assert "| ACNet (ResNet-50) | — | 48.3 | — |" in t2[5]
    assert t2[4].startswith("| CMX, MiT-B2 (released checkpoint) | — | 54.4 | — |")  # not evaluated here
    assert any("Δ omitted: the paper measured these numbers in NYU Depth V2 with MiT-B4" in line for line in t2)
    t5 = Path(out["tables"]["table5"][0]).read_text().splitlines()
    assert t5[2] == "| single layer | 40.0 | 57.2 | — |" and t5[3] == "| multi layer | 40.0 | 57.5 | — |"
    report = Path(out["report"]).read_text()
    assert "Ours: multi-scale (scales 0.5, 1, 1.5) + flip, the last epoch." in report
    # both checkpoints in the runs table
    assert "| `primkd` | 0 | — | — | — | 40.0 | — | — | 45.0 (epoch 1) |" in report
    assert "Ours: single-scale (scale 1, no flip), the last epoch." in report
    single_modal = {"RGB only (the teacher)", "RGB only (released checkpoint)"}  # Table 1: no paper value
    for key in ("table1", "table3", "table4", "table5", "table6", "table7", "table8"):  # every paper cell filled
        assert all(cell != "" for row in csv.DictReader(Path(out["tables"][key][1]).open())
                   for k, cell in row.items() if k.endswith("_paper") and row["row"] not in single_modal)
    # The best test-split epoch (test-set selection), when eval.checkpoint asks for it.
    cfg["eval"]["checkpoint"] = "best"
    out = build_report(results, "smoke", tmp_path / "best", decoder_embed_dim=16, cfg=cfg)
    assert Path(out["tables"]["table5"][0]).read_text().splitlines()[2] == "| single layer | 45.0 | 57.2 | — |"
    assert "the best test-split epoch (test-set selection, the official practice)" in Path(out["report"]).read_text()
    # The official preset: primkd has the single aligner, so no run has Table 5's multi-layer settings.
    official = load_params(REPO / "params.yaml", "nyuv2_b4_official")
    multi_row = Row(label="multi layer", run="primkd", kd={"aligner": "multi"})
    run, note = resolve_run(multi_row, official)
    assert run is None and "no experiment of this preset has the kd settings of the row (aligner: multi" in note
    assert resolve_run(Row(label="single layer", run="kd_aligner_single", kd={"aligner": "single"}), official) == (
        "kd_aligner_single", None)
    assert resolve_run(Row(label="β = 0.1", run="kd_beta_0p1", kd={"beta": 0.1}), official)[0] == "kd_beta_0p1"
    assert resolve_run(Row(label="β = 0.05", run="primkd", kd={"beta": 0.05}), official)[0] is None
    assert resolve_run(multi_row, load_params(REPO / "params.yaml", "smoke")) == ("primkd", None)


def test_official_preset_compares_in_its_setting_without_multi_scale_delta(tmp_path):
    from primkd.config import load_params

    results = tmp_path / "results" / "nyuv2_b4_official"
    single = fake_mode({0: 0.55})  # the released configuration tests single-scale: both blocks are scale 1
    both = {"single": single, "multi_scale_flip": single}
    write_evaluation(results / "eval" / "primkd.json", both, both)
    cfg = load_params(REPO / "params.yaml", "nyuv2_b4_official")
    out = build_report(results, "nyuv2_b4_official", results / "report", decoder_embed_dim=16, cfg=cfg)
    t2 = Path(out["tables"]["table2"][0]).read_text()
    assert "| PrimKD | 55.0 | 57.8 | — |" in t2 and "this preset tests single-scale" in t2
    t1 = Path(out["tables"]["table1"][0]).read_text()
    assert "| RGB (PrimKD) | 55.0 | 57.5 | -2.5 |" in t1  # NYU, MiT-B4: the ablation setting, Δ printed


@pytest.mark.parametrize("epochs, warned", [(2, True), (500, False)])
def test_a_schedule_shorter_than_the_papers_is_called_meaningless(tmp_path, epochs, warned):
    from primkd.config import load_params

    results = tmp_path / "results" / "nyuv2_b2"
    write_evaluation(results / "eval" / "cmx.json", {"single": fake_mode({0: 0.40}),
                                                      "multi_scale_flip": fake_mode({0: 0.40})})
    write_json(results / "models" / "cmx" / "seed0" / "train.json", {"backbone": "mit_b2", "seed": 0,
                                                                     "epochs": epochs, "train_seconds": 1.0})
    cfg = load_params(REPO / "params.yaml", "nyuv2_b2")
    out = build_report(results, "nyuv2_b2", results / "report", decoder_embed_dim=16, cfg=cfg)
    text = Path(out["report"]).read_text()
    assert ("Short schedule: these runs trained 2 epochs, the paper 500" in text) is warned
    assert ("numbers are meaningless" in text) is warned
    assert "| CMX | 40.0 |" in Path(out["tables"]["table2"][0]).read_text()  # the comparison is still filled in


def write_counts_run(results: Path, run: str, inter_single, inter_multi=None, union: int = 100,
                     checkpoint: str = "last") -> None:
    """eval/<run>.json and eval/<run>_per_image.npz from per-seed per-image intersections (S×N, one class; the
    union is ``union`` everywhere), as ``primkd evaluate`` writes them; the JSON's mIoU follows from the counts."""
    import numpy as np

    from primkd.engine.counts import Counts, write_counts

    blocks = {}
    for mode, inter in (("single", inter_single), ("multi_scale_flip", inter_multi if inter_multi is not None
                                                      else inter_single)):
        inter = np.asarray(inter)[..., None]  # (S, N, 1)
        blocks[mode] = Counts(inter, np.full_like(inter, union), tuple(range(len(inter))),
                              tuple(f"img{n}" for n in range(inter.shape[1])))
    write_counts(results / "eval" / f"{run}_per_image.npz", blocks, checkpoint)
    mious = {mode: [float(s.sum() / (union * s.size)) for s in c.intersection] for mode, c in blocks.items()}
    write_evaluation(results / "eval" / f"{run}.json",
                     {"single": fake_mode(dict(enumerate(mious["single"]))),
                      "multi_scale_flip": fake_mode(dict(enumerate(mious["multi_scale_flip"])), scales=(0.5, 1.0),
                                                    flip=True)},
                     per_image={"file": f"{run}_per_image.npz", "checkpoint": checkpoint})


def test_significance_blocks_on_constructed_results(tmp_path):
    """Known answers: CMX scores 50 + seed on every image (mIoU 50, 51, 52); PrimKD adds 0 or 20 points on alternate
    images (Δ +10 exactly, an interval inside (0, 20)); the depth-teacher student equals CMX (Δ 0, interval [0, 0]);
    prediction-only loses 5 on every image (Δ −5, interval [−5, −5]). Paper: PrimKD and prediction-only above CMX,
    depth above CMX too."""
    import numpy as np

    from primkd.config import load_params

    results = tmp_path / "results" / "smoke"
    n = 40
    base = np.array([[50 + s] * n for s in range(3)])
    gain = np.tile([0, 20], n // 2)
    write_counts_run(results, "cmx", base, inter_multi=base + 5)
    write_counts_run(results, "primkd", base + gain, inter_multi=base + 4)  # multi-scale: Δ −1 on every image
    write_counts_run(results, "kd_teacher_depth", base)
    write_counts_run(results, "kd_pred_only", base - 5)
    # evaluated before the counts
    write_evaluation(results / "eval" / "kd_aligner_single.json", {"single": fake_mode({0: 0.4})})
    cfg = load_params(REPO / "params.yaml", "smoke")
    out = build_report(results, "smoke", results / "report", decoder_embed_dim=16, cfg=cfg)

    def rows(key):
        return {r["row"]: r for r in csv.DictReader(Path(out["tables"][key][3]).open())}

    t1 = rows("table1")
    assert t1["none (CMX)"]["direction"] == "reference" and float(t1["none (CMX)"]["miou_mean"]) == 51.0
    assert float(t1["none (CMX)"]["miou_std"]) == pytest.approx(1.0) and t1["none (CMX)"]["seeds"] == "3"
    depth, rgb = t1["depth"], t1["RGB (PrimKD)"]
    assert (float(depth["delta"]), float(depth["ci_low"]), float(depth["ci_high"])) == (0.0, 0.0, 0.0)
    assert depth["direction"] == "n.s." and depth["significant"] == "False"
    assert float(depth["paper_delta"]) == pytest.approx(0.1)  # 56.2 − 56.1
    assert float(rgb["delta"]) == pytest.approx(10.0) and 0 < float(rgb["ci_low"]) < 10 < float(rgb["ci_high"]) < 20
    # Δ is a mean of ±10 deviations over 40 images: the 95% interval is about 10 ± 1.96·10/√40 = 10 ± 3.1
    assert float(rgb["ci_low"]) == pytest.approx(10 - 3.1, abs=0.6) and rgb["direction"] == "agrees"
    t2 = rows("table2")  # multi-scale counts: PrimKD is 1 point below CMX on every image, the paper 1.5 above
    assert list(t2) == ["CMX", "PrimKD"]  # the other methods have no run
    assert [float(t2["PrimKD"][k]) for k in ("delta", "ci_low", "ci_high")] == pytest.approx([-1.0, -1.0, -1.0])
    assert t2["PrimKD"]["direction"] == "disagrees" and float(t2["PrimKD"]["paper_delta"]) == pytest.approx(1.5)
    t3 = rows("table3")
    assert float(t3["prediction only"]["delta"]) == pytest.approx(-5.0)
    assert t3["prediction only"]["direction"] == "disagrees" and t3["feature only"]["direction"] == "—"
    t5 = rows("table5")  # reference: the paper's chosen setting (multi layer, i.e. primkd)
    assert t5["multi layer"]["direction"] == "reference" and float(t5["multi layer"]["miou_mean"]) == 61.0
    assert t5["single layer"]["direction"] == "—"
    md5 = Path(out["tables"]["table5"][0]).read_text()
    assert "Against **multi layer**" in md5 and "`kd_aligner_single`: no per-image counts" in md5
    md1 = Path(out["tables"]["table1"][0]).read_text()
    assert "| RGB (PrimKD) | 61.0 ± 1.0 (3) | +10.0 | [+" in md1 and "| * | +1.4 | agrees |" in md1
    assert "| depth | 51.0 ± 1.0 (3) | +0.0 | [+0.0, +0.0] |  | +0.1 | n.s. |" in md1
    assert "table8_significance.csv" not in " ".join(out["tables"]["table8"])  # CKA: no mIoU, no block
    report = Path(out["report"]).read_text()
    # Table 1: depth n.s., RGB agrees; Table 2: PrimKD disagrees; Table 3: prediction-only disagrees, PrimKD agrees;
    # feature-only, the teacher row of Table 1 and Tables 4-7's rows other than primkd have no counts (1 + 1 + 6 + 1 +
    # 2 + 3); the released checkpoints' rows are not tested.
    assert ("over 19 comparisons: **2 agree, 2 disagree**, 1 not significant, 0 without a paper value, 14 without an "
            "interval") in report
    assert "kd_stage1_per_image" not in report  # not evaluated at all: the table's own note says so, once
    runs = {line.split(" | ")[0]: line for line in report.splitlines() if line.startswith("| `")}
    assert runs["| `primkd`"].endswith(" | +10.0 [" + rgb_interval(rgb) + "] * |")
    assert runs["| `kd_teacher_depth`"].endswith(" | +0.0 [+0.0, +0.0] |") and runs["| `cmx`"].endswith(" | — |")


def rgb_interval(row: dict) -> str:
    return f"{float(row['ci_low']):+.1f}, {float(row['ci_high']):+.1f}"


def test_counts_of_another_checkpoint_give_no_interval(tmp_path):
    from primkd.config import load_params

    results = tmp_path / "results" / "smoke"
    write_counts_run(results, "cmx", [[50] * 4], checkpoint="best")
    write_counts_run(results, "primkd", [[60] * 4], checkpoint="best")
    out = build_report(results, "smoke", results / "report", decoder_embed_dim=16,
                       cfg=load_params(REPO / "params.yaml", "smoke"))
    md = Path(out["tables"]["table1"][0]).read_text()
    assert "| RGB (PrimKD) | — | — | — |  | +1.4 | — |" in md
    assert "`cmx`: its per-image counts are of the best checkpoint, the tables show the last one" in md


def test_demo_headline_and_compare_interval_on_constructed_results(tmp_path, capsys):
    """The lines make demo ends with (primkd compare --headline) and the interval in primkd compare's Δ column, on
    the known case above: CMX 51 ± 1, PrimKD 61 ± 1 (Δ +10, interval about ±3.1 around it), teacher 57.5."""
    import numpy as np

    from primkd.cli import main
    from primkd.config import load_params
    from primkd.report.compare import build_summary, compare_table, headline

    results = tmp_path / "results" / "smoke"
    base = np.array([[50 + s] * 40 for s in range(3)])
    write_counts_run(results, "cmx", base)
    write_counts_run(results, "primkd", base + np.tile([0, 20], 20))
    write_evaluation(results / "eval" / "teacher_rgb.json", {"single": fake_mode({None: 0.575})})
    text = headline(results)
    lines = text.splitlines()
    assert lines[1] == "  RGB teacher    57.50 (trained once)"
    assert lines[2] == "  CMX            51.00 ± 1.00 (3 seeds)"
    assert lines[3] == "  PrimKD         61.00 ± 1.00 (3 seeds)"
    low, high = (float(x) for x in lines[4].split("[")[1].split("]")[0].split(", "))
    assert lines[4].startswith("  PrimKD − CMX   +10.00 [") and 10 - 3.7 < low < 10 - 2.5 and 10 + 2.5 < high < 10 + 3.7
    assert lines[4].endswith("over 40 test images pooled over seeds (2000 resamples), significant")
    summary = build_summary(results, load_params(REPO / "params.yaml", "smoke"))
    assert summary["runs"]["primkd"]["vs_cmx"]["ci_low_pct"] == pytest.approx(low, abs=1e-2)  # in %, as printed
    assert "vs_cmx" not in summary["runs"]["teacher_rgb"]  # no per-image counts: no interval, the mean Δ only
    rows = {line.split(" | ")[0]: line for line in compare_table(summary).splitlines() if line.startswith("| ")}
    assert rows["| primkd"].endswith(f"| +10.00 [{low:+.2f}, {high:+.2f}] * |")
    assert rows["| teacher_rgb"].endswith("| +6.50 |")
    main(["compare", "--params", str(REPO / "params.yaml"), "--preset", "smoke", "--results", str(results),
          "--headline"])
    assert capsys.readouterr().out == text
    (results / "eval" / "primkd_per_image.npz").unlink()
    assert "PrimKD − CMX   no interval: `primkd`: no per-image counts" in headline(results)


def test_released_checkpoints_are_rows_beside_the_runs(tmp_path):
    """eval/released_<entry>.json of the evaluate_released stage: an evaluated checkpoint fills its "released
    checkpoint" rows (Table 2 beside the printed 54.4, Table 1 and Figure 1 as the RGB single-modal model) and is not
    tested; a missing one leaves its rows empty with the stage's line as the note."""
    from primkd.config import load_params

    results = tmp_path / "results" / "nyuv2_b2"
    released = results / "eval" / "released_cmx.json"
    write_evaluation(released, {"single": fake_mode({None: 0.539}),
                                "multi_scale_flip": fake_mode({None: 0.542}, scales=(0.5, 1.0), flip=True)})
    write_json(released, {"status": "evaluated", "file": "data/released/x.pth", **json.loads(released.read_text())})
    line = "PrimKD's released RGB teacher (MiT-B4, NYU Depth V2): data/released/nyu-rgb.pth not found; download it"
    write_json(results / "eval" / "released_teacher_rgb.json", {"status": "missing", "note": line})
    write_counts_run(results, "cmx", [[50] * 4])
    write_evaluation(results / "eval" / "teacher_rgb.json", {"single": fake_mode({None: 0.5})})
    fallback = "trained (fallback: kd.teachers.rgb names data/released/nyu-rgb.pth, which is not there)"
    write_json(results / "models" / "teacher_rgb" / "train.json", {"backbone": "mit_b2", "teacher_source": fallback})
    cfg = load_params(REPO / "params.yaml", "nyuv2_b2")
    out = build_report(results, "nyuv2_b2", results / "report", decoder_embed_dim=16, cfg=cfg)
    t2 = Path(out["tables"]["table2"][0]).read_text()
    assert "| CMX, MiT-B2 (released checkpoint) | 54.2 | 54.4 | -0.2 |" in t2  # multi-scale + flip, Δ printed
    assert "CMX, MiT-B2 (released checkpoint)" not in Path(out["tables"]["table2"][3]).read_text()  # not tested
    md = Path(out["tables"]["table1"][0]).read_text()
    assert "| RGB only (released checkpoint) | — |" in md and line in md
    report = Path(out["report"]).read_text()
    assert "| `released_cmx` | once |" in report and "released_teacher_rgb`" not in report.split("## Runs")[-1]
    assert f"Teachers: `teacher_rgb`: {fallback}." in report  # said in the report, not only in the log
