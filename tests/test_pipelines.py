"""dvc.yaml and the Snakemake rules declare the same stages: same commands, inputs and outputs."""

import pytest

from pipeline_utils import copy_workflow, dvc_stages, expand_dir_deps, run, snakemake_jobs


@pytest.mark.parametrize("preset", ["demo", "nyuv2_b4"])
def test_dvc_and_snakemake_declare_the_same_stages(tmp_path, preset):
    root = copy_workflow(tmp_path, preset)
    run(["dvc", "init", "--no-scm", "-q"], root)
    smk = snakemake_jobs(root)
    dvc = expand_dir_deps(dvc_stages(root), smk)
    only_dvc, only_smk = set(dvc) - set(smk), set(smk) - set(dvc)
    assert not only_dvc and not only_smk, f"commands only in DVC: {only_dvc}\nonly in Snakemake: {only_smk}"
    for cmd in dvc:
        assert dvc[cmd] == smk[cmd], cmd
    assert len(dvc) >= 8 and any(f"results/{preset}/eval/primkd.json" in s["outs"] for s in dvc.values())
