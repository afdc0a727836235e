# What the generated rules (data.smk, train.smk, evaluate.smk, report.smk) read: the effective parameters of the
# active preset, resolved by the same code the stage commands use, the lists their wildcards run over, and the two
# helpers of their `params` and `resources`.
import json
import re

from primkd.config import effective_params, resolve
from primkd.stages import MODALITIES, value_at

CFG = resolve(config)
PRESET = CFG["preset"]
EFFECTIVE = effective_params(CFG)
EXPERIMENTS = list(CFG["experiments"])
SEEDS = list(CFG["seeds"])
MAIN_MODELS = ["teacher_rgb", "cmx", "primkd"]


wildcard_constraints:
    preset=PRESET,
    modality="|".join(MODALITIES),
    exp="|".join(map(re.escape, EXPERIMENTS)),
    seed="|".join(map(str, SEEDS)),


def effective(wildcards, keys):
    """The effective values of the keys a job reads (`{exp}`: its experiment), as JSON, so that Snakemake reruns a job
    when (and only when) one of them changes, as DVC does with its params. EFFECTIVE is computed when the Snakefile
    is read, so its `inputs` digests (ImageNet weights, a folder source) are current on every run."""
    item = dict(wildcards.items())
    return json.dumps({k: value_at(EFFECTIVE, k.format(**item)) for k in keys}, sort_keys=True)


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
