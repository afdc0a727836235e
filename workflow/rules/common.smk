# What the generated rules (data.smk, train.smk, evaluate.smk, report.smk) read: the effective parameters of the
# active preset, resolved by the same code the stage commands use, the lists their wildcards run over, and the two
# helpers of their `params` (effective, outputs_token) and `resources`.
import json
import os
import re
import time
from pathlib import Path

from primkd.config import effective_params, resolve
from primkd import stages as ST
from primkd.io import OutputRecords
from primkd.stages import MODALITIES, value_at

CFG = resolve(config)
PRESET = CFG["preset"]
EFFECTIVE = effective_params(CFG)
EXPERIMENTS = list(CFG["experiments"])
SEEDS = list(CFG["seeds"])
MAIN_MODELS = ["teacher_rgb", "cmx", "primkd"]

# Stages whose outputs are committed (the pretrain stage): up to date when the digests their summary records are the
# current code's, parameters' and outputs' (primkd.stages.shipped), whatever the file times of a fresh clone.
SHIPPED = {s.name: ST.shipped_state(s, EFFECTIVE) for s in ST.STAGES if s.shipped}
# An out-of-date one gets an input written now (shipped_outdated): newer than its outputs and with new contents, the
# two things Snakemake looks at (a missing input that a rule could make would rerun nothing while the outputs exist).
if workflow.is_main_process:
    for name, state in SHIPPED.items():
        if not state.current:
            flag = Path(f".snakemake/primkd-shipped/{name}.outdated")
            flag.parent.mkdir(parents=True, exist_ok=True)
            flag.write_text(f"{state.key} {state.why} {time.time_ns()}\n")
            newest = max([time.time(), *(Path(o.path).stat().st_mtime + 1 for o in ST.stage(name).outs
                                         if Path(o.path).exists())])
            os.utime(flag, (newest, newest))
# The pretrain stage's encoder, when model.pretrained names it (the demo), else None. The trainings then depend on
# it as a file (pretrained_input) and, as parameter, on the digest of the code and parameters it is made from: the
# same before and after the stage reruns, so that a rerun of pretrain reruns them once (its file digest, computed
# when the Snakefile is read, is the old file's until the next read).
PRETRAINED = ST.PRETRAINED if Path(CFG["model"]["pretrained"]) == Path(ST.PRETRAINED) else None
if PRETRAINED:
    EFFECTIVE["inputs"]["pretrained"] = f"pretrain:{SHIPPED['pretrain'].key}"

# Content, not time: an output edited in place (an image in a folder output) or replaced by an older file (a teacher
# model.pt) gets a new `outputs` parameter (outputs_token), so its job and everything after it rerun, as in DVC.
RECORDS = OutputRecords(".snakemake/primkd-outputs.json")
if workflow.is_main_process:
    RECORDS.changed(ST.fill(o.path, PRESET, s, i) for s in ST.STAGES for i in ST.loop_items(s, CFG) for o in s.outs)
    workflow.onsuccess(lambda log: RECORDS.record_rewritten())
    workflow.onerror(lambda log: RECORDS.record_rewritten())


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


def outputs_token(wildcards, paths):
    """A job's `outputs` parameter: a token that changes when one of its outputs was changed by someone else since
    the pipeline wrote it (primkd.io.OutputRecords), so Snakemake reruns the job as DVC restores a modified output."""
    item = dict(wildcards.items())
    return RECORDS.token(p.format(**item) for p in paths)


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


def pretrained_input(wildcards):
    """The pretrain stage's encoder as an input of a training job, when model.pretrained names it."""
    return [PRETRAINED] if PRETRAINED else []


def shipped_outdated(stage):
    """Nothing while the committed outputs of `stage` are up to date; else the flag file written above (newer than
    the outputs), so that the job runs."""
    return [] if SHIPPED[stage].current else [f".snakemake/primkd-shipped/{stage}.outdated"]

