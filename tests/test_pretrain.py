"""The pretrain stage (the demo's ImageNet-1K): its committed output is what the stage makes from the committed code
and parameters, loads into the demo's encoders like ImageNet weights, is up to date in a fresh clone for both tools
whatever the file times, and a change of its parameters or code reruns it and everything after it in both."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from primkd import stages as ST
from primkd.config import ModelConfig, effective_params, load_params
from primkd.io import read_json, sha256_file

from pipeline_utils import BIN, REPO, copy_run, copy_workflow, run, set_param, subprocess_timeout
from test_staleness import (
    ALWAYS,
    UP_TO_DATE,
    downstream,
    dvc_changes,
    dvc_repro,
    run_both,
    run_tool,
    snakemake_stale,
    tool_env,
    workflow_copy,
)

STAGE = ST.stage("pretrain")
SUMMARY = REPO / "pretrain/pretrain.json"


def test_the_stage_writes_the_outputs_the_table_declares():
    from primkd.engine import pretrain

    declared = {o.path for o in STAGE.outs}
    assert declared == {f"{STAGE.shipped}/{name}" for name in (pretrain.ENCODER, pretrain.SUMMARY, pretrain.CURVE)}
    assert ST.PRETRAINED == f"{STAGE.shipped}/{pretrain.ENCODER}"
    # the demo starts from it; the smoke preset stays from scratch
    assert load_params(REPO / "params.yaml", "demo")["model"]["pretrained"] == ST.PRETRAINED
    assert load_params(REPO / "params.yaml", "smoke")["model"]["pretrained"] == "none"


def test_the_shipped_output_is_up_to_date_with_the_committed_code_and_parameters():
    """What Snakemake checks in every run (DVC: the committed pretrain/dvc.lock): the digests the summary records."""
    effective = effective_params(load_params(REPO / "params.yaml"))
    state = ST.shipped_state(STAGE, effective, REPO)
    assert state.current, f"pretrain/ is out of date ({state.why}): run `make pretrain` and commit pretrain/"
    summary = read_json(SUMMARY)
    assert summary["params"]["pretrain.backbone"] == "mit_nano" == load_params(REPO / "params.yaml")["model"][
        "backbone"]
    # an honest held-out measure: well above always answering the most frequent class
    held = summary["heldout"]
    assert held["accuracy_pct"] > held["majority_class_pct"] + 10, held
    assert summary["corpus"]["train_images"] > load_params(REPO / "params.yaml")["data"]["synthetic"]["num_train"]
    assert summary["corpus"]["seed"] != load_params(REPO / "params.yaml")["data"]["synthetic"]["seed"]


def _segmentors():
    from primkd.models.io import architecture, build_model

    model = ModelConfig.of(load_params(REPO / "params.yaml", "demo"))
    return {kind: build_model(architecture(model, kind, 40)) for kind in ("teacher", "student")}


def test_the_encoder_loads_into_every_network_of_the_demo_and_replaces_its_initial_weights(caplog):
    from primkd.models.io import read_mit_pretrained
    from primkd.weights import init_from_imagenet

    weights = read_mit_pretrained(REPO / ST.PRETRAINED)
    torch.manual_seed(0)
    scratch = _segmentors()
    torch.manual_seed(0)
    models = _segmentors()
    with caplog.at_level(logging.INFO, logger="primkd"):
        for model in models.values():
            init_from_imagenet(model, REPO / ST.PRETRAINED)
    assert f"all {len(weights)} encoder tensors matched" in caplog.text
    assert "left out 2 entries not used here (head.*)" in caplog.text  # the classifier, as of ImageNet weights
    encoders = {"teacher": ["encoder"], "student": ["encoder_rgb", "encoder_modal"]}
    for kind, names in encoders.items():
        for name in names:
            loaded = getattr(models[kind], name).state_dict()
            fresh = getattr(scratch[kind], name).state_dict()
            assert set(loaded) == set(weights)
            for key, value in weights.items():
                assert torch.equal(loaded[key], value), (kind, name, key)
            # every weight matrix changed (LayerNorms start at 1/0 and may keep exact values in some entries)
            assert all(not torch.equal(loaded[k], fresh[k]) for k in weights if weights[k].ndim >= 2), (kind, name)
        # the decoder keeps its fresh initialisation
        fresh_decoder = scratch[kind].decoder.state_dict()
        assert all(torch.equal(v, fresh_decoder[k]) for k, v in models[kind].decoder.state_dict().items())


@pytest.mark.integration
def test_rerunning_the_stage_gives_the_committed_file_bit_for_bit(tmp_path):
    """The same code and parameters give the same bytes: the stage runs on the CPU with pretrain.threads threads and
    deterministic kernels (SHA-256 compared; no tolerance)."""
    out = tmp_path / "pretrain"
    # about 2 minutes on the idle machine: 15 minutes, stretched by the load (19 min at load 5 on 2 cores)
    run(["primkd", "pretrain", "--params", str(REPO / "params.yaml"), "--out-dir", str(out), "--no-progress"], REPO,
        timeout=subprocess_timeout(900))
    shipped = read_json(SUMMARY)
    again = read_json(out / "pretrain.json")
    assert sha256_file(out / "encoder.pt") == sha256_file(REPO / ST.PRETRAINED) == shipped["outputs"]["encoder.pt"]
    assert (out / "curve.csv").read_text() == (REPO / "pretrain/curve.csv").read_text()
    for key in ("heldout", "code", "params", "outputs", "final_loss", "corpus"):
        assert again[key] == shipped[key], key


# --- Both tools: a fresh clone, and what an edit reruns -------------------------------------------------------------


def git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.integration
def test_a_fresh_clone_plans_no_pretrain_job_whatever_the_file_times(tmp_path):
    origin = copy_workflow(tmp_path / "origin")
    for name in (".dvc/config", ".dvc/.gitignore", ".gitignore"):
        (origin / name).parent.mkdir(exist_ok=True)
        shutil.copy2(REPO / name, origin / name)
    git(origin, "init", "-q")
    git(origin, "add", "-A")
    git(origin, "commit", "-q", "-m", "workflow")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    # adversarial times: the committed outputs older than every other file, as git may write them
    now = time.time()
    for path in (p for p in clone.rglob("*") if p.is_file() and ".git" not in p.parts):
        os.utime(path, (now, now))
    for out in STAGE.outs:
        os.utime(clone / out.path, (now - 3600, now - 3600))
    status = json.loads(run([str(BIN / "dvc"), "status", "--json"], clone).stdout)
    assert not [name for name in status if "pretrain" in name], status
    assert "train_teacher@rgb" in status  # the rest of the pipeline never ran here
    plan = run([str(BIN / "snakemake"), "--dry-run", "--cores", "1", "all"], clone).stdout
    assert "rule train_teacher:" in plan and "rule resolve_params:" in plan
    assert "rule pretrain:" not in plan
    assert git(clone, "status", "--porcelain").stdout == ""


@pytest.fixture(scope="module")
def pretrained_workflow(tmp_path_factory):
    """The staleness test's smoke workflow with model.pretrained naming the pretrain stage's encoder, as the demo
    does, run once through each tool with the stand-in `primkd` (the pretrain stage up to date: not run)."""
    base = tmp_path_factory.mktemp("pretrained")
    roots = {tool: workflow_copy(base / tool) for tool in ("dvc", "smk")}
    for root in roots.values():
        set_param(root, ["presets", "smoke", "model", "pretrained"], ST.PRETRAINED)
    _, decl, stub_dir = run_both(base, roots["dvc"], roots["smk"])
    for root in roots.values():
        assert (root / ST.PRETRAINED).read_bytes() == (REPO / ST.PRETRAINED).read_bytes()  # not rerun
    assert dvc_changes(roots["dvc"]) == UP_TO_DATE and snakemake_stale(roots["smk"], decl) == set()
    return {**roots, "decl": decl, "stub_dir": stub_dir}


def _copies(workflow: dict, dest: Path) -> tuple[Path, Path]:
    return tuple(copy_run(workflow[tool], dest / tool) for tool in ("dvc", "smk"))


def _edit_params(root: Path, key: list[str]) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    node = params
    for part in key[:-1]:
        node = node[part]
    node[key[-1]] += 1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


# The stand-in `primkd` of test_staleness, which for `primkd pretrain` also writes the record the real command puts in
# its summary (the digests Snakemake compares), as the real command does before the job ends.
RECORDING_STUB = """#!{python}
import json, subprocess, sys
from pathlib import Path

