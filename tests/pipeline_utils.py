"""Helpers for the pipeline tests: a throw-away copy of the workflow and the two tools' views of it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# pretrain/: the pretrain stage's committed outputs, its dvc.yaml and dvc.lock
WORKFLOW_FILES = ("params.yaml", "dvc.yaml", "Snakefile", "workflow", "src", ".dvcignore", "environment.yml",
                  "pretrain")


def copy_workflow(dest: Path, preset: str | None = None) -> Path:
    """Copy what the pipelines need into ``dest`` (optionally switching the active preset)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(src, dest / name)
    if preset is not None:
        set_param(dest, ["preset"], preset)
    return dest


def copy_run(src: Path, dest: Path) -> Path:
    """A copy of a finished pipeline folder (results, DVC and Snakemake state, file times kept), so that a test may
    change it without changing what the other tests see."""
    shutil.copytree(src, dest, symlinks=True)
    return dest


def set_param(root: Path, key: list[str], value) -> None:
    """Change one key of ``root/params.yaml`` in place (comments are not kept; the copy is throw-away). A change of
    ``experiments`` regenerates the copy's dvc.yaml, as a user must (its student stages list the experiments of
    each teacher; resolve_params refuses to run otherwise)."""
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text())
    node = params
    for part in key[:-1]:
        node = node[part]
    node[key[-1]] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    if key[0] == "experiments" and (root / "dvc.yaml").is_file():
        from primkd import stages

        (root / "dvc.yaml").write_text(stages.render_dvc(path))


def subprocess_timeout(base: float = 600.0) -> float:
    """``base`` seconds on an idle machine, stretched by the load per core (other jobs share the cores and slow the
    pipeline down by that factor); ``PRIMKD_TEST_TIMEOUT`` sets the base instead."""
    base = float(os.environ.get("PRIMKD_TEST_TIMEOUT", base))
    load = os.getloadavg()[0] / (os.cpu_count() or 1) if hasattr(os, "getloadavg") else 0.0
    return base * max(1.0, 1.0 + load)


def run(cmd: list[str], cwd: Path, timeout: float | None = None) -> subprocess.CompletedProcess:
    """Run a pipeline tool with the venv's executables first on PATH; fail with its output on error.

    ``timeout`` defaults to :func:`subprocess_timeout` (600 s scaled by the machine's load)."""
    # One thread per stage, as Snakemake gives the smoke preset's jobs (threads = cpus_per_task = 1): CPU results
    # depend on the thread count in the last bits, and the tests compare DVC's numbers with Snakemake's exactly.
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    if (cwd / "src").is_dir():  # stage commands import the copy's code, not whatever the checkout holds meanwhile
        env["PYTHONPATH"] = str(cwd / "src")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=subprocess_timeout() if timeout is None else timeout)
    if proc.returncode != 0:
        output = f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output}")
    return proc


def expand_dir_deps(stages: dict[str, dict], jobs: dict[str, dict]) -> dict[str, dict]:
    """Replace a DVC dependency on a folder of other stages' outputs (``results/<preset>/eval``) by those outputs,
    as Snakemake lists them one by one."""
    produced = {out for job in jobs.values() for out in job["outs"]}
    for stage in stages.values():
        for dep in list(stage["deps"]):
            inside = {p for p in produced if p.startswith(dep + "/")}
            if inside and dep not in produced:
                stage["deps"] = (stage["deps"] - {dep}) | inside
    return stages


def dvc_stages(root: Path) -> dict[str, dict]:
    """DVC's resolved stages: command → {"deps", "outs"} (parameter dependencies left out)."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    stages = {}
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            deps = {d.def_path for d in stage.deps if not isinstance(d, ParamsDependency)}
            stages[" ".join(stage.cmd.split())] = {"deps": deps, "outs": {o.def_path for o in stage.outs}}
    return stages


def snakemake_jobs(root: Path) -> dict[str, dict]:
    """Snakemake's jobs from a forced dry run: shell command → {"deps", "outs"}."""
    out = run([str(BIN / "snakemake"), "--cores", "1", "--dry-run", "--printshellcmds", "--forceall"], root).stdout
    jobs = {}
    for block in re.split(r"\n\[[^\]]+\]\n", out)[1:]:
        fields = dict(re.findall(r"^    (input|output): (.*)$", block, flags=re.M))
        shell = re.search(r"^Shell command: (.*)$", block, flags=re.M)
        if shell is None or shell.group(1) == "None":  # the `all` target has no command
            continue
        split = lambda s: {p.strip() for p in s.split(",") if p.strip()}  # noqa: E731
        jobs[" ".join(shell.group(1).split())] = {"deps": split(fields.get("input", "")),
                                                  "outs": split(fields.get("output", ""))}
    return jobs
