"""The SLURM path: resources each rule requests, and a real run of the smoke preset through a SLURM cluster.

The integration test needs a running cluster with an idle node (as root: `scripts/slurm_local.sh start`, see
../shared/SLURM-LOCAL.md); without one it is skipped with the reason.
"""

import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from primkd.config import load_params

from pipeline_utils import BIN, REPO, copy_workflow, run, set_param

SNAKEMAKE = str(BIN / "snakemake")
SLURM_PROFILE = ["--workflow-profile", "workflow/profiles/slurm"]
# The local test cluster has no accounting database and no accounts (../shared/SLURM-LOCAL.md).
LOCAL_CLUSTER_FLAGS = ["--slurm-status-command", "squeue", "--slurm-no-account", "--default-resources",
                       "slurm_partition=main", "--slurm-init-seconds-before-status-checks", "2"]
# The params.yaml `resources` entry each rule requests; `report` (tables and figures, seconds of CPU) declares none
# and gets Snakemake's defaults. A new rule must be added here, with the resources it should request.
STAGE_OF_RULE = {"prepare": "prepare", "hha": "hha", "train_teacher": "train", "train_cmx": "train",
                 "train_student": "train", "evaluate_teacher": "evaluate", "evaluate_cmx": "evaluate",
                 "evaluate_student": "evaluate", "evaluate_released": "evaluate", "analyze": "evaluate"}
# resolve_params and download run on the submitting machine (localrules: nodes may have no internet access).
LOCAL_RULES = {"resolve_params", "download"}
UNDECLARED = {"report"} | LOCAL_RULES
# pretrain (the committed encoder, rerun only after an edit of its code or parameters) has no `resources` entry: it
# asks for pretrain.threads cores, on the CPU, and gets Snakemake's default memory and time.
OWN_THREADS = {"pretrain": "threads"}
# Requests the executor plugin turns into sbatch options (--mem, -t, --cpus-per-task, --gpus, -p).
SBATCH_KEYS = ("mem_mb", "runtime", "cpus_per_task", "gpu", "slurm_partition")


def dry_run_jobs(root, preset: str) -> list[dict]:
    """Jobs of a forced dry run with the SLURM profile: [{"rule", "threads", <SBATCH_KEYS present>}].

    Dry runs cap threads at --cores (1 unless given), so a large --cores shows the threads each rule declares.
    """
    cmd = [SNAKEMAKE, "-n", "--forceall", *SLURM_PROFILE, "--cores", "64", "--config", f"preset={preset}"]
    out = run(cmd, root).stdout
    jobs = []
    for block in re.split(r"\n\[[^\]]+\]\n", out)[1:]:
        rule = re.match(r"(?:local)?rule (\w+):", block).group(1)
        threads = re.search(r"^    threads: (\d+)$", block, flags=re.M)
        resources = re.search(r"^    resources: (.*)$", block, flags=re.M).group(1)
        pairs = dict(item.split("=", 1) for item in resources.split(", "))
        jobs.append({"rule": rule, "threads": int(threads.group(1)) if threads else 1,
                     **{key: pairs[key] for key in SBATCH_KEYS if key in pairs}})
    return jobs


@pytest.mark.parametrize("preset", ["smoke", "nyuv2_b4"])
def test_each_rule_requests_its_stage_resources(tmp_path, preset):
    root = copy_workflow(tmp_path)
    cfg = load_params(root / "params.yaml", preset)
    jobs = [job for job in dry_run_jobs(root, preset) if job["rule"] != "all"]
    assert {job["rule"] for job in jobs} == set(STAGE_OF_RULE) | UNDECLARED | set(OWN_THREADS)
    for job in jobs:
        if job["rule"] in OWN_THREADS:
            assert job["threads"] == cfg["pretrain"][OWN_THREADS[job["rule"]]] and "gpu" not in job, job
            continue
        if job["rule"] in UNDECLARED:
            assert job["threads"] == 1 and "gpu" not in job and "cpus_per_task" not in job, job
            continue
        res = cfg["resources"][STAGE_OF_RULE[job["rule"]]]
        want = {"mem_mb": str(res["mem_mb"]), "runtime": str(res["runtime"]),
                "cpus_per_task": str(res["cpus_per_task"]), "slurm_partition": "main"}
        if res["gpus"]:
            want["gpu"] = str(res["gpus"])
        assert {k: v for k, v in job.items() if k not in ("rule", "threads")} == want, job["rule"]
        assert job["threads"] == res["cpus_per_task"], job["rule"]
    gpu_rules = sorted({job["rule"] for job in jobs if "gpu" in job})
    if preset == "smoke":  # a CPU preset asks for no GPU anywhere
        assert gpu_rules == []
    else:  # the paper's setting: training, evaluation and analysis on one GPU each, data preparation on CPUs
        assert gpu_rules == ["analyze", "evaluate_cmx", "evaluate_released", "evaluate_student", "evaluate_teacher",
                             "train_cmx", "train_student", "train_teacher"]
        assert all(job["gpu"] == "1" for job in jobs if "gpu" in job)


