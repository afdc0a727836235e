"""Threads and workers from a stage's resources, under the stage command and under DVC."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from primkd import resources
from primkd.config import load_params
from primkd.resources import apply_resources, cores_given, plan_threads

from pipeline_utils import copy_workflow, set_param

REPO_PARAMS = os.path.join(os.path.dirname(__file__), "..", "params.yaml")


@pytest.mark.parametrize(("stage", "cpus", "requested", "given", "ranks", "threads", "workers"), [
    ("train", 8, 8, 16, 1, 1, 7),  # a GPU job: the workers feed the GPU, the main process keeps one core
    ("train", 2, 2, 16, 1, 1, 1),
    ("train", 8, 2, 4, 1, 2, 2),  # fewer cores given than asked for: the cores given win
    ("evaluate", 4, 0, 2, 1, 2, 0),  # no workers asked: torch gets every core
    ("train", 1, 4, 8, 1, 1, 0),  # one core: load in the main process
    ("train", 8, 2, 8, 2, 2, 2),  # two torchrun ranks on the node share the 8 cores
    ("hha", 8, 8, 4, 1, 1, 4),  # a process pool: one process per core, one thread each
    ("prepare", 4, 1, 8, 1, 4, 1),  # one process (in the main process) with every core
    ("hha", 6, 2, 6, 1, 3, 2),
])
def test_plan_threads(stage, cpus, requested, given, ranks, threads, workers):
    plan = plan_threads(stage, cpus, requested, given, ranks)
    assert (plan.torch_threads, plan.workers) == (threads, workers)
    assert plan.cores == min(cpus, given) // ranks


def test_cores_given_is_capped_by_omp_num_threads():
    affinity = len(os.sched_getaffinity(0))
    assert cores_given({"OMP_NUM_THREADS": "1"}) == 1
    assert cores_given({"OMP_NUM_THREADS": str(affinity + 5)}) == affinity
    assert cores_given({}) == cores_given({"OMP_NUM_THREADS": ""}) == cores_given({"OMP_NUM_THREADS": "x"}) == affinity


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_apply_resources_sets_torch_threads_and_caps_workers(monkeypatch, restore_threads):
    monkeypatch.setattr(resources.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    cfg = load_params(REPO_PARAMS, "smoke")
    cfg["resources"]["train"]["cpus_per_task"], cfg["train"]["num_workers"] = 3, 4
    plan = apply_resources(cfg, "train", environ={})
    assert (plan.cores_given, plan.cores, plan.torch_threads, plan.workers) == (4, 3, 1, 2)
    assert torch.get_num_threads() == 1
    assert cfg["train"]["num_workers"] == 2 and cfg["runtime"]["torch_threads"] == 1


def test_pool_stages_pass_their_thread_share_to_the_pool(monkeypatch, restore_threads):
    monkeypatch.setattr(resources.os, "sched_getaffinity", lambda pid: set(range(8)))
    cfg = load_params(REPO_PARAMS, "smoke")
    cfg["resources"]["hha"]["cpus_per_task"], cfg["hha"]["workers"] = 8, 2
    environ = {}
    apply_resources(cfg, "hha", environ=environ)
    assert cfg["hha"]["workers"] == 2 and environ["OMP_NUM_THREADS"] == "4"
    assert apply_resources(cfg, "report", environ=environ) is None


@pytest.mark.integration
def test_a_dvc_stage_uses_the_threads_of_its_resources(tmp_path):
    """DVC sets no thread count (torch's default is one thread per core); the train stage runs the one torch thread
    its resources give it whatever the machine has."""
    if shutil.which("dvc", path=os.path.dirname(sys.executable)) is None:
        pytest.fail(f"dvc is not installed beside {sys.executable}; install the project with `make venv-test`")
    root = copy_workflow(tmp_path, preset="smoke")
    set_param(root, ["presets", "smoke", "resources", "train", "cpus_per_task"], 1)
    set_param(root, ["presets", "smoke", "train", "num_workers"], 0)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env.update(PATH=f"{os.path.dirname(sys.executable)}{os.pathsep}{env['PATH']}", PYTHONPATH=str(root / "src"),
               HF_HUB_OFFLINE="1")
    for cmd in (["dvc", "init", "--no-scm", "-q"], ["dvc", "repro", "train_teacher@rgb"]):
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    threads = json.loads((root / "results/smoke/models/teacher_rgb/train.json").read_text())["threads"]
    cores = len(os.sched_getaffinity(0))
    assert threads == {"stage": "train", "cpus_per_task": 1, "cores_given": cores, "cores": 1, "torch_threads": 1,
                       "workers": 0, "requested_workers": 0}
    log = (root / "results/smoke/logs/train_teacher_rgb.log").read_text()
    assert log.startswith("===== ") and "primkd train --params params.yaml --preset smoke" in log.splitlines()[0]
    assert f"train: 1 torch thread(s), 0 worker(s) on 1 core(s) (resources.train.cpus_per_task 1, {cores} cores" in log
