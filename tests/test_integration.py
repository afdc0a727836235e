"""The whole pipeline on the smoke preset, through DVC and through Snakemake, from an empty results/ folder."""

import json

import pytest
import yaml

from pipeline_utils import copy_workflow, run, set_param

pytestmark = pytest.mark.integration
RUNS = ("teacher_rgb", "cmx", "primkd")


def eval_metrics(root) -> dict[str, dict]:
    return {r: json.loads((root / "results" / "smoke" / "eval" / f"{r}.json").read_text()) for r in RUNS}


@pytest.fixture(scope="module")
def dvc_run(tmp_path_factory):
    root = copy_workflow(tmp_path_factory.mktemp("dvc"), preset="smoke")
    run(["dvc", "init", "--no-scm", "-q"], root)
    run(["dvc", "repro"], root)
    return root


@pytest.fixture(scope="module")
def snakemake_run(tmp_path_factory):
    root = copy_workflow(tmp_path_factory.mktemp("smk"), preset="smoke")
    run(["snakemake", "--cores", "2"], root)
    return root


def test_dvc_produces_every_result_and_reruns_nothing(dvc_run):
    for name, m in eval_metrics(dvc_run).items():
        assert 0.0 <= m["miou"] <= 1.0 and m["num_test_images"] == 4, name
        assert (dvc_run / "results/smoke/models" / name / "curves.csv").is_file()
    second = run(["dvc", "repro"], dvc_run).stdout
    assert "Running stage" not in second


def test_changing_beta_reruns_only_the_primkd_student(dvc_run):
    set_param(dvc_run, ["kd", "beta"], 0.5)
    status = json.loads(run(["dvc", "status", "--json"], dvc_run).stdout)
    assert set(status) == {"train_student@primkd"}
    out = run(["dvc", "repro"], dvc_run).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"train_student@primkd", "evaluate_student@primkd"}


def test_snakemake_matches_dvc_and_reruns_nothing(snakemake_run, dvc_run):
    smk = eval_metrics(snakemake_run)
    params = yaml.safe_load((dvc_run / "params.yaml").read_text())
    assert params["kd"]["beta"] == 0.5  # the DVC copy was changed by the previous test: compare the unchanged runs
    dvc = eval_metrics(dvc_run)
    for name in ("teacher_rgb", "cmx"):
        assert smk[name]["miou"] == pytest.approx(dvc[name]["miou"], abs=1e-9), name
    dry = run(["snakemake", "--cores", "2", "--dry-run"], snakemake_run).stdout
    assert "Nothing to be done" in dry


def test_snakemake_reruns_only_the_primkd_student_when_beta_changes(snakemake_run):
    set_param(snakemake_run, ["kd", "beta"], 0.5)
    dry = run(["snakemake", "--cores", "2", "--dry-run"], snakemake_run).stdout
    jobs = {line.split()[0] for line in dry.split("Job stats:")[1].split("total")[0].splitlines()[3:] if line.strip()}
    assert jobs == {"train_student", "evaluate", "all"}
    assert "results/smoke/models/primkd/model.pt" in dry and "results/smoke/models/cmx/model.pt" not in dry
