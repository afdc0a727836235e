"""The whole pipeline on the smoke preset, through DVC and through Snakemake, from an empty results/ folder."""

import json
import re

import pytest

from pipeline_utils import copy_run, copy_workflow, run, set_param

pytestmark = pytest.mark.integration
RUNS = ("teacher_rgb", "teacher_depth", "cmx", "primkd", "kd_teacher_depth")
# A small grid: two experiments (RGB and depth teacher) with two seeds each.
EXPERIMENTS = {"primkd": {"teacher": "rgb"}, "kd_teacher_depth": {"teacher": "depth"}}
# DVC's student stage of each (dvc.yaml has one per teacher: see primkd.stages.dvc_name)
STUDENT_STAGE = {"primkd": "train_student", "kd_teacher_depth": "train_student_depth"}


def smoke_copy(root):
    copy_workflow(root, preset="smoke")
    set_param(root, ["experiments"], EXPERIMENTS)
    set_param(root, ["seeds"], [0, 1])
    place_released(root)
    return root


def place_released(root):
    """Tiny checkpoints in the released files' format, where params.yaml eval.released expects them, for the 40
    classes of the synthetic data: the evaluate_released stage scores them and the report shows their rows."""
    import torch

    from primkd.models import build_student, build_teacher

    from fake_data import save_released

    torch.manual_seed(7)
    folder = root / "data" / "released"
    folder.mkdir(parents=True, exist_ok=True)
    save_released(folder / "nyu-rgb.pth", build_teacher("mit_tiny", 40, decoder_embed_dim=16).eval())
    save_released(folder / "cmx_nyuv2_mit_b2.pth", build_student("mit_tiny", 40, decoder_embed_dim=16).eval())


def eval_metrics(root, split: str = "") -> dict[str, dict]:
    """Each run's evaluation JSON of the test split, or with ``split`` ".train" of the train split."""
    return {r: json.loads((root / "results" / "smoke" / "eval" / f"{r}{split}.json").read_text()) for r in RUNS}


@pytest.fixture(scope="module")
def dvc_run(tmp_path_factory):
    root = smoke_copy(tmp_path_factory.mktemp("dvc"))
    run(["dvc", "init", "--no-scm", "-q"], root)
    run(["dvc", "repro"], root)
    return root


@pytest.fixture(scope="module")
def snakemake_run(tmp_path_factory):
    root = smoke_copy(tmp_path_factory.mktemp("smk"))
    run(["snakemake", "--cores", "2"], root)
    return root


# The pipelines run once per module; a test that changes parameters works on its own copy (own_dvc, own_snakemake),
# so the tests pass in any order.
@pytest.fixture
def own_dvc(dvc_run, tmp_path):
    return copy_run(dvc_run, tmp_path / "dvc")


@pytest.fixture
def own_snakemake(snakemake_run, tmp_path):
    return copy_run(snakemake_run, tmp_path / "smk")


def test_dvc_produces_every_result_and_reruns_nothing(dvc_run):
    for name, m in eval_metrics(dvc_run).items():
        assert 0.0 <= m["last"]["single"]["miou_pct"] <= 100.0 and m["num_test_images"] == 4, name
        seeds = [None] if name.startswith("teacher") else [0, 1]
        assert [e["seed"] for e in m["last"]["single"]["per_seed"]] == seeds, name
        for seed in seeds:
            folder = dvc_run / "results/smoke/models" / name / ("" if seed is None else f"seed{seed}")
            assert (folder / "curves.csv").is_file() and (folder / "model.pt").is_file(), folder
    # every evaluate stage also scored its models' last epoch single-scale on the 8 training images
    for name, m in eval_metrics(dvc_run, ".train").items():
        seeds = [None] if name.startswith("teacher") else [0, 1]
        assert (m["split"], m["num_train_images"], list(m["last"])) == ("train", 8, ["single"]), name
        assert [e["seed"] for e in m["last"]["single"]["per_seed"]] == seeds and "best" not in m, name
    report = (dvc_run / "results/smoke/REPORT.md").read_text()
    assert "## Table 8" in report and "| RGB (PrimKD) |" in report
    assert_released_rows(dvc_run)
    cka = json.loads((dvc_run / "results/smoke/analysis/cka.json").read_text())
    assert len(cka["rows"]) == 2 * 2 * 4  # (cmx, primkd) x (rgb, depth) x 4 stages
    second = run(["dvc", "repro"], dvc_run).stdout
    # resolve_params is always_changed (it rereads the input files whose digests are parameters); nothing else runs
    assert {line.split("'")[1] for line in second.splitlines() if line.startswith("Running stage")} == {
        "resolve_params"}


def test_changing_beta_reruns_only_the_distilled_students(own_dvc):
    dvc_run = own_dvc
    set_param(dvc_run, ["kd", "beta"], 0.5)
    status = json.loads(run(["dvc", "status", "--json"], dvc_run).stdout)
    assert set(status) == {"resolve_params"}  # params.yaml changed; the effective values are not written yet
    run(["dvc", "repro", "resolve_params"], dvc_run)
    status = json.loads(run(["dvc", "status", "--json"], dvc_run).stdout)
    trainings = {f"{STUDENT_STAGE[exp]}@{exp}-{seed}" for exp in EXPERIMENTS for seed in (0, 1)}  # one stage per seed
    # the report reads kd (it matches table rows by kd settings); resolve_params is always_changed
    assert set(status) == trainings | {"report", "resolve_params"}
    out = run(["dvc", "repro"], dvc_run).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == trainings | {f"evaluate_student@{exp}" for exp in EXPERIMENTS} | {"analyze", "report",
                                                                                    "resolve_params"}