def slurm_unavailable() -> str | None:
    """Why the SLURM integration test cannot run here (no client tools, no idle node), or None when it can."""
    hint = "start a one-node cluster as root with `scripts/slurm_local.sh start`"
    if shutil.which("sinfo") is None:
        return f"SLURM is not installed (no `sinfo` on PATH); {hint}"
    proc = subprocess.run(["sinfo", "-h", "-N", "-t", "idle", "-o", "%N"], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        return f"`sinfo` failed ({proc.stderr.strip()}); {hint}"
    if not proc.stdout.strip():
        return f"no idle SLURM node (`sinfo -t idle` lists none); {hint}"
    return None


def eval_metrics(root) -> dict[str, dict]:
    """Every evaluation result of the smoke preset: model name → metrics JSON."""
    return {path.stem: json.loads(path.read_text()) for path in sorted((root / "results/smoke/eval").glob("*.json"))}


def smoke_copy(root: Path) -> Path:
    """The smoke preset with one experiment and one seed, every job at 1 CPU and 2 GB (fits any test node; equal
    threads in both runs keep CPU training bit-identical)."""
    copy_workflow(root, "smoke")
    if not (root / "environment.yml").exists():  # the rules' `conda:` directive names it, even without --use-conda
        shutil.copy2(REPO / "environment.yml", root)
    set_param(root, ["experiments"], {"primkd": {"teacher": "rgb"}})
    set_param(root, ["seeds"], [0])
    small = {"gpus": 0, "cpus_per_task": 1, "mem_mb": 2000, "runtime": 10}
    # one dict per stage: a shared one would be written as a YAML alias, which parameter files refuse
    set_param(root, ["presets", "smoke", "resources"], {stage: dict(small) for stage in set(STAGE_OF_RULE.values())})
    return root


@pytest.mark.slurm
def test_smoke_preset_through_slurm_equals_a_local_run(tmp_path):
    reason = slurm_unavailable()
    if reason:
        pytest.skip(reason)
    local, slurm = smoke_copy(tmp_path / "local"), smoke_copy(tmp_path / "slurm")
    with ThreadPoolExecutor(2) as pool:  # the local run overlaps the SLURM run's status polling
        local_run = pool.submit(run, [SNAKEMAKE, "--cores", "2"], local)
        slurm_cmd = [SNAKEMAKE, *SLURM_PROFILE, *LOCAL_CLUSTER_FLAGS, "--jobs", "4", "--latency-wait", "5"]
        proc = pool.submit(run, slurm_cmd, slurm).result()
        local_run.result()

    # every job (but the target `all` and the local rules) ran as a SLURM job of its rule
    log = proc.stdout + proc.stderr
    submitted = re.findall(r"has been submitted with SLURM jobid \d+ \(log: \S*/rule_(\w+)/", log)
    # the forced dry run lists pretrain too; its committed output is up to date in the copy, so no job runs it
    planned = [job["rule"] for job in dry_run_jobs(slurm, "smoke") if job["rule"] not in {"all", *OWN_THREADS}]
    # download, resolve_params, prepare, hha, 2 teachers, CMX, PrimKD, 4 evaluations, the released checkpoints'
    # evaluation, analyze, report
    assert len(planned) == 15 and set(planned) == set(STAGE_OF_RULE) | UNDECLARED
    assert sorted(submitted) == sorted(rule for rule in planned if rule not in LOCAL_RULES)
    metrics = eval_metrics(slurm)
    trained = ["cmx", "primkd", "teacher_depth", "teacher_rgb"]  # each also scored on its train split (<run>.train)
    assert sorted(metrics) == sorted([*trained, *(f"{r}.train" for r in trained), "released_cmx",
                                      "released_teacher_rgb"])
    assert metrics == eval_metrics(local)  # CPU training is deterministic: bit-identical metrics
