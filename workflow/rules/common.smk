# Effective parameters of the active preset, resolved by the same code the stage commands use.
import json
import re

from primkd.config import experiment_kd, resolve

CFG = resolve(config)
PRESET = CFG["preset"]
EXPERIMENTS = list(CFG["experiments"])
TEACHERS = ["teacher_rgb", "teacher_depth"]
STUDENTS = ["cmx", *EXPERIMENTS]
MODELS = [*TEACHERS, *STUDENTS]
MAIN_MODELS = ["teacher_rgb", "cmx", "primkd"]
DATA = f"data/{PRESET}/prepared"
HHA = f"data/{PRESET}/hha"
TRAIN_CODE = ["src/primkd/models", "src/primkd/engine", "src/primkd/distill"]
EVAL_CODE = ["src/primkd/engine/evaluate.py", "src/primkd/engine/metrics.py"]


wildcard_constraints:
    preset=PRESET,
    modality="rgb|depth",
    exp="|".join(map(re.escape, EXPERIMENTS)),
    student="|".join(map(re.escape, STUDENTS)),


def values(*keys):
    """Effective values of the given dotted keys as a JSON string: a rule's params, so Snakemake reruns a rule
    when (and only when) a value it reads changes, as DVC does with its `params:` lists."""
    out = {}
    for key in keys:
        node = CFG
        for part in key.split("."):
            node = node[part]
        out[key] = node
    return json.dumps(out, sort_keys=True)


def job_resources(stage):
    """Resources of a `stage` job (prepare, hha, train, evaluate) from params.yaml `resources` (preset applied), in the
    names the SLURM executor plugin reads: mem_mb (--mem, MiB), runtime (-t, minutes), cpus_per_task
    (--cpus-per-task) and gpu (--gpus, left out when the stage asks for 0 GPUs so no GPU is requested).
    Local runs ignore them except threads, which the rules take from cpus_per_task."""
    res = CFG["resources"][stage]
    out = {"mem_mb": res["mem_mb"], "runtime": res["runtime"], "cpus_per_task": res["cpus_per_task"]}
    if res["gpus"] > 0:
        out["gpu"] = res["gpus"]
    return out