def assert_released_rows(root) -> None:
    """The released checkpoints were scored (both modes) and fill their report rows: Table 1 and Figure 1 (the
    released RGB teacher), Table 2 (CMX's released model)."""
    for entry in ("teacher_rgb", "cmx"):
        m = json.loads((root / f"results/smoke/eval/released_{entry}.json").read_text())
        assert m["status"] == "evaluated" and 0 <= m["last"]["single"]["miou_pct"] <= 100, entry
        assert "multi_scale_flip" in m["last"], entry
    tables = root / "results/smoke/report/tables"
    assert "| RGB only (released checkpoint) | — |" not in (tables / "table1.md").read_text()
    assert "| RGB only (released checkpoint) | " in (tables / "table1.md").read_text()
    row = next(line for line in (tables / "table2.md").read_text().splitlines()
               if line.startswith("| CMX, MiT-B2 (released checkpoint) |"))
    assert row.split("|")[2].strip() != "—"


def test_snakemake_matches_dvc_and_reruns_nothing(snakemake_run, dvc_run):
    for split in ("", ".train"):
        smk, dvc = eval_metrics(snakemake_run, split), eval_metrics(dvc_run, split)
        for name in ("teacher_rgb", "teacher_depth", "cmx"):
            assert smk[name]["last"]["single"]["miou_pct"] == pytest.approx(dvc[name]["last"]["single"]["miou_pct"],
                                                                            abs=1e-7), (name, split)
    assert_released_rows(snakemake_run)
    for entry in ("teacher_rgb", "cmx"):
        smk_m, dvc_m = (json.loads((r / f"results/smoke/eval/released_{entry}.json").read_text())
                        for r in (snakemake_run, dvc_run))
        assert smk_m["last"]["single"]["miou_pct"] == dvc_m["last"]["single"]["miou_pct"], entry
    dry = run(["snakemake", "--cores", "2", "--dry-run"], snakemake_run).stdout
    assert "Nothing to be done" in dry


def test_snakemake_report_files_every_table_and_figure_under_its_category(snakemake_run, tmp_path):
    """`snakemake --report` after the run: every table (Markdown and CSV, REPORT.md), figure, training curve and
    per-run evaluation is on the page under its category, and the captions put the tables themselves on it."""
    page = tmp_path / "report.html"
    run(["snakemake", "--report", str(page)], snakemake_run)
    html = page.read_text()
    categories = json.loads(re.search(r"^\s*var categories = (\{.*\});$", html, flags=re.M).group(1))
    listed = {name: sorted(path for paths in sub.values() for path in paths) for name, sub in categories.items()}
    r = "results/smoke"
    tables = [f"{r}/report/tables/table{n}.{ext}" for n in range(1, 9) for ext in ("md", "csv")]
    significance = [f"{r}/report/tables/table{n}_significance.csv" for n in range(1, 8)]  # Table 8 (CKA) has none
    assert listed == {
        "Tables": sorted([f"{r}/REPORT.md", *tables, *significance]),
        "Figures": sorted([f"{r}/report/figure1.png", f"{r}/analysis/figure3_qualitative.png",
                           f"{r}/analysis/figure4_histograms.png"]),
        "Training": sorted(f"{r}/report/curves/{name}.png" for name in (*RUNS, "ablation")),
        "Per run": sorted([f"{r}/summary.json", *(f"{r}/eval/{name}{split}.json" for name in RUNS
                                                  for split in ("", ".train"))])}
    assert "Table 2, main comparison" in html and "Training curves of kd_teacher_depth:" in html
    assert "| Method | mIoU (%) ours |" in html  # Table 2's Markdown, included by its caption


def test_snakemake_reruns_only_the_distilled_students_when_beta_changes(own_snakemake):
    snakemake_run = own_snakemake
    set_param(snakemake_run, ["kd", "beta"], 0.5)
    dry = run(["snakemake", "--cores", "2", "--dry-run"], snakemake_run).stdout
    stats = dry.split("Job stats:")[1].split("total")[0].splitlines()[3:]
    jobs = {line.split()[0]: int(line.split()[1]) for line in stats if line.strip()}
    assert jobs == {"resolve_params": 1, "train_student": 4, "evaluate_student": 2, "analyze": 1, "report": 1,
                    "all": 1}
    assert "output: results/smoke/models/primkd/seed1\n" in dry and "models/cmx/seed0\n" not in dry


def test_changing_the_synthetic_seed_retrains_every_model(own_dvc):
    """New data: DVC reruns prepare and hha, and the teacher trains from scratch although its finished checkpoint is
    still there (the checkpoint fingerprint covers the images' contents); every other training is stale too."""
    dvc_run = own_dvc
    model = dvc_run / "results/smoke/models/teacher_rgb/model.pt"
    before = model.read_bytes()
    set_param(dvc_run, ["presets", "smoke", "data", "synthetic", "seed"], 1)
    run(["dvc", "repro", "train_teacher@rgb"], dvc_run)
    summary = json.loads((dvc_run / "results/smoke/models/teacher_rgb/train.json").read_text())
    assert summary["resumed_at_iterations"] == [] and model.read_bytes() != before
    log = (dvc_run / "results/smoke/logs/train_teacher_rgb.log").read_text()
    assert "training from scratch: the finished checkpoint" in log and "data.train_sha256" in log
    status = json.loads(run(["dvc", "status", "--json"], dvc_run).stdout)
    trainings = {"train_teacher@depth", "train_cmx@0", "train_cmx@1"} | {
        f"{STUDENT_STAGE[exp]}@{exp}-{seed}" for exp in EXPERIMENTS for seed in (0, 1)}
    assert trainings <= set(status)
