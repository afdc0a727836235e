"""Threads and workers from a stage's resources, under the stage command and under DVC."""

import copy
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from primkd import resources
from primkd.config import load_params
from primkd.resources import apply_threads, cores_given, plan_threads, thread_plan

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


def test_the_plan_is_resolved_without_side_effects_then_applied(monkeypatch, restore_threads):
    monkeypatch.setattr(resources.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    cfg = load_params(REPO_PARAMS, "smoke")
    cfg["resources"]["train"]["cpus_per_task"], cfg["train"]["num_workers"] = 3, 4
    before = copy.deepcopy(cfg)
    torch.set_num_threads(2)
    plan = thread_plan(cfg, "train", environ={})
    assert (plan.cores_given, plan.cores, plan.torch_threads, plan.workers) == (4, 3, 1, 2)
    assert cfg == before and torch.get_num_threads() == 2  # resolving changes nothing
    fitted = plan.fit(cfg)
    assert fitted["train"]["num_workers"] == 2 and cfg == before  # a copy with the workers the cores allow
    assert {**fitted, "train": cfg["train"]} == cfg and "runtime" not in fitted
    apply_threads(plan, environ={})
    assert torch.get_num_threads() == 1


def test_pool_stages_pass_their_thread_share_to_the_pool(monkeypatch, restore_threads):
    monkeypatch.setattr(resources.os, "sched_getaffinity", lambda pid: set(range(8)))
    cfg = load_params(REPO_PARAMS, "smoke")
    cfg["resources"]["hha"]["cpus_per_task"], cfg["hha"]["workers"] = 8, 2
    environ = {}
    plan = thread_plan(cfg, "hha", environ=environ)
    assert plan.workers == 2 and environ == {}
    apply_threads(plan, environ=environ)
    assert environ["OMP_NUM_THREADS"] == "4"


def test_the_loaded_config_is_the_validated_params(monkeypatch, restore_threads, tmp_path):
    """A stage command's config is load_params' (its workers not capped, no `runtime` entry, torch untouched); the
    plan is applied and handed on by the command."""
    from argparse import Namespace

    from primkd.cli.options import load_config

    monkeypatch.setattr(resources.os, "sched_getaffinity", lambda pid: {0})
    shutil.copy(REPO_PARAMS, tmp_path / "params.yaml")
    set_param(tmp_path, ["presets", "smoke", "train", "num_workers"], 3)  # more than the one core allows
    threads = torch.get_num_threads()
    args = Namespace(params=tmp_path / "params.yaml", preset="smoke", stage="train")
    cfg = load_config(args)
    assert cfg == load_params(tmp_path / "params.yaml", "smoke") and cfg["train"]["num_workers"] == 3
    assert torch.get_num_threads() == threads


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
