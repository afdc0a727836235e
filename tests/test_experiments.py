"""DVC experiments keep their metrics: `dvc exp show` compares an experiment's mIoU with the baseline's, and
`dvc metrics diff` works, because the evaluations are git-tracked files (.gitignore exceptions), not ignored ones."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from pipeline_utils import REPO, copy_workflow, set_param

pytestmark = pytest.mark.integration
METRIC = "results/smoke/eval/primkd.json"


def _run(cmd: list[str], root, env) -> str:
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_dvc_experiment_shows_its_miou_beside_the_baseline(tmp_path):
    root = copy_workflow(tmp_path, preset="smoke")
    shutil.copy2(REPO / ".gitignore", root / ".gitignore")
    set_param(root, ["experiments"], {"primkd": {"teacher": "rgb"}})
    set_param(root, ["seeds"], [0])
    bin_dir = os.path.dirname(sys.executable)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(root / "src"),
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "repro", "-q", "evaluate_student@primkd"],
                ["git", "add", "-A"], ["git", "commit", "-q", "-m", "baseline"]):
        _run(cmd, root, env)
    tracked = _run(["git", "ls-files", "results"], root, env).split()
    assert METRIC in tracked and "results/smoke/models/teacher_rgb/train.json" in tracked
    _run(["dvc", "exp", "run", "-q", "-S", "kd.beta=0.1", "evaluate_student@primkd"], root, env)

    rows = json.loads(_run(["dvc", "exp", "show", "--only-changed", "--json"], root, env))
    baseline = next(r for r in rows if r["name"] in ("master", "main"))
    experiment = baseline["experiments"][0]["revs"][0]

    def miou(rev):
        return rev["data"]["metrics"][METRIC]["data"]["last"]["single"]["miou_pct"]

    assert 0 <= miou(baseline) <= 100 and 0 <= miou(experiment) <= 100
    assert experiment["data"]["params"]["params.yaml"]["data"]["kd"]["beta"] == 0.1
    diff = json.loads(_run(["dvc", "metrics", "diff", "--all", "--json"], root, env))
    headline = diff[METRIC]["last.single.miou_pct"]  # DVC names nested keys by their path
    assert headline["old"] == miou(baseline) and headline["new"] == miou(experiment)