subprocess.run([{stub!r}, *sys.argv[1:]], check=True)
if sys.argv[1] == "pretrain":
    from primkd import stages as ST
    from primkd.config import load_params

    stage = ST.stage("pretrain")
    record = ST.record(stage, {{"pretrain": load_params("params.yaml")["pretrain"]}}, ".")
    Path(ST.shipped.summary_path(stage)).write_text(json.dumps({{**record, "outputs": ST.output_digests(stage)}}))
"""


def recording_env(root: Path, stub_dir: Path, log: Path) -> dict:
    own = stub_dir.parent / "recording"
    own.mkdir(exist_ok=True)
    script = own / "primkd"
    script.write_text(RECORDING_STUB.format(python=sys.executable, stub=str(stub_dir / "primkd")))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    env = tool_env(root, stub_dir)
    return {**env, "PATH": f"{own}{os.pathsep}{env['PATH']}", "PRIMKD_STUB_LOG": str(log)}


@pytest.mark.parametrize("edit", ["parameter", "code"])
def test_an_edit_of_the_stage_reruns_it_and_everything_that_starts_from_its_encoder(pretrained_workflow, tmp_path,
                                                                                       edit):
    decl, stub_dir = pretrained_workflow["decl"], pretrained_workflow["stub_dir"]
    dvc_root, smk_root = _copies(pretrained_workflow, tmp_path)
    for root in (dvc_root, smk_root):
        if edit == "parameter":
            _edit_params(root, ["pretrain", "epochs"])
        else:
            path = root / "src/primkd/engine/pretrain.py"
            path.write_text(path.read_text() + "\n# edited\n")
    trainings = {name for name in decl if name.startswith("train_")}
    if edit == "parameter":
        assert dvc_changes(dvc_root) == {"resolve_params": {ALWAYS, "params.yaml"}, "pretrain": {"pretrain.epochs"}}
    else:
        assert dvc_changes(dvc_root) == {**UP_TO_DATE, "pretrain": {"src/primkd/engine/pretrain.py"}}
    # DVC: pretrain, then resolve_params (it reads the encoder) finds a new inputs.pretrained, so every training
    # reruns; the stand-in writes the same outputs again, so DVC stops after them (real trainings would go on)
    assert dvc_repro(dvc_root, stub_dir, decl) == {"pretrain", "resolve_params", *trainings}
    assert dvc_repro(dvc_root, stub_dir, decl) == {"resolve_params"}
    # Snakemake: pretrain and every job after it (the trainings read the encoder as a file)
    expected = {"pretrain", "resolve_params"} | downstream(trainings, decl)
    assert snakemake_stale(smk_root, decl) == expected
    assert not {"download", "prepare", "hha"} & expected
    log = tmp_path / "smk.log"
    run_tool([str(BIN / "snakemake"), "--cores", "1", "--quiet", "all"], smk_root,
             recording_env(smk_root, stub_dir, log))
    assert log.read_text().count("pretrain --params") == 1
    # once: the trainings depend on the digest of what the encoder is made from, not on the file read before the run
    assert snakemake_stale(smk_root, decl) == set()


def test_an_edit_outside_the_closure_reruns_no_pretrain(pretrained_workflow, tmp_path):
    decl = pretrained_workflow["decl"]
    dvc_root, smk_root = _copies(pretrained_workflow, tmp_path)
    assert "src/primkd/cli/weights.py" not in ST.code_closure(STAGE.entry)  # primkd infer / export
    for root in (dvc_root, smk_root):
        path = root / "src/primkd/cli/weights.py"
        path.write_text(path.read_text() + "\n# edited\n")
        os.utime(path, (time.time() + 100, time.time() + 100))
    assert dvc_changes(dvc_root) == UP_TO_DATE
    assert snakemake_stale(smk_root, decl) == set()
